#define FUSE_USE_VERSION 35

#include "fusedev.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

/*
 * Locking.  Two mutexes: fusedev.lock (the list of files, tpm0's owner, file
 * ids) and fusedev_file.lock (one open file's command and response state).
 * Whoever takes both takes fusedev.lock first.  libfuse calls the read
 * interrupt callback with its own request lock held, and that callback
 * takes both of ours, so nothing here calls into libfuse in a way that
 * takes a request lock (fuse_req_interrupt_func) while holding ours.
 * Replies and poll notifications are only writes to /dev/fuse and may be
 * made with our locks held.
 */

enum {
	FUSEDEV_INO_ROOT = FUSE_ROOT_ID,
	FUSEDEV_INO_TPM0,
	FUSEDEV_INO_TPMRM0,
	FUSEDEV_INO_STATUS,
};

#define FUSEDEV_ATTR_TIMEOUT 1.0
/*
 * Workers for /dev/fuse, of which one at a time reads (see worker_main()):
 * one may wait in a tpm0 command run inline, one for a tpm0 release, and
 * one serves the rest.
 */
#define FUSEDEV_WORKERS 3
#define FUSEDEV_CLOSE_WAIT_MS 1000	/* see tpm0_claim() */

struct fusedev_file {
	struct fusedev *d;		/* holds a reference on d */
	struct fusedev_file *prev;	/* in d->files; protected by d->lock */
	struct fusedev_file *next;	/* protected by d->lock */
	bool closing;			/* a close(2) was seen; protected by d->lock */
	bool swept;			/* fusedev_stop() did it; protected by d->lock */
	enum fusedev_kind kind;
	uint64_t id;
	void *data;			/* the daemon's; not locked here */
	atomic_uint refs;
	pthread_mutex_t lock;
	bool released;			/* protected by lock, as all below */
	bool detached;			/* the session is going: no more replies */
	bool in_flight;			/* submitted, holds a reference */
	bool rsp_read;			/* a part of the response was read */
	int rsp_err;			/* negative errno for the next read, or 0 */
	size_t rsp_off;			/* next unread byte of rsp */
	size_t rsp_len;			/* unread bytes from rsp_off */
	fuse_req_t parked;		/* a read waiting for the response */
	size_t parked_size;
	struct fuse_pollhandle *ph;	/* latest, owned */
	uint32_t poll_events;		/* what the latest poll asked for */
	uint8_t rsp[FUSEDEV_BUF_SIZE];
};

/* One open of the status file: its snapshot. */
struct fusedev_status {
	struct fusedev_status *prev;	/* in d->statuses; protected by d->lock */
	struct fusedev_status *next;	/* protected by d->lock */
	char *buf;
	size_t len;
};

struct fusedev {
	atomic_uint refs;		/* the owner's, and one per file */
	atomic_bool stopping;
	struct fuse_session *se;
	pthread_t workers[FUSEDEV_WORKERS];
	unsigned int nworkers;
	pthread_mutex_t reader_lock;
	pthread_cond_t reader_free;	/* has_reader false again; with reader_lock */
	bool has_reader;		/* a worker holds the reader role; reader_lock */
	pthread_t reader;		/* that worker; reader_lock */
	atomic_bool ended;		/* the session ended by itself */
	struct fusedev_ops ops;
	void *userdata;
	char *mountpoint;
	uid_t uid;
	gid_t gid;
	mode_t mode;
	bool debug;
	struct timespec start_time;
	pthread_mutex_t lock;
	pthread_cond_t tpm0_free;	/* tpm0 == NULL again; with lock */
	struct fusedev_file *files;	/* protected by lock */
	struct fusedev_status *statuses;	/* open ones; protected by lock */
	struct fusedev_file *tpm0;	/* its open file; protected by lock */
	bool tpm0_waiting;		/* a tpm0_wait() runs; protected by lock */
	uint64_t next_id;		/* protected by lock */
};

__attribute__((format(printf, 3, 4)))
static void fusedev_log(struct fusedev *d, int prio, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int saved_errno = errno;

	if (!d->ops.log || (prio == LOG_DEBUG && !d->debug))
		return;
	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	d->ops.log(d->userdata, prio, msg);
	errno = saved_errno;
}

static const char *kind_name(enum fusedev_kind kind)
{
	return kind == FUSEDEV_TPM0 ? "tpm0" : "tpmrm0";
}

static void dev_put(struct fusedev *d)
{
	if (atomic_fetch_sub(&d->refs, 1) != 1)
		return;
	pthread_cond_destroy(&d->tpm0_free);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->reader_free);
	pthread_mutex_destroy(&d->reader_lock);
	free(d->mountpoint);
	free(d);
}

/*
 * Take a reference on f.  The caller must already hold one (its own, or
 * the one fusedev gave it through a callback).  Any thread.
 */
void fusedev_file_get(struct fusedev_file *f)
{
	atomic_fetch_add(&f->refs, 1);
}

