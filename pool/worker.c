#include "worker.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "fileio.h"
#include "ilog.h"
#include "internal.h"
#include "ipc.h"
#include "manufacture.h"

/* The volatile state is about 9 KB; anything far larger is not ours. */
#define WORKER_VOLATILE_MAX (1024 * 1024)

struct worker {
	const char *dir;
	int fd;			/* the socketpair end, fd 3 */
	struct engine *engine;
	bool started;		/* TPM2_Startup done */
	uint8_t buf[IPC_PAYLOAD_MAX];
	uint8_t rsp[4096];
};

static int worker_reply(struct worker *w, int status, uint32_t rc)
{
	struct ipc_status st = { .status = status, .rc = rc };

	return ipc_send_status(w->fd, IPC_STATUS, &st);
}

static int worker_load(struct worker *w, bool with_volatile)
{
	uint8_t *vol = NULL;
	size_t vol_len = 0;
	int r;

	if (with_volatile) {
		r = fileio_read(w->dir, POOL_FILE_VOLATILE, WORKER_VOLATILE_MAX, &vol, &vol_len);
		if (r < 0) {
			ilog(LOG_ERR, "load volatile failed err=\"%s\"", strerror(-r));
			return r;
		}
	}

	r = engine_start(w->dir, vol, vol_len, false, &w->engine);
	free(vol);
	if (r < 0) {
		ilog(LOG_ERR, "load state failed err=\"%s\"", strerror(-r));
		return r;
	}
	w->started = with_volatile;

	return 0;
}

/* A TPM about to serve tests its algorithms first (see manufacture_self_test()). */
static int worker_self_test(struct worker *w, uint32_t *ret_rc)
{
	int r;

	r = manufacture_self_test(w->engine, ret_rc);
	if (r < 0)
		ilog(LOG_ERR, "self test failed rc=0x%x err=\"%s\"", *ret_rc, strerror(-r));

	return r;
}

static int worker_cmd(struct worker *w, size_t len)
{
	size_t rsp_len;
	int r;

	r = engine_process(w->engine, w->buf[0], w->buf + 1, len - 1, w->rsp, sizeof(w->rsp),
			   &rsp_len);
	if (r < 0)
		return worker_reply(w, r, 0);

	return ipc_send(w->fd, IPC_RSP, w->rsp, rsp_len, NULL, 0);
}

static int worker_startup(struct worker *w)
{
	uint32_t rc;
	int r;

	/* ESYS takes TPM_RC_INITIALIZE as success: refuse a second Startup here. */
	if (w->started)
		return worker_reply(w, -EALREADY, 0);
	r = manufacture_startup(w->engine, &rc);
	if (r == 0) {
		w->started = true;
		r = worker_self_test(w, &rc);
	} else {
		ilog(LOG_ERR, "startup failed rc=0x%x err=\"%s\"", rc, strerror(-r));
	}

	return worker_reply(w, r, rc);
}

/*
 * Handle one well-framed message.  Returns 0 to go on, 1 after TERMINATE,
 * -EBADMSG for a message that breaks the protocol, or a transport errno.
 */
static int worker_dispatch(struct worker *w, uint32_t type, size_t len)
{
	if (type == IPC_CMD)
		return len >= 1 ? worker_cmd(w, len) : -EBADMSG;
	if (len != 0)
		return -EBADMSG;

	switch (type) {
	case IPC_STARTUP:
		return worker_startup(w);
	case IPC_DROP_VOLATILE:
		return worker_reply(w, fileio_unlink(w->dir, POOL_FILE_VOLATILE), 0);
	case IPC_SAVE_VOLATILE:
		/* A state saved before Startup would later load as if started. */
		if (!w->started)
			return worker_reply(w, -EINVAL, 0);
		return worker_reply(w, engine_save_volatile(w->engine), 0);
	case IPC_TERMINATE:
		engine_stop(w->engine);
		w->engine = NULL;
		(void)worker_reply(w, 0, 0);
		return 1;
	default:
		return -EBADMSG;
	}
}

static int worker_loop(struct worker *w)
{
	uint32_t type;
	size_t len;
	int r;

	for (;;) {
		r = ipc_recv(w->fd, &type, w->buf, sizeof(w->buf), &len);
		if (r == 0)
			r = worker_dispatch(w, type, len);
		if (r == 1 || r == -EPIPE)
			return 0;
		if (r == -EBADMSG || r == -EMSGSIZE) {
			/* Fatal, but the parent hears why first. */
			ilog(LOG_ERR, "bad frame err=\"%s\"", strerror(-r));
			(void)worker_reply(w, r, 0);
			return r;
		}
		if (r < 0) {
			ilog(LOG_ERR, "ipc failed err=\"%s\"", strerror(-r));
			return r;
		}
	}
}

/*
 * Serve the TPM whose state is in dir over the socket fd until the socket
 * closes or TERMINATE arrives.  With with_volatile the saved volatile state
 * is loaded too, so that the TPM resumes after TPM2_Startup.  Announces
 * itself with IPC_READY (carrying the load error, if any).  Returns 0 on an
 * orderly end, or a negative errno.  Instance process.
 */
int worker_serve(const char *dir, bool with_volatile, int fd)
{
	struct ipc_status ready = { 0 };
	struct worker *w;
	int r;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->dir = dir;
	w->fd = fd;

	r = worker_load(w, with_volatile);
	if (r == 0 && w->started)
		r = worker_self_test(w, &ready.rc);
	ready.status = r;
	ready.flags = w->started ? IPC_READY_STARTED : 0;
	if (ipc_send_status(fd, IPC_READY, &ready) == 0 && r == 0) {
		ilog(LOG_INFO, "serving %s pid=%ld", w->started ? "resumed" : "unstarted",
			   (long)getpid());
		r = worker_loop(w);
	}
	engine_stop(w->engine);
	free(w);

	return r;
}
