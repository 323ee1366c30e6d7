#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

/*
 * fsync the directory dir, so that a rename or unlink in it is durable.
 * Returns 0 or a negative errno.
 */
int fsutil_fsync_dir(const char *dir)
{
	int fd;
	int r = 0;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	(void)close(fd);

	return r;
}

/*
 * Replace path with buf atomically (fileio_write_atomic_mode() in path's
 * directory): after a crash path holds either the old or the new content,
 * never a mix.  Returns 0 or a negative errno (-ENOSPC, -EACCES, ...).
 */
int fsutil_write_atomic(const char *path, const void *buf, size_t len, mode_t mode)
{
	char dir[PATH_MAX];
	char name[PATH_MAX];

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	snprintf(name, sizeof(name), "%s", path);

	return fileio_write_atomic_mode(dirname(dir), basename(name), buf, len, mode);
}

/*
 * Read a whole file of at most max bytes into a NUL-terminated malloc'd
 * buffer.  Returns 0, -EFBIG when it is larger, or another negative errno.
 */
int fsutil_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
	char *buf;
	size_t len = 0;
	int fd;
	int r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(max + 1);
	if (!buf) {
		(void)close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, max + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			r = -EFBIG;
			break;
		}
	}
	(void)close(fd);
	if (r < 0) {
		free(buf);
		return r;
	}
	buf[len] = '\0';
	*ret_buf = buf;
	if (ret_len)
		*ret_len = len;

	return 0;
}

/* mkdir that accepts an existing directory.  Returns 0 or a negative errno. */
int fsutil_mkdir(const char *path, mode_t mode)
{
	struct stat st;

	if (mkdir(path, mode) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	if (stat(path, &st) < 0)
		return -errno;

	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int rm_rf_at(int dfd, const char *name)
{
	DIR *d;
	struct dirent *de;
	int fd;
	int r = 0;

	if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		(void)close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		r = rm_rf_at(dirfd(d), de->d_name);
		if (r < 0)
			break;
	}
	closedir(d);
	if (r == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = -errno;

	return r;
}

/*
 * Remove path and everything below it, never following symbolic links.
 * A missing path is not an error.  Returns 0 or a negative errno.
 */
int fsutil_rm_rf(const char *path)
{
	return rm_rf_at(AT_FDCWD, path);
}