static void file_free(struct fusedev_file *f)
{
	struct fusedev *d = f->d;

	pthread_mutex_lock(&d->lock);
	if (f->prev)
		f->prev->next = f->next;
	else
		d->files = f->next;
	if (f->next)
		f->next->prev = f->prev;
	pthread_mutex_unlock(&d->lock);
	if (f->ph)
		fuse_pollhandle_destroy(f->ph);
	pthread_mutex_destroy(&f->lock);
	free(f);
	dev_put(d);
}

/*
 * Drop a reference on f; the last one frees it (and may free what is left
 * of a stopped fusedev).  NULL is a no-op.  Any thread, no fusedev lock
 * held.
 */
void fusedev_file_put(struct fusedev_file *f)
{
	if (!f)
		return;
	if (atomic_fetch_sub(&f->refs, 1) == 1)
		file_free(f);
}

/* Kind of the open file (tpm0 or tpmrm0).  Any thread. */
enum fusedev_kind fusedev_file_kind(const struct fusedev_file *f)
{
	return f->kind;
}

/* Id of the open file, unique within one fusedev, never 0.  Any thread. */
uint64_t fusedev_file_id(const struct fusedev_file *f)
{
	return f->id;
}

/*
 * Attach the daemon's data to f; fusedev never looks at it.  Not locked:
 * the daemon sets it in ops->open, before any other callback for f.
 */
void fusedev_file_set_data(struct fusedev_file *f, void *data)
{
	f->data = data;
}

/* The daemon's data attached to f, or NULL.  Any thread. */
void *fusedev_file_get_data(const struct fusedev_file *f)
{
	return f->data;
}

/* A new open file, in d's list, with the open's reference.  NULL: ENOMEM. */
static struct fusedev_file *file_new(struct fusedev *d, enum fusedev_kind kind)
{
	struct fusedev_file *f;

	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->d = d;
	f->kind = kind;
	atomic_init(&f->refs, 1);
	pthread_mutex_init(&f->lock, NULL);
	atomic_fetch_add(&d->refs, 1);

	pthread_mutex_lock(&d->lock);
	f->id = ++d->next_id;
	f->next = d->files;
	if (d->files)
		d->files->prev = f;
	d->files = f;
	pthread_mutex_unlock(&d->lock);

	return f;
}

/*
 * Wake whoever polls f for what it now reports, as the kernel's device
 * does at every change (an edge-triggered epoll asks again only after a
 * notification).  An answer made inside write(2) is notified at once too,
 * before the write is answered: then no poll of the client's is under
 * way, which the notification would make the kernel send again.  With
 * f->lock held.
 */
static void file_notify(struct fusedev_file *f)
{
	if (f->ph && !f->detached)
		(void)fuse_lowlevel_notify_poll(f->ph);
}

/*
 * Answer the parked read with the response (or its first part, keeping
 * the rest), or store the response for the next read.  With f->lock held.
 */
static void file_deliver(struct fusedev_file *f, const uint8_t *rsp,
			 size_t len)
{
	size_t n = 0;
	fuse_req_t req = f->parked;

	if (req) {
		f->parked = NULL;
		n = len < f->parked_size ? len : f->parked_size;
		(void)fuse_reply_buf(req, (const char *)rsp, n);
	}
	if (len > n)
		memcpy(f->rsp, rsp + n, len - n);
	f->rsp_off = 0;
	f->rsp_len = len - n;
	f->rsp_read = req != NULL;
	if (f->rsp_len)
		file_notify(f);
}

/*
 * Finish the command in flight on f with a response (rsp != NULL) or an
 * error for the next read (err < 0).  Drops the submit's reference.
 */
static void file_finish(struct fusedev_file *f, const uint8_t *rsp,
			size_t len, int err)
{
	pthread_mutex_lock(&f->lock);
	if (!f->in_flight) {
		/* stopped (fusedev_stop() dropped the reference) or a bug */
		pthread_mutex_unlock(&f->lock);
		return;
	}
	f->in_flight = false;
	if (f->released || f->detached) {
		/* nobody can read it any more */
	} else if (err < 0 && f->parked) {
		(void)fuse_reply_err(f->parked, -err);
		f->parked = NULL;
	} else if (err < 0) {
		f->rsp_err = err;
		file_notify(f);
	} else {
		file_deliver(f, rsp, len);
	}
	pthread_mutex_unlock(&f->lock);

	fusedev_file_put(f);
}

/*
 * Hand the response to the command submitted on f: a parked read gets it
 * now, otherwise it waits for the next read and pollers see POLLIN.  rsp
 * stays the caller's.  A response longer than FUSEDEV_BUF_SIZE is not
 * delivered: the next read fails with EIO.  Drops the reference that the
 * submit held, so the caller needs a reference of its own if it touches f
 * afterwards; after release (or fusedev_stop()) the response is dropped.
 * Any thread, never blocks on clients.
 */
void fusedev_file_complete(struct fusedev_file *f, const uint8_t *rsp,
			   size_t len)
{
	if (len > FUSEDEV_BUF_SIZE) {
		fusedev_log(f->d, LOG_ERR,
			    "fuse: response too long fd=%llu len=%zu",
			    (unsigned long long)f->id, len);
		file_finish(f, NULL, 0, -EIO);
		return;
	}
	file_finish(f, rsp, len, 0);
}

