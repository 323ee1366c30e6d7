#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int fileio_write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}

	return 0;
}

static int fileio_write_tmp(int dfd, const char *tmp, const void *buf, size_t len,
			    mode_t mode)
{
	int fd;
	int r;

	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;

	r = fileio_write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;

	return r;
}

/*
 * Replace dir/name with buf, atomically: a temporary file in the same
 * directory is written and fsynced, renamed over name, and the directory is
 * fsynced, so that after a crash the file holds either the old or the new
 * content.  The file gets mode (before the umask).  Returns 0, or a
 * negative errno from the file system.  Runs in any context; it blocks on
 * disk I/O.
 */
int fileio_write_atomic_mode(const char *dir, const char *name, const void *buf, size_t len,
			     mode_t mode)
{
	char tmp[256];
	int dfd;
	int r;

	r = snprintf(tmp, sizeof(tmp), ".%s.tmp.%ld", name, (long)getpid());
	if (r < 0 || (size_t)r >= sizeof(tmp))
		return -ENAMETOOLONG;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;

	r = fileio_write_tmp(dfd, tmp, buf, len, mode);
	if (r < 0)
		goto err_unlink;

	if (renameat(dfd, tmp, dfd, name) < 0) {
		r = -errno;
		goto err_unlink;
	}

	if (fsync(dfd) < 0)
		r = -errno;
	(void)close(dfd);

	return r;

err_unlink:
	(void)unlinkat(dfd, tmp, 0);
	(void)close(dfd);
	return r;
}

/* fileio_write_atomic_mode() with mode 0600, for everything an instance keeps. */
int fileio_write_atomic(const char *dir, const char *name, const void *buf, size_t len)
{
	return fileio_write_atomic_mode(dir, name, buf, len, 0600);
}

/* Read exactly size bytes; one byte more means the file grew under us. */
static int fileio_read_fd(int fd, uint8_t *buf, size_t size)
{
	size_t len = 0;

	while (len <= size) {
		ssize_t n = read(fd, buf + len, size + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
	}

	/* Writers replace files, never change them in place. */
	return len == size ? 0 : -EIO;
}

/*
 * Read the whole of dir/name into a new buffer of at most max bytes, which
 * the caller frees.  An absolute name ignores dir.  Returns 0, -ENOENT when
 * the file does not exist, -EFBIG when it is larger than max, -EINVAL when
 * it is not a regular file, -ENOMEM, or another negative errno.
 */
int fileio_read(const char *dir, const char *name, size_t max, uint8_t **ret_buf,
		size_t *ret_len)
{
	struct stat st;
	uint8_t *buf;
	int dfd;
	int fd;
	int r;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	r = -errno;
	(void)close(dfd);
	if (fd < 0)
		return r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		r = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
		goto out_close;
	}

	buf = malloc((size_t)st.st_size + 1);
	r = buf ? fileio_read_fd(fd, buf, (size_t)st.st_size) : -ENOMEM;
	if (r < 0) {
		free(buf);
		goto out_close;
	}
	*ret_buf = buf;
	*ret_len = (size_t)st.st_size;

out_close:
	(void)close(fd);
	return r;
}

/*
 * Remove dir/name and fsync the directory.  A missing file is not an error.
 * Returns 0 or a negative errno.
 */
int fileio_unlink(const char *dir, const char *name)
{
	int dfd;
	int r = 0;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;

	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		r = -errno;
	else if (fsync(dfd) < 0)
		r = -errno;
	(void)close(dfd);

	return r;
}
