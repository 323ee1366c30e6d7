#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Small durable-file helpers shared by the pool and the daemon. */

int fsutil_write_atomic(const char *path, const void *buf, size_t len, mode_t mode);
int fsutil_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len);
int fsutil_fsync_dir(const char *dir);
int fsutil_rm_rf(const char *path);
int fsutil_mkdir(const char *path, mode_t mode);