/*
 * Finish the command submitted on f with an error instead of a response:
 * the next read(2) returns err (a negative errno such as -EPIPE), as the
 * kernel does for a command that failed in O_NONBLOCK mode.  Drops the
 * submit's reference, like fusedev_file_complete().  Any thread.
 */
void fusedev_file_fail(struct fusedev_file *f, int err)
{
	file_finish(f, NULL, 0, err < 0 ? err : -EIO);
}

static void stat_fill(struct fusedev *d, fuse_ino_t ino, size_t size,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_nlink = 1;
	st->st_uid = d->uid;
	st->st_gid = d->gid;
	st->st_mode = S_IFREG | (d->mode & 0777);
	st->st_blksize = FUSEDEV_BUF_SIZE;
	st->st_atim = d->start_time;
	st->st_mtim = d->start_time;
	st->st_ctim = d->start_time;
	if (ino == FUSEDEV_INO_ROOT) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		st->st_uid = 0;
		st->st_gid = 0;
	} else if (ino == FUSEDEV_INO_STATUS) {
		st->st_mode = S_IFREG | 0444;
		st->st_uid = 0;
		st->st_gid = 0;
		st->st_size = size;
	}
}

static void reader_yield(struct fusedev *d);

/*
 * A fresh status.  The owner's callback may wait (for the pool's lock,
 * held across disk work), so the calling worker lets another read
 * requests first: a status read must not hold up the TPM clients.
 */
static int status_snapshot(struct fusedev *d, char **ret_buf, size_t *ret_len)
{
	if (!d->ops.status) {
		*ret_buf = NULL;
		*ret_len = 0;
		return 0;
	}
	reader_yield(d);

	return d->ops.status(d->userdata, ret_buf, ret_len);
}

/* Attributes of ino; the status file's size is that of a fresh snapshot. */
static int attr_get(struct fusedev *d, fuse_ino_t ino, struct stat *st)
{
	char *buf = NULL;
	size_t len = 0;
	int r;

	if (ino < FUSEDEV_INO_ROOT || ino > FUSEDEV_INO_STATUS)
		return -ENOENT;
	if (ino == FUSEDEV_INO_STATUS) {
		r = status_snapshot(d, &buf, &len);
		if (r < 0)
			return r;
		free(buf);
	}
	stat_fill(d, ino, len, st);

	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fuse_entry_param e;
	fuse_ino_t ino = 0;
	int r;

	if (parent != FUSEDEV_INO_ROOT)
		ino = 0;
	else if (!strcmp(name, "tpm0"))
		ino = FUSEDEV_INO_TPM0;
	else if (!strcmp(name, "tpmrm0"))
		ino = FUSEDEV_INO_TPMRM0;
	else if (!strcmp(name, "status"))
		ino = FUSEDEV_INO_STATUS;
	memset(&e, 0, sizeof(e));
	r = ino ? attr_get(d, ino, &e.attr) : -ENOENT;
	if (r < 0) {
		(void)fuse_reply_err(req, -r);
		return;
	}
	e.ino = ino;
	e.attr_timeout = ino == FUSEDEV_INO_STATUS ? 0 : FUSEDEV_ATTR_TIMEOUT;
	e.entry_timeout = FUSEDEV_ATTR_TIMEOUT;
	(void)fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fusedev_status *s;
	struct stat st;
	int r = 0;

	if (ino == FUSEDEV_INO_STATUS && fi) {
		/* an open file: the size of its own snapshot */
		s = (struct fusedev_status *)(uintptr_t)fi->fh;
		stat_fill(d, ino, s->len, &st);
	} else {
		r = attr_get(d, ino, &st);
	}
	if (r < 0)
		(void)fuse_reply_err(req, -r);
	else
		(void)fuse_reply_attr(req, &st, ino == FUSEDEV_INO_STATUS ?
				      0 : FUSEDEV_ATTR_TIMEOUT);
}

/*
 * Only what O_TRUNC and touch(1) ask of the device files is accepted, and
 * ignored, as a character device would; ownership and modes come from the
 * configuration.
 */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	const int ignored = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME |
			    FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			    FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME;
	struct fusedev *d = fuse_req_userdata(req);
	struct stat st;
	int r;

	r = attr_get(d, ino, &st);
	if (r == 0 && ((to_set & ~ignored) ||
		       (ino != FUSEDEV_INO_TPM0 && ino != FUSEDEV_INO_TPMRM0)))
		r = -EPERM;
	if (r < 0)
		(void)fuse_reply_err(req, -r);
	else
		(void)fuse_reply_attr(req, &st, FUSEDEV_ATTR_TIMEOUT);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	static const struct {
		const char *name;
		fuse_ino_t ino;
	} ents[] = {
		{ ".", FUSEDEV_INO_ROOT },
		{ "..", FUSEDEV_INO_ROOT },
		{ "tpm0", FUSEDEV_INO_TPM0 },
		{ "tpmrm0", FUSEDEV_INO_TPMRM0 },
		{ "status", FUSEDEV_INO_STATUS },
	};
	struct fusedev *d = fuse_req_userdata(req);
	char buf[512];
	size_t pos = 0;
	size_t n;
	struct stat st;

	if (ino != FUSEDEV_INO_ROOT) {
		(void)fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (size > sizeof(buf))
		size = sizeof(buf);
	for (; off >= 0 && (size_t)off < sizeof(ents) / sizeof(ents[0]); off++) {
		/* readdir only needs the type and the inode number */
		stat_fill(d, ents[off].ino, 0, &st);
		n = fuse_add_direntry(req, buf + pos, size - pos,
				      ents[off].name, &st, off + 1);
		if (n > size - pos)
			break;
		pos += n;
	}
	(void)fuse_reply_buf(req, buf, pos);
}

