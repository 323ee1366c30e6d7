#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Whole-file reads and atomic whole-file writes inside one directory. */

int fileio_write_atomic(const char *dir, const char *name, const void *buf, size_t len);
int fileio_write_atomic_mode(const char *dir, const char *name, const void *buf, size_t len,
			     mode_t mode);
int fileio_read(const char *dir, const char *name, size_t max, uint8_t **ret_buf,
		size_t *ret_len);
int fileio_unlink(const char *dir, const char *name);
