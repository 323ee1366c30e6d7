/*
 * vtpmd-echofs: the FUSE floor of scripts/bench, served by one thread with
 * libfuse's low-level API: what any FUSE device costs before it does
 * anything.  Two files:
 *
 *   echo   a read returns what the last write put there
 *   tpm    a read returns a canned TPM2_GetRandom(16) response to whatever
 *          was written, in parts when the reader asks for parts, so that
 *          tpm2-tss' device TCTI and ESYS can run GetRandom against it
 *
 *   vtpmd-echofs MOUNTPOINT        (foreground; SIGTERM unmounts)
 */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

#define ECHO_INO 2
#define ECHO_INO_TPM 3
#define ECHO_BUF 4096

struct echo {
	uint8_t buf[ECHO_BUF];
	size_t off;		/* next unread byte */
	size_t len;		/* unread bytes from off */
};

/* TPM_ST_NO_SESSIONS, 28 bytes, TPM_RC_SUCCESS, a TPM2B of 16 bytes */
static const uint8_t echo_getrandom_rsp[28] = {
	0x80, 0x01, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
	0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
	0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
};

static void echo_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_nlink = 1;
	st->st_mode = ino == FUSE_ROOT_ID ? S_IFDIR | 0755 : S_IFREG | 0600;
}

static void echo_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	if (parent == FUSE_ROOT_ID && strcmp(name, "echo") == 0)
		e.ino = ECHO_INO;
	else if (parent == FUSE_ROOT_ID && strcmp(name, "tpm") == 0)
		e.ino = ECHO_INO_TPM;
	if (!e.ino) {
		(void)fuse_reply_err(req, ENOENT);
		return;
	}
	e.attr_timeout = 1.0;
	e.entry_timeout = 1.0;
	echo_stat(e.ino, &e.attr);
	(void)fuse_reply_entry(req, &e);
}

static void echo_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	echo_stat(ino, &st);
	(void)fuse_reply_attr(req, &st, 1.0);
}

static void echo_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fi->direct_io = 1;
	fi->nonseekable = 1;
	(void)fuse_reply_open(req, fi);
}

static void echo_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	struct echo *e = fuse_req_userdata(req);

	if (size > ECHO_BUF) {
		(void)fuse_reply_err(req, E2BIG);
		return;
	}
	if (ino == ECHO_INO_TPM) {
		memcpy(e->buf, echo_getrandom_rsp, sizeof(echo_getrandom_rsp));
		e->len = sizeof(echo_getrandom_rsp);
	} else {
		memcpy(e->buf, buf, size);
		e->len = size;
	}
	e->off = 0;
	(void)fuse_reply_write(req, size);
}

static void echo_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	struct echo *e = fuse_req_userdata(req);
	size_t n = size < e->len ? size : e->len;

	(void)fuse_reply_buf(req, (const char *)e->buf + e->off, n);
	e->off += n;
	e->len -= n;
}

static void echo_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		      struct fuse_pollhandle *ph)
{
	struct echo *e = fuse_req_userdata(req);

	if (ph)
		fuse_pollhandle_destroy(ph);
	(void)fuse_reply_poll(req, e->len ? POLLIN : POLLOUT);
}

static const struct fuse_lowlevel_ops echo_ops = {
	.lookup = echo_lookup,
	.getattr = echo_getattr,
	.open = echo_open,
	.read = echo_read,
	.write = echo_write,
	.poll = echo_poll,
};

int main(int argc, char **argv)
{
	char *fargv[] = { argv[0], "-o", "fsname=vtpmd-echo,subtype=vtpmd-echo" };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se;
	struct echo e = { .len = 0 };
	int r = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: vtpmd-echofs MOUNTPOINT\n");
		return 2;
	}
	se = fuse_session_new(&args, &echo_ops, sizeof(echo_ops), &e);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) == 0) {
		if (fuse_session_mount(se, argv[1]) == 0) {
			r = fuse_session_loop(se) < 0;
			fuse_session_unmount(se);
		}
		fuse_remove_signal_handlers(se);
	}
	fuse_session_destroy(se);

	return r;
}