static void status_link(struct fusedev *d, struct fusedev_status *s)
{
	pthread_mutex_lock(&d->lock);
	s->next = d->statuses;
	if (d->statuses)
		d->statuses->prev = s;
	d->statuses = s;
	pthread_mutex_unlock(&d->lock);
}

static void status_free(struct fusedev *d, struct fusedev_status *s)
{
	pthread_mutex_lock(&d->lock);
	if (s->prev)
		s->prev->next = s->next;
	else
		d->statuses = s->next;
	if (s->next)
		s->next->prev = s->prev;
	pthread_mutex_unlock(&d->lock);
	free(s->buf);
	free(s);
}

static void op_open_status(fuse_req_t req, struct fuse_file_info *fi)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fusedev_status *s;
	int r;

	/* root passes default_permissions' check, as for a 0444 sysfs file */
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		(void)fuse_reply_err(req, EACCES);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		(void)fuse_reply_err(req, ENOMEM);
		return;
	}
	r = status_snapshot(d, &s->buf, &s->len);
	if (r < 0) {
		fusedev_log(d, LOG_ERR, "fuse: status failed err=\"%s\"",
			    strerror(-r));
		free(s);
		(void)fuse_reply_err(req, -r);
		return;
	}
	status_link(d, s);
	fi->fh = (uintptr_t)s;
	fi->direct_io = 1;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) < 0)
		/* the opener was interrupted: no release will come */
		status_free(d, s);
}

