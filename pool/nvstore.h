#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * libtpms' NV and I/O callbacks for the instance process: libtpms' named
 * blobs become files in the instance directory.  Worker side only.
 */

int nvstore_register(const char *dir);
void nvstore_set_locality(uint8_t locality);
void nvstore_defer(bool on);
