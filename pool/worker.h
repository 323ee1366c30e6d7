#pragma once

#include <stdbool.h>

/* The serve mode of the instance process. */

int worker_serve(const char *dir, bool with_volatile, int fd);