static int tpm0_wait(struct fusedev *d)
{
	struct timespec ts;
	int r = 0;

	/* one waiting worker at most, so that others serve the release */
	if (d->tpm0_waiting || !d->tpm0->closing)
		return -EBUSY;
	d->tpm0_waiting = true;
	reader_yield(d);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += FUSEDEV_CLOSE_WAIT_MS / 1000;
	ts.tv_nsec += (FUSEDEV_CLOSE_WAIT_MS % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (d->tpm0 && d->tpm0->closing && r == 0 &&
	       !atomic_load(&d->stopping))
		r = pthread_cond_timedwait(&d->tpm0_free, &d->lock, &ts);
	d->tpm0_waiting = false;

	return d->tpm0 ? -EBUSY : 0;
}

/*
 * Make f the one open tpm0, or -EBUSY.  The kernel sends FUSE_RELEASE
 * asynchronously after the last close(2), and another FUSE thread may run
 * an open that follows it before the release, so "close; open" (which
 * tpm2-tss does when its partial-read probe fails) could see the old owner.
 * When the owner has been closed (FUSE_FLUSH seen), wait a bounded time
 * for its release rather than fail at once.
 */
static int tpm0_claim(struct fusedev *d, struct fusedev_file *f)
{
	int r = 0;

	pthread_mutex_lock(&d->lock);
	if (d->tpm0)
		r = tpm0_wait(d);
	if (r == 0)
		d->tpm0 = f;
	pthread_mutex_unlock(&d->lock);

	return r;
}

static void tpm0_unclaim(struct fusedev *d, struct fusedev_file *f)
{
	pthread_mutex_lock(&d->lock);
	if (d->tpm0 == f) {
		d->tpm0 = NULL;
		pthread_cond_broadcast(&d->tpm0_free);
	}
	pthread_mutex_unlock(&d->lock);
}

/* Release one open device file: the daemon's callback, then tpm0. */
static void file_release(struct fusedev_file *f)
{
	struct fusedev *d = f->d;

	pthread_mutex_lock(&f->lock);
	if (f->parked) {
		/* unreachable: the kernel holds the file while a read waits */
		(void)fuse_reply_err(f->parked, EINTR);
		f->parked = NULL;
	}
	f->released = true;
	f->rsp_len = 0;
	f->rsp_err = 0;
	pthread_mutex_unlock(&f->lock);

	d->ops.release(d->userdata, f);
	if (f->kind == FUSEDEV_TPM0)
		tpm0_unclaim(d, f);
}

static void op_open_device(fuse_req_t req, enum fusedev_kind kind,
			   struct fuse_file_info *fi)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fusedev_file *f;
	int r;

	if (atomic_load(&d->stopping)) {
		(void)fuse_reply_err(req, ENODEV);
		return;
	}
	f = file_new(d, kind);
	if (!f) {
		(void)fuse_reply_err(req, ENOMEM);
		return;
	}
	r = kind == FUSEDEV_TPM0 ? tpm0_claim(d, f) : 0;
	if (r == 0) {
		r = d->ops.open(d->userdata, f);
		if (r < 0 && kind == FUSEDEV_TPM0)
			tpm0_unclaim(d, f);
	}
	if (r < 0) {
		/* tpm0 busy is the client's business, and may come in a loop */
		fusedev_log(d, r == -EBUSY ? LOG_DEBUG : LOG_INFO,
			    "fuse: open refused path=%s pid=%d err=\"%s\"",
			    kind_name(kind), (int)fuse_req_ctx(req)->pid, strerror(-r));
		fusedev_file_put(f);
		(void)fuse_reply_err(req, -r);
		return;
	}

	fusedev_log(d, LOG_DEBUG, "fuse: open path=%s fd=%llu pid=%d",
		    kind_name(kind), (unsigned long long)f->id,
		    (int)fuse_req_ctx(req)->pid);
	fi->fh = (uintptr_t)f;
	fi->direct_io = 1;
	fi->nonseekable = 1;
	/* FLUSH tells tpm0_claim() that a release is coming */
	fi->noflush = kind != FUSEDEV_TPM0;
	if (fuse_reply_open(req, fi) < 0) {
		/* the opener was interrupted: no release will come */
		file_release(f);
		fusedev_file_put(f);
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	switch (ino) {
	case FUSEDEV_INO_TPM0:
		op_open_device(req, FUSEDEV_TPM0, fi);
		break;
	case FUSEDEV_INO_TPMRM0:
		op_open_device(req, FUSEDEV_TPMRM0, fi);
		break;
	case FUSEDEV_INO_STATUS:
		op_open_status(req, fi);
		break;
	default:
		(void)fuse_reply_err(req, ino == FUSEDEV_INO_ROOT ? EISDIR : ENOENT);
		break;
	}
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fusedev_file *f = (struct fusedev_file *)(uintptr_t)fi->fh;

	if (ino == FUSEDEV_INO_TPM0) {
		pthread_mutex_lock(&d->lock);
		f->closing = true;
		pthread_mutex_unlock(&d->lock);
	}
	(void)fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fusedev_status *s;
	struct fusedev_file *f;

	if (ino == FUSEDEV_INO_STATUS) {
		s = (struct fusedev_status *)(uintptr_t)fi->fh;
		status_free(d, s);
		(void)fuse_reply_err(req, 0);
		return;
	}

	f = (struct fusedev_file *)(uintptr_t)fi->fh;
	fusedev_log(d, LOG_DEBUG, "fuse: release path=%s fd=%llu",
		    kind_name(f->kind), (unsigned long long)f->id);
	file_release(f);
	(void)fuse_reply_err(req, 0);
	fusedev_file_put(f);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fusedev_file *f = (struct fusedev_file *)(uintptr_t)fi->fh;
	const uint8_t *cmd = (const uint8_t *)buf;
	int r;

	if (ino != FUSEDEV_INO_TPM0 && ino != FUSEDEV_INO_TPMRM0) {
		(void)fuse_reply_err(req, EBADF);
		return;
	}

	/* the kernel's order: E2BIG, then EBUSY, then EINVAL */
	r = fusedev_framing_check(cmd, size);
	if (r != -E2BIG) {
		pthread_mutex_lock(&f->lock);
		if (f->in_flight || f->rsp_err ||
		    (f->rsp_len && !f->rsp_read))
			r = -EBUSY;
		if (r == 0) {
			/* like the kernel, a partly read response is dropped */
			f->in_flight = true;
			f->rsp_len = 0;
			atomic_fetch_add(&f->refs, 1);
		}
		pthread_mutex_unlock(&f->lock);
	}
	if (r == 0) {
		r = d->ops.submit(d->userdata, f, cmd, size);
		if (r < 0)
			/* an empty response: a read parked meanwhile gets 0 */
			file_finish(f, cmd, 0, 0);
	}
	if (r < 0) {
		fusedev_log(d, LOG_DEBUG, "fuse: write refused fd=%llu len=%zu err=\"%s\"",
			    (unsigned long long)f->id, size, strerror(-r));
		(void)fuse_reply_err(req, -r);
		return;
	}

	fusedev_log(d, LOG_DEBUG, "fuse: command fd=%llu len=%zu",
		    (unsigned long long)f->id, size);
	(void)fuse_reply_write(req, size);
}

/*
 * The read interrupt callback: a client blocked in read(2) on a command in
 * flight was signalled.  libfuse gives no file, so look for the read among
 * the open files; it may have been answered meanwhile.
 */
static void read_interrupted(fuse_req_t req, void *data)
{
	struct fusedev *d = data;
	struct fusedev_file *f;
	bool found = false;

	pthread_mutex_lock(&d->lock);
	for (f = d->files; f && !found; f = f->next) {
		pthread_mutex_lock(&f->lock);
		if (f->parked == req) {
			f->parked = NULL;
			found = true;
			(void)fuse_reply_err(req, EINTR);
		}
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&d->lock);
	if (found)
		fusedev_log(d, LOG_DEBUG, "fuse: read interrupted");
}

/*
 * Answer a read on f if it can be answered now: an error or a response
 * (part) pending, nothing in flight, or a non-blocking read.  Otherwise,
 * if may_park, keep the request until the response comes.  Returns true
 * when req has been answered or parked.  With f->lock held.
 *
 * Where the kernel differs, on purpose: it returns 0 to an O_NONBLOCK read
 * while the command runs (we say EAGAIN, which no poller ever sees); a
 * second blocking read waits for the first there (here it gets EBUSY);
 * and it drops a response left unread for 120 s (we keep it: it blocks
 * nobody but its own file).
 */
static bool read_serve(struct fusedev_file *f, fuse_req_t req, size_t size,
		       int flags, bool may_park)
{
	size_t n;
	int r = 0;

	if (f->rsp_err) {
		r = f->rsp_err;
		f->rsp_err = 0;
	} else if (f->rsp_len) {
		n = size < f->rsp_len ? size : f->rsp_len;
		(void)fuse_reply_buf(req, (const char *)f->rsp + f->rsp_off, n);
		f->rsp_off += n;
		f->rsp_len -= n;
		f->rsp_read = true;
		if (!f->rsp_len && (f->poll_events & POLLOUT))
			file_notify(f);
		return true;
	} else if (!f->in_flight) {
		r = 0;		/* nothing pending: 0, as the kernel */
	} else if (flags & O_NONBLOCK) {
		r = -EAGAIN;
	} else if (f->parked) {
		r = -EBUSY;	/* one blocked read per open file */
	} else if (atomic_load(&f->d->stopping) || f->detached) {
		r = -EIO;
	} else if (!may_park) {
		return false;
	} else if (fuse_req_interrupted(req)) {
		r = -EINTR;
	} else {
		f->parked = req;
		f->parked_size = size;
		return true;
	}
	if (r < 0)
		(void)fuse_reply_err(req, -r);
	else
		(void)fuse_reply_buf(req, NULL, 0);

	return true;
}

static void op_read_status(fuse_req_t req, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	struct fusedev_status *s = (struct fusedev_status *)(uintptr_t)fi->fh;
	char *copy;

	if (off < 0 || (size_t)off >= s->len) {
		(void)fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > s->len - off)
		size = s->len - off;
	/*
	 * Reply from a copy: once the reply is in the kernel the reader may
	 * close, and the release that frees s can run on another worker
	 * before this one's writev has returned.
	 */
	copy = malloc(size);
	if (!copy) {
		(void)fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, s->buf + off, size);
	(void)fuse_reply_buf(req, copy, size);
	free(copy);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fusedev *d = fuse_req_userdata(req);
	struct fusedev_file *f = (struct fusedev_file *)(uintptr_t)fi->fh;
	bool done;

	if (ino == FUSEDEV_INO_STATUS) {
		op_read_status(req, size, off, fi);
		return;
	}

	pthread_mutex_lock(&f->lock);
	done = read_serve(f, req, size, fi->flags, false);
	pthread_mutex_unlock(&f->lock);
	if (done)
		return;

	/* outside our locks: libfuse may call read_interrupted() right here */
	fuse_req_interrupt_func(req, read_interrupted, d);
	pthread_mutex_lock(&f->lock);
	(void)read_serve(f, req, size, fi->flags, true);
	pthread_mutex_unlock(&f->lock);
}

/*
 * POLLIN with a response (or an error) to read, POLLOUT when idle, nothing
 * while a command is in flight.  Never POLLRDNORM: the kernel's poll masks
 * revents with the events asked for, but tpm2-tss' device TCTI compares
 * revents with POLLIN exactly, so we answer exactly.  Never POLLERR or
 * POLLHUP, as the kernel's TPM device.
 */
static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct fuse_pollhandle *ph)
{
	struct fusedev_file *f = (struct fusedev_file *)(uintptr_t)fi->fh;
	unsigned int revents;

	if (ino == FUSEDEV_INO_STATUS) {
		if (ph)
			fuse_pollhandle_destroy(ph);
		(void)fuse_reply_poll(req, POLLIN);
		return;
	}

	pthread_mutex_lock(&f->lock);
	if (ph) {
		if (f->ph)
			fuse_pollhandle_destroy(f->ph);
		f->ph = ph;
		f->poll_events = fi->poll_events;
	}
	if (f->rsp_len || f->rsp_err)
		revents = POLLIN;
	else if (f->in_flight)
		revents = 0;
	else
		revents = POLLOUT;
	pthread_mutex_unlock(&f->lock);

	(void)fuse_reply_poll(req, revents);
}

