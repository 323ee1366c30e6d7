#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * The FUSE endpoint: a mount with the device files "tpm0" (exclusive) and
 * "tpmrm0" (many opens), and a read-only "status" file.  It checks the
 * framing of each write against the kernel's TPM device rules and hands
 * complete commands to the callbacks it is given; it decides nothing else.
 */

struct fusedev;
struct fusedev_file;

enum {
	FUSEDEV_BUF_SIZE = 4096,	/* the kernel's TPM_BUFSIZE */
	FUSEDEV_HEADER_SIZE = 10,	/* tag, size, code or rc */
};

enum fusedev_kind {
	FUSEDEV_TPM0,
	FUSEDEV_TPMRM0,
};

struct fusedev_ops {
	/*
	 * A device file was opened.  Return 0 or a negative errno for open(2).
	 * Runs on a FUSE thread.
	 */
	int (*open)(void *userdata, struct fusedev_file *f);
	/*
	 * One complete, framing-checked command.  Return 0 and answer (from
	 * any thread, even this one before returning) with
	 * fusedev_file_complete() or fusedev_file_fail(), or a negative errno
	 * that write(2) returns (and then do not answer).  It may block only
	 * briefly, and only for tpm0: write(2) returns when it does.
	 */
	int (*submit)(void *userdata, struct fusedev_file *f,
		      const uint8_t *cmd, size_t len);
	/*
	 * The last reference from user space is gone (close, exit, SIGKILL).
	 * A command still queued for it may complete later; that is harmless.
	 */
	void (*release)(void *userdata, struct fusedev_file *f);
	/* Optional: body of the status file, malloc'd; the caller frees it. */
	int (*status)(void *userdata, char **ret_buf, size_t *ret_len);
	/* Optional: one log line from the endpoint (prio as syslog's). */
	void (*log)(void *userdata, int prio, const char *msg);
	/*
	 * Optional: the mount went away without fusedev_stop() (unmounted
	 * from outside, or the connection aborted).  Once, from a FUSE thread;
	 * the caller still calls fusedev_stop().
	 */
	void (*ended)(void *userdata);
};

struct fusedev_config {
	const char *mountpoint;
	bool allow_other;
	uid_t uid;		/* owner of the device files */
	gid_t gid;
	mode_t mode;		/* permission bits of the device files */
	bool debug;		/* libfuse's request trace, per-request logs */
};

int fusedev_start(const struct fusedev_config *c, const struct fusedev_ops *ops,
		  void *userdata, struct fusedev **ret);
void fusedev_stop(struct fusedev *d);
int fusedev_framing_check(const uint8_t *buf, size_t len);

void fusedev_file_yield(struct fusedev_file *f);
void fusedev_file_complete(struct fusedev_file *f, const uint8_t *rsp,
			   size_t len);
void fusedev_file_fail(struct fusedev_file *f, int err);
enum fusedev_kind fusedev_file_kind(const struct fusedev_file *f);
uint64_t fusedev_file_id(const struct fusedev_file *f);
void fusedev_file_set_data(struct fusedev_file *f, void *data);
void *fusedev_file_get_data(const struct fusedev_file *f);
void fusedev_file_get(struct fusedev_file *f);
void fusedev_file_put(struct fusedev_file *f);