static const struct fuse_lowlevel_ops fusedev_ll_ops = {
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readdir = op_readdir,
	.open = op_open,
	.flush = op_flush,
	.release = op_release,
	.read = op_read,
	.write = op_write,
	.poll = op_poll,
};

static void worker_buf_free(void *arg)
{
	struct fuse_buf *buf = arg;

	free(buf->mem);
}

/*
 * Give the reader role to a waiting worker, when the calling worker holds
 * it and is about to wait.  Any thread; a no-op elsewhere.
 */
static void reader_yield(struct fusedev *d)
{
	pthread_mutex_lock(&d->reader_lock);
	if (d->has_reader && pthread_equal(d->reader, pthread_self())) {
		d->has_reader = false;
		pthread_cond_signal(&d->reader_free);
	}
	pthread_mutex_unlock(&d->reader_lock);
}

/*
 * The calling FUSE worker, inside submit, is going to wait for the TPM:
 * let another worker read requests meanwhile.
 */
void fusedev_file_yield(struct fusedev_file *f)
{
	reader_yield(f->d);
}

static void reader_unlock(void *arg)
{
	pthread_mutex_unlock(arg);
}

/* Wait until the reader role is free or ours, and take it.  A cancellation point. */
static void reader_take(struct fusedev *d)
{
	pthread_mutex_lock(&d->reader_lock);
	pthread_cleanup_push(reader_unlock, &d->reader_lock);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	while (d->has_reader && !pthread_equal(d->reader, pthread_self()))
		pthread_cond_wait(&d->reader_free, &d->reader_lock);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	d->has_reader = true;
	d->reader = pthread_self();
	pthread_cleanup_pop(1);
}

/*
 * One worker: read a request, handle it, until the session ends.  It may
 * be cancelled only while it waits, in read(2) or for the reader role,
 * never while it handles a request and holds our locks.
 *
 * Only the worker with the reader role reads, and it keeps the role while
 * its handlers are quick: the kernel hands each request to the reader
 * that has waited longest, so with every worker reading, the requests of
 * one command (write, poll, read) would go to different threads, and
 * each to a thread likely on another CPU, whose wake-up costs more than
 * the request.  A handler about to wait gives the role away first
 * (reader_yield()).
 */
static void *worker_main(void *arg)
{
	struct fusedev *d = arg;
	struct fuse_buf buf;
	int r = 0;

	memset(&buf, 0, sizeof(buf));
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_push(worker_buf_free, &buf);
	while (!fuse_session_exited(d->se)) {
		reader_take(d);
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		r = fuse_session_receive_buf(d->se, &buf);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			break;
		fuse_session_process_buf(d->se, &buf);
	}
	fuse_session_exit(d->se);
	/* the others wake, see the session over (or read its end) and exit too */
	pthread_mutex_lock(&d->reader_lock);
	d->has_reader = false;
	pthread_cond_broadcast(&d->reader_free);
	pthread_mutex_unlock(&d->reader_lock);
	pthread_cleanup_pop(1);

	/* The connection went away without fusedev_stop(): say so once, and tell the owner. */
	if (!atomic_load(&d->stopping) && !atomic_exchange(&d->ended, true)) {
		fusedev_log(d, r < 0 ? LOG_ERR : LOG_NOTICE,
			    "fuse: session ended path=%s err=\"%s\"", d->mountpoint,
			    r < 0 ? strerror(-r) : "unmounted");
		if (d->ops.ended)
			d->ops.ended(d->userdata);
	}
	return NULL;
}

/*
 * A fixed pool of workers.  Handlers wait for the TPM only in a tpm0
 * write that the daemon runs inline, briefly, and for a tpm0 release,
 * bounded; each by one thread at a time, since tpm0 is exclusive.  So
 * three threads serve any number of clients.
 */
static int workers_start(struct fusedev *d)
{
	sigset_t all;
	sigset_t old;
	int r = 0;

	/* the workers take no signals: the daemon's are its own */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; d->nworkers < FUSEDEV_WORKERS; d->nworkers++) {
		r = -pthread_create(&d->workers[d->nworkers], NULL, worker_main, d);
		if (r < 0)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	return r;
}

/*
 * End the workers.  fuse_session_exit() is only a flag that they test
 * between requests, and nothing makes the kernel send a request on our
 * behalf, so cancel them: the cancellation lands in read(2), the only
 * place where they allow it (as libfuse's own multi-threaded loop does).
 */
static void workers_stop(struct fusedev *d)
{
	unsigned int i;

	fuse_session_exit(d->se);
	for (i = 0; i < d->nworkers; i++)
		(void)pthread_cancel(d->workers[i]);
	for (i = 0; i < d->nworkers; i++)
		(void)pthread_join(d->workers[i], NULL);
	d->nworkers = 0;
}

static int session_new(struct fusedev *d, const struct fusedev_config *c)
{
	char opts[128];
	char *argv[4];
	struct fuse_args args;

	(void)snprintf(opts, sizeof(opts),
		       "fsname=vtpmd,subtype=vtpmd,default_permissions%s",
		       c->allow_other ? ",allow_other" : "");
	argv[0] = "vtpmd";
	argv[1] = "-o";
	argv[2] = opts;
	argv[3] = "-d";
	args.argc = c->debug ? 4 : 3;
	args.argv = argv;
	args.allocated = 0;
	d->se = fuse_session_new(&args, &fusedev_ll_ops, sizeof(fusedev_ll_ops), d);
	fuse_opt_free_args(&args);
	if (!d->se)
		return -EINVAL;

	if (fuse_session_mount(d->se, d->mountpoint) != 0) {
		fuse_session_destroy(d->se);
		d->se = NULL;
		return -EIO;
	}

	return 0;
}

/*
 * Mount the endpoint at c->mountpoint (an existing directory) and serve it
 * from threads of its own, calling ops (open, submit, release and status
 * are required) with userdata.  The strings in c are copied.  Returns 0
 * and the endpoint in *ret, or -ENOMEM, -EINVAL (bad arguments or libfuse
 * options), -EIO (the mount failed; libfuse printed why), or a pthread
 * error.  Main thread.
 */
int fusedev_start(const struct fusedev_config *c, const struct fusedev_ops *ops,
		  void *userdata, struct fusedev **ret)
{
	struct fusedev *d;
	int r;

	if (!c || !c->mountpoint || !ops || !ops->open || !ops->submit ||
	    !ops->release || !ret)
		return -EINVAL;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->mountpoint = strdup(c->mountpoint);
	if (!d->mountpoint) {
		free(d);
		return -ENOMEM;
	}
	atomic_init(&d->refs, 1);
	atomic_init(&d->stopping, false);
	atomic_init(&d->ended, false);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->tpm0_free, NULL);
	pthread_mutex_init(&d->reader_lock, NULL);
	pthread_cond_init(&d->reader_free, NULL);
	d->ops = *ops;
	d->userdata = userdata;
	d->uid = c->uid;
	d->gid = c->gid;
	d->mode = c->mode;
	d->debug = c->debug;
	clock_gettime(CLOCK_REALTIME, &d->start_time);

	r = session_new(d, c);
	if (r < 0)
		goto err_put;
	r = workers_start(d);
	if (r < 0)
		goto err_stop;

	fusedev_log(d, LOG_NOTICE, "fuse: mounted path=%s", d->mountpoint);
	*ret = d;
	return 0;

err_stop:
	workers_stop(d);
	fuse_session_unmount(d->se);
	fuse_session_destroy(d->se);
err_put:
	fusedev_log(d, LOG_ERR, "fuse: cannot mount path=%s err=\"%s\"",
		    c->mountpoint, strerror(-r));
	dev_put(d);
	return r;
}

/* No more replies or notifications: answer parked reads, drop poll handles. */
static void files_detach(struct fusedev *d)
{
	struct fusedev_file *f;

	pthread_mutex_lock(&d->lock);
	for (f = d->files; f; f = f->next) {
		pthread_mutex_lock(&f->lock);
		if (f->parked)
			(void)fuse_reply_err(f->parked, EIO);
		f->parked = NULL;
		if (f->ph)
			fuse_pollhandle_destroy(f->ph);
		f->ph = NULL;
		f->detached = true;
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&d->lock);
}

/*
 * Take the next file that fusedev_stop() has not swept yet, with a
 * temporary reference, telling whether it still needs its release and
 * whether it had a command in flight (whose reference the caller drops).
 */
static struct fusedev_file *files_sweep_next(struct fusedev *d,
					     bool *ret_release,
					     bool *ret_in_flight)
{
	struct fusedev_file *f;

	pthread_mutex_lock(&d->lock);
	for (f = d->files; f && f->swept; f = f->next)
		;
	if (f) {
		f->swept = true;
		atomic_fetch_add(&f->refs, 1);
		pthread_mutex_lock(&f->lock);
		*ret_release = !f->released;
		*ret_in_flight = f->in_flight;
		f->in_flight = false;
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&d->lock);

	return f;
}

/*
 * Unmount and stop serving: parked reads get EIO, the threads end, files
 * still open are released (ops->release is called for each) and later
 * I/O on them fails with ENOTCONN.  Commands still in flight lose the
 * reference that their submit held: a caller that will still complete
 * them must hold its own reference (as the multiplexer does), and its
 * completion is then dropped.  Memory goes with the last reference.
 * Safe while clients hold files open.  NULL is a no-op.  Main thread,
 * never from a fusedev callback.
 */
void fusedev_stop(struct fusedev *d)
{
	struct fusedev_file *f;
	bool release;
	bool in_flight;

	if (!d)
		return;

	atomic_store(&d->stopping, true);
	pthread_mutex_lock(&d->lock);
	pthread_cond_broadcast(&d->tpm0_free);
	pthread_mutex_unlock(&d->lock);
	workers_stop(d);
	files_detach(d);
	fuse_session_unmount(d->se);
	fuse_session_destroy(d->se);
	d->se = NULL;
	fusedev_log(d, LOG_NOTICE, "fuse: unmounted path=%s", d->mountpoint);

	while ((f = files_sweep_next(d, &release, &in_flight))) {
		if (release) {
			file_release(f);
			fusedev_file_put(f);
		}
		if (in_flight)
			fusedev_file_put(f);
		fusedev_file_put(f);
	}
	while (d->statuses)
		status_free(d, d->statuses);
	dev_put(d);
}
