#include "outbox.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "event.h"
#include "fsutil.h"
#include "hook.h"
#include "keylime.h"
#include "log.h"
#include "util.h"
#include "webhook.h"

/*
 * Files, per event phase, named <seq>-<event id>-<phase> with seq a
 * 16-digit counter, so that names sort in recording order:
 *   .json   the event, as hooks get it; written once; its presence is the record
 *   .state  the deliveries: hook, state, attempts, Keylime step; rewritten
 *           atomically after each attempt
 * A .state without its .json is a leftover and removed.  A failed delivery
 * (retries exhausted) stays on disk; the next start and SIGHUP retry it.
 * A delivery to a hook the configuration no longer has fails at once, when
 * the outbox opens and at each new configuration, whether or not any
 * delivery thread runs.
 */

enum dlv_state {
	DLV_PENDING,
	DLV_DONE,
	DLV_FAILED,
};

static const char *const dlv_names[] = { "pending", "done", "failed" };

struct dlv {
	char hook[40];
	int state;			/* enum dlv_state */
	unsigned attempts;
	unsigned step;			/* enum keylime_step */
	uint64_t next_ms;		/* monotonic; not before; not persisted */
	bool busy;			/* a delivery thread is making an attempt */
	char err[OUTBOX_ERR_MAX];
};

struct rec {
	struct rec *next;
	uint64_t seq;
	char id[40];
	char phase[8];
	char new_inst[80];		/* the instance the event announces */
	bool held;			/* commit of a swap not done yet: not delivered */
	int64_t created_ms;		/* realtime */
	char *json;			/* the event; immutable */
	size_t n;
	struct dlv d[CONF_MAX_HOOKS];
};

struct outbox {
	char dir[PATH_MAX];
	const struct conf *conf;	/* protected by lock; replaced on SIGHUP */
	pthread_mutex_t lock;
	pthread_cond_t wake;		/* new work, new conf, stop */
	pthread_cond_t done;		/* an attempt ended */
	struct rec *head;		/* in seq order; protected by lock */
	uint64_t next_seq;
	bool stop;
	bool started;			/* outbox_start() was called */
	size_t n_threads;		/* delivery threads: one per configured hook */
	pthread_t threads[CONF_MAX_HOOKS];
};

/* The delivery being made, for Keylime's progress callback. */
struct progress {
	struct outbox *o;
	struct rec *rec;
	struct dlv *d;
};

static uint64_t mono_ms(void)
{
	return util_now_ns(CLOCK_MONOTONIC) / 1000000;
}

static int64_t real_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_REALTIME) / 1000000);
}

static void rec_path(const struct outbox *o, const struct rec *rec, const char *ext, char *buf,
		     size_t size)
{
	snprintf(buf, size, "%s/%016" PRIu64 "-%s-%s.%s", o->dir, rec->seq, rec->id, rec->phase,
		 ext);
}

static void rec_free(struct rec *rec)
{
	if (!rec)
		return;
	free(rec->json);
	free(rec);
}

static json_object *state_encode(const struct rec *rec)
{
	json_object *o = json_object_new_object();
	json_object *a = json_object_new_array();
	size_t i;

	for (i = 0; o && a && i < rec->n; i++) {
		json_object *d = json_object_new_object();

		json_object_object_add(d, "hook", json_object_new_string(rec->d[i].hook));
		json_object_object_add(d, "state", json_object_new_string(dlv_names[rec->d[i].state]));
		json_object_object_add(d, "attempts", json_object_new_int64(rec->d[i].attempts));
		json_object_object_add(d, "step", json_object_new_int64(rec->d[i].step));
		json_object_object_add(d, "error", json_object_new_string(rec->d[i].err));
		json_object_array_add(a, d);
	}
	json_object_object_add(o, "new", json_object_new_string(rec->new_inst));
	json_object_object_add(o, "held", json_object_new_boolean(rec->held));
	json_object_object_add(o, "created_ms", json_object_new_int64(rec->created_ms));
	json_object_object_add(o, "deliveries", a);

	return o;
}

/* Persist rec's deliveries.  Under o->lock. */
static int rec_save(struct outbox *o, const struct rec *rec)
{
	char path[PATH_MAX];
	json_object *j = state_encode(rec);
	const char *text;
	int r;

	text = j ? json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN) : NULL;
	if (!text) {
		json_object_put(j);
		return -ENOMEM;
	}
	rec_path(o, rec, "state", path, sizeof(path));
	r = fsutil_write_atomic(path, text, strlen(text), 0600);
	json_object_put(j);
	if (r < 0)
		log_err_errno(r, "outbox: cannot save delivery state path=%s", path);

	return r;
}

/* Remove rec's files (event first: it is the record) and free it.  Under o->lock. */
static void rec_remove(struct outbox *o, struct rec *rec)
{
	struct rec **p;
	char path[PATH_MAX];

	for (p = &o->head; *p; p = &(*p)->next) {
		if (*p == rec) {
			*p = rec->next;
			break;
		}
	}
	rec_path(o, rec, "json", path, sizeof(path));
	(void)unlink(path);
	rec_path(o, rec, "state", path, sizeof(path));
	(void)unlink(path);
	(void)fsutil_fsync_dir(o->dir);
	rec_free(rec);
}

static void rec_append(struct outbox *o, struct rec *rec)
{
	struct rec **p;

	for (p = &o->head; *p && (*p)->seq < rec->seq; p = &(*p)->next)
		;
	rec->next = *p;
	*p = rec;
	if (rec->seq >= o->next_seq)
		o->next_seq = rec->seq + 1;
}

/* One delivery per hook of c whose phases include phase. */
static void rec_add_hooks(struct rec *rec, const struct conf *c)
{
	unsigned bit = strcmp(rec->phase, "prepare") == 0 ? CONF_PHASE_PREPARE : CONF_PHASE_COMMIT;
	size_t i;

	rec->n = 0;
	for (i = 0; i < c->n_hooks; i++) {
		if (!(c->hooks[i].phases & bit))
			continue;
		memset(&rec->d[rec->n], 0, sizeof(rec->d[0]));
		snprintf(rec->d[rec->n].hook, sizeof(rec->d[0].hook), "%s", c->hooks[i].name);
		rec->n++;
	}
}

static int dlv_decode(json_object *j, struct dlv *d)
{
	json_object *v;
	size_t i;

	memset(d, 0, sizeof(*d));
	if (!json_object_object_get_ex(j, "hook", &v) || !json_object_is_type(v, json_type_string))
		return -EBADMSG;
	snprintf(d->hook, sizeof(d->hook), "%s", json_object_get_string(v));
	if (!json_object_object_get_ex(j, "state", &v))
		return -EBADMSG;
	for (i = 0; i < ARRAY_SIZE(dlv_names); i++) {
		if (strcmp(json_object_get_string(v), dlv_names[i]) == 0)
			d->state = (int)i;
	}
	if (json_object_object_get_ex(j, "attempts", &v))
		d->attempts = (unsigned)json_object_get_int(v);
	if (json_object_object_get_ex(j, "step", &v))
		d->step = (unsigned)json_object_get_int(v);
	if (json_object_object_get_ex(j, "error", &v))
		snprintf(d->err, sizeof(d->err), "%s", json_object_get_string(v));
	/* Failed deliveries get their retries again at each start. */
	if (d->state == DLV_FAILED) {
		d->state = DLV_PENDING;
		d->attempts = 0;
	}

	return 0;
}

static int state_decode(struct rec *rec, const char *text)
{
	json_object *o = json_tokener_parse(text);
	json_object *a = NULL;
	json_object *v;
	size_t i;
	int r = 0;

	if (!o || !json_object_object_get_ex(o, "deliveries", &a) ||
	    !json_object_is_type(a, json_type_array) ||
	    json_object_array_length(a) > CONF_MAX_HOOKS) {
		json_object_put(o);
		return -EBADMSG;
	}
	if (json_object_object_get_ex(o, "new", &v))
		snprintf(rec->new_inst, sizeof(rec->new_inst), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "held", &v))
		rec->held = json_object_get_boolean(v);
	if (json_object_object_get_ex(o, "created_ms", &v))
		rec->created_ms = json_object_get_int64(v);
	rec->n = json_object_array_length(a);
	for (i = 0; r == 0 && i < rec->n; i++)
		r = dlv_decode(json_object_array_get_idx(a, i), &rec->d[i]);
	json_object_put(o);

	return r;
}

/* Read the event and its deliveries back; a missing .state means none was tried. */
static int rec_load(struct outbox *o, struct rec *rec)
{
	struct event_decoded ev;
	char path[PATH_MAX];
	char *state = NULL;
	size_t len;
	int r;

	rec_path(o, rec, "json", path, sizeof(path));
	r = fsutil_read_file(path, EVENT_JSON_MAX, &rec->json, &len);
	if (r < 0)
		return r;
	r = event_rotation_decode(rec->json, len, &ev);
	if (r < 0)
		return r;
	snprintf(rec->new_inst, sizeof(rec->new_inst), "%s", ev.new.id);
	event_decoded_clear(&ev);
	rec->created_ms = real_ms();
	rec_path(o, rec, "state", path, sizeof(path));
	r = fsutil_read_file(path, 64 * 1024, &state, &len);
	if (r == -ENOENT) {
		rec_add_hooks(rec, o->conf);
		return 0;
	}
	if (r == 0)
		r = state_decode(rec, state);
	free(state);

	return r;
}

/* One directory entry: a record to load, a leftover to remove, or something else. */
static void scan_entry(struct outbox *o, const char *name)
{
	char path[PATH_MAX];
	struct rec *rec;
	uint64_t seq;
	char id[40];
	char phase[8];
	char ext[8];
	int r;

	if (sscanf(name, "%16" SCNu64 "-%32[0-9a-f]-%7[a-z].%5[a-z]", &seq, id, phase, ext) != 4 ||
	    (strcmp(phase, "prepare") != 0 && strcmp(phase, "commit") != 0))
		return;
	/* Numbers stay unique and in order, past unreadable records too. */
	if (seq >= o->next_seq)
		o->next_seq = seq + 1;
	snprintf(path, sizeof(path), "%s/%.*s.json", o->dir, (int)(strrchr(name, '.') - name), name);
	if (strcmp(ext, "state") == 0) {
		if (access(path, F_OK) < 0 && errno == ENOENT)
			(void)unlink(path);
		return;
	}
	if (strcmp(ext, "json") != 0)
		return;
	rec = calloc(1, sizeof(*rec));
	if (!rec)
		return;
	rec->seq = seq;
	snprintf(rec->id, sizeof(rec->id), "%s", id);
	snprintf(rec->phase, sizeof(rec->phase), "%s", phase);
	r = rec_load(o, rec);
	if (r < 0) {
		log_err_errno(r, "outbox: cannot read a recorded event, leaving it alone path=%s", path);
		rec_free(rec);
		return;
	}
	rec_append(o, rec);
}

static int scan(struct outbox *o)
{
	struct dirent *e;
	DIR *dir;

	dir = opendir(o->dir);
	if (!dir)
		return -errno;
	while ((e = readdir(dir)))
		scan_entry(o, e->d_name);
	closedir(dir);

	return 0;
}

static struct rec *rec_find(struct outbox *o, uint64_t seq)
{
	struct rec *rec;

	for (rec = o->head; rec; rec = rec->next) {
		if (rec->seq == seq)
			return rec;
	}

	return NULL;
}

/*
 * Record one phase of an event (json, new_inst the instance it announces)
 * with a delivery for each hook of that phase, durably, before any hook
 * sees it.  held: not delivered until outbox_release().  *ret_seq is the
 * record's number, 0 when no hook owns the phase (nothing is written).
 * Returns 0, or a negative errno from writing.  The rotation thread.
 */
int outbox_put(struct outbox *o, const char *id, const char *phase, const char *new_inst,
	       bool held, const char *json, uint64_t *ret_seq)
{
	char path[PATH_MAX];
	struct rec *rec;
	int r;

	rec = calloc(1, sizeof(*rec));
	if (!rec || !(rec->json = strdup(json))) {
		free(rec);
		return -ENOMEM;
	}
	snprintf(rec->id, sizeof(rec->id), "%s", id);
	snprintf(rec->phase, sizeof(rec->phase), "%s", phase);
	snprintf(rec->new_inst, sizeof(rec->new_inst), "%s", new_inst);
	rec->held = held;
	rec->created_ms = real_ms();
	pthread_mutex_lock(&o->lock);
	rec_add_hooks(rec, o->conf);
	rec->seq = o->next_seq++;
	r = rec->n ? rec_save(o, rec) : 0;
	rec_path(o, rec, "json", path, sizeof(path));
	if (r == 0 && rec->n)
		r = fsutil_write_atomic(path, json, strlen(json), 0600);
	if (r < 0 || !rec->n) {
		pthread_mutex_unlock(&o->lock);
		rec_free(rec);
		*ret_seq = 0;
		return r;
	}
	rec_append(o, rec);
	*ret_seq = rec->seq;
	pthread_cond_broadcast(&o->wake);
	pthread_mutex_unlock(&o->lock);

	return 0;
}

/* Let a held record go out (the swap it announces happened).  Any thread. */
void outbox_release(struct outbox *o, uint64_t seq)
{
	struct rec *rec;

	pthread_mutex_lock(&o->lock);
	rec = rec_find(o, seq);
	if (rec && rec->held) {
		rec->held = false;
		(void)rec_save(o, rec);
		pthread_cond_broadcast(&o->wake);
	}
	pthread_mutex_unlock(&o->lock);
}

/* Forget a held record (the swap it announces did not happen).  Any thread. */
void outbox_drop(struct outbox *o, uint64_t seq)
{
	struct rec *rec;

	pthread_mutex_lock(&o->lock);
	rec = rec_find(o, seq);
	if (rec && rec->held)
		rec_remove(o, rec);
	pthread_cond_broadcast(&o->done);
	pthread_mutex_unlock(&o->lock);
}

/*
 * At start, settle records held by a crash between prepare and swap: the
 * swap happened if the instance they announce is the active one (release
 * them), else it did not (drop them).  Returns how many were dropped: their
 * prepare may have gone out, so the hooks must hear of the active instance
 * again.  Main thread, before outbox_start().
 */
int outbox_resolve_held(struct outbox *o, const char *active)
{
	struct rec *rec;
	struct rec *next;
	int dropped = 0;

	pthread_mutex_lock(&o->lock);
	for (rec = o->head; rec; rec = next) {
		next = rec->next;
		if (!rec->held)
			continue;
		if (active && strcmp(rec->new_inst, active) == 0) {
			rec->held = false;
			(void)rec_save(o, rec);
			log_notice("outbox: the swap happened before the stop, delivering its commit id=%s inst=%s",
				   rec->id, rec->new_inst);
		} else {
			log_notice("outbox: dropping the commit of a swap that did not happen id=%s inst=%s",
				   rec->id, rec->new_inst);
			rec_remove(o, rec);
			dropped++;
		}
	}
	pthread_mutex_unlock(&o->lock);

	return dropped;
}

static void abs_deadline(uint64_t ms, struct timespec *ts)
{
	uint64_t ns = util_now_ns(CLOCK_MONOTONIC) + ms * 1000000ull;

	ts->tv_sec = (time_t)(ns / 1000000000ull);
	ts->tv_nsec = (long)(ns % 1000000000ull);
}

static const struct conf_hook *hook_find(const struct conf *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->n_hooks; i++) {
		if (strcmp(c->hooks[i].name, name) == 0)
			return &c->hooks[i];
	}

	return NULL;
}

/*
 * How long, from the start of the wait, the open deliveries of rec may
 * still keep it: the longest timeout of their hooks; 0 when none is open.
 * Under o->lock.
 */
static uint64_t open_wait_ms(struct outbox *o, const struct rec *rec, bool *ret_failed)
{
	const struct conf_hook *h;
	uint64_t ms = 0;
	size_t i;

	*ret_failed = false;
	for (i = 0; i < rec->n; i++) {
		*ret_failed |= rec->d[i].state == DLV_FAILED;
		if (rec->d[i].state != DLV_PENDING)
			continue;
		h = hook_find(o->conf, rec->d[i].hook);
		if (h && h->timeout_ms > ms)
			ms = h->timeout_ms;
		else if (!ms)
			ms = 1;
	}

	return ms;
}

/*
 * Wait until every delivery of record seq has ended, each at most its
 * hook's timeout, and all at most max_ms.  Returns 0 if all succeeded (or
 * seq is 0 or gone), -EIO if one failed for good, -ETIMEDOUT.  The
 * rotation thread.
 */
int outbox_wait(struct outbox *o, uint64_t seq, uint64_t max_ms)
{
	uint64_t start = mono_ms();
	struct timespec ts;
	struct rec *rec;
	uint64_t ms;
	bool failed;
	int r = 0;

	pthread_mutex_lock(&o->lock);
	while (seq && (rec = rec_find(o, seq))) {
		ms = open_wait_ms(o, rec, &failed);
		if (!ms) {
			r = failed ? -EIO : 0;
			break;
		}
		if (ms > max_ms)
			ms = max_ms;
		if (mono_ms() >= start + ms) {
			r = -ETIMEDOUT;
			break;
		}
		abs_deadline(start + ms - mono_ms(), &ts);
		pthread_cond_timedwait(&o->done, &o->lock, &ts);
	}
	pthread_mutex_unlock(&o->lock);

	return r;
}

static void progress_save(void *userdata, unsigned step)
{
	struct progress *p = userdata;

	pthread_mutex_lock(&p->o->lock);
	p->d->step = step;
	(void)rec_save(p->o, p->rec);
	pthread_mutex_unlock(&p->o->lock);
}

static int run_exec(const struct conf_hook *h, const struct rec *rec, char *err, size_t n)
{
	char phase_var[64];
	char id_var[64];
	char *envp[] = { phase_var, id_var, NULL };
	struct hook_cred cred = { h->user_uid, h->user_gid };
	struct hook_result res;
	int r;

	snprintf(phase_var, sizeof(phase_var), "VTPMD_EVENT_PHASE=%s", rec->phase);
	snprintf(id_var, sizeof(id_var), "VTPMD_EVENT_ID=%s", rec->id);
	r = hook_exec_as(h->argv, envp, rec->json, strlen(rec->json), h->timeout_ms,
			 h->has_user ? &cred : NULL, &res);
	if (r < 0) {
		snprintf(err, n, "cannot run %s: %s", h->argv[0], strerror(-r));
		return r;
	}
	if (res.timed_out || res.signaled || res.exit_status != 0) {
		hook_result_describe(&res, err, n);
		return -EIO;
	}

	return 0;
}

/* One attempt of delivery d of rec to hook h.  Without o->lock. */
static int attempt(struct outbox *o, const struct conf_hook *h, struct rec *rec, struct dlv *d,
		   char *err, size_t n)
{
	struct progress p = { .o = o, .rec = rec, .d = d };
	struct webhook_reply reply;
	unsigned step = d->step;
	int r;

	err[0] = '\0';
	switch (h->type) {
	case CONF_HOOK_WEBHOOK:
		r = webhook_post_event(h, rec->json, &reply);
		if (r < 0)
			snprintf(err, n, "%s", reply.err);
		return r;
	case CONF_HOOK_KEYLIME:
		return keylime_deliver(h, rec->phase, rec->json, &step, progress_save, &p, err, n);
	default:
		return run_exec(h, rec, err, n);
	}
}

/* Back-off before attempt number attempts + 1: doubling, capped, half of it random. */
static uint64_t backoff_ms(const struct conf_hook *h, unsigned attempts)
{
	uint64_t delay = h->retry_min_ms;
	uint32_t rnd = 0;

	while (--attempts && delay < h->retry_max_ms)
		delay *= 2;
	if (delay > h->retry_max_ms)
		delay = h->retry_max_ms;
	(void)getrandom(&rnd, sizeof(rnd), 0);

	return delay / 2 + rnd % (delay / 2 + 1);
}

/* Delivery d of rec cannot happen: its hook is no longer configured.  Under o->lock. */
static void dlv_fail_orphan(struct rec *rec, struct dlv *d)
{
	d->state = DLV_FAILED;
	snprintf(d->err, sizeof(d->err), "hook is not configured");
	log_err("outbox: delivery failed, no such hook hook=%s id=%s phase=%s", d->hook, rec->id,
		rec->phase);
}

/*
 * Record the outcome r of an attempt.  A new configuration may have
 * dropped the hook during the attempt (h stays valid: old configurations
 * are kept): then there is no retry.  Under o->lock.
 */
static void settle(struct outbox *o, const struct conf_hook *h, struct rec *rec, struct dlv *d,
		   int r, const char *err, uint64_t elapsed)
{
	size_t i;

	d->attempts++;
	snprintf(d->err, sizeof(d->err), "%s", r < 0 ? err : "");
	if (r == 0) {
		d->state = DLV_DONE;
		log_notice("outbox: delivered hook=%s id=%s phase=%s attempt=%u elapsed_ms=%" PRIu64,
			   h->name, rec->id, rec->phase, d->attempts, elapsed);
	} else if (!hook_find(o->conf, d->hook)) {
		dlv_fail_orphan(rec, d);
	} else if (d->attempts > h->retries) {
		d->state = DLV_FAILED;
		log_err("outbox: delivery failed, retries exhausted hook=%s id=%s phase=%s attempt=%u err=\"%s\"",
			h->name, rec->id, rec->phase, d->attempts, err);
	} else {
		d->next_ms = mono_ms() + backoff_ms(h, d->attempts);
		log_warn("outbox: delivery failed, will retry hook=%s id=%s phase=%s attempt=%u retry_ms=%" PRIu64 " err=\"%s\"",
			 h->name, rec->id, rec->phase, d->attempts, d->next_ms - mono_ms(), err);
	}
	for (i = 0; i < rec->n && rec->d[i].state == DLV_DONE; i++)
		;
	if (i == rec->n)
		rec_remove(o, rec);
	else
		(void)rec_save(o, rec);
	pthread_cond_broadcast(&o->done);
}

/*
 * Fail the deliveries to hooks that are no longer configured.  Called
 * whenever o->conf is set, since delivery threads serve only configured
 * hooks and there may be none; one under way is left to settle().  Under
 * o->lock.
 */
static void fail_orphans(struct outbox *o)
{
	struct rec *rec;
	struct dlv *d;
	bool changed;
	size_t i;

	for (rec = o->head; rec; rec = rec->next) {
		changed = false;
		for (i = 0; i < rec->n; i++) {
			d = &rec->d[i];
			if (d->state != DLV_PENDING || d->busy || hook_find(o->conf, d->hook))
				continue;
			dlv_fail_orphan(rec, d);
			changed = true;
		}
		if (changed)
			(void)rec_save(o, rec);
	}
	pthread_cond_broadcast(&o->done);
}

static struct dlv *dlv_of(struct rec *rec, const char *hook)
{
	size_t i;

	for (i = 0; i < rec->n; i++) {
		if (strcmp(rec->d[i].hook, hook) == 0)
			return &rec->d[i];
	}

	return NULL;
}

/*
 * The next delivery due: per hook, only its oldest open record may go
 * (a held one, or one another thread is delivering, blocks the hook).
 * *wake_ms is lowered to the next due time.  Under o->lock.
 */
static struct dlv *pick(struct outbox *o, struct rec **ret_rec, uint64_t *wake_ms)
{
	uint64_t now = mono_ms();
	struct rec *rec;
	struct dlv *d;
	size_t i;

	for (i = 0; i < o->conf->n_hooks; i++) {
		for (rec = o->head; rec; rec = rec->next) {
			d = dlv_of(rec, o->conf->hooks[i].name);
			if (!d || d->state != DLV_PENDING)
				continue;
			if (rec->held || d->busy)
				break;
			if (d->next_ms <= now) {
				*ret_rec = rec;
				return d;
			}
			if (d->next_ms < *wake_ms)
				*wake_ms = d->next_ms;
			break;
		}
	}

	return NULL;
}

/*
 * Make one attempt of the next due delivery, if any: true if one was made.
 * *wake_ms is lowered to when the next one is due.  Called and returns
 * under o->lock, which it drops during the attempt.
 */
static bool deliver_next(struct outbox *o, uint64_t *wake_ms)
{
	char err[OUTBOX_ERR_MAX];
	const struct conf_hook *h;
	struct rec *rec;
	struct dlv *d;
	uint64_t t0;
	int r;

	d = pick(o, &rec, wake_ms);
	if (!d)
		return false;
	h = hook_find(o->conf, d->hook);
	d->busy = true;
	pthread_mutex_unlock(&o->lock);
	t0 = mono_ms();
	r = attempt(o, h, rec, d, err, sizeof(err));
	pthread_mutex_lock(&o->lock);
	d->busy = false;
	settle(o, h, rec, d, r, err, mono_ms() - t0);

	return true;
}

/*
 * One of the delivery threads.  There are as many as hooks, and a hook is
 * served by one thread at a time, so a hook that hangs until its timeout
 * holds back only its own deliveries.
 */
static void *outbox_main(void *arg)
{
	struct outbox *o = arg;
	struct timespec ts;
	uint64_t wake;

	pthread_mutex_lock(&o->lock);
	while (!o->stop) {
		wake = mono_ms() + 60000;
		if (deliver_next(o, &wake))
			continue;
		abs_deadline(wake > mono_ms() ? wake - mono_ms() : 0, &ts);
		pthread_cond_timedwait(&o->wake, &o->lock, &ts);
	}
	pthread_mutex_unlock(&o->lock);

	return NULL;
}

/* Start delivery threads until there is one per hook of c.  Under o->lock. */
static int threads_grow(struct outbox *o, const struct conf *c)
{
	int r;

	while (o->n_threads < c->n_hooks && o->n_threads < CONF_MAX_HOOKS) {
		r = -pthread_create(&o->threads[o->n_threads], NULL, outbox_main, o);
		if (r < 0)
			return r;
		o->n_threads++;
	}

	return 0;
}

/*
 * New configuration after SIGHUP: deliveries use its hooks from now on,
 * failed ones get their retries again, and those to hooks c does not have
 * fail (again).  c must outlive the outbox or the next call.  Main thread.
 */
void outbox_set_conf(struct outbox *o, const struct conf *c)
{
	struct rec *rec;
	size_t i;

	pthread_mutex_lock(&o->lock);
	o->conf = c;
	if (o->started && threads_grow(o, c) < 0)
		log_err("outbox: cannot start a delivery thread for the new hooks");
	for (rec = o->head; rec; rec = rec->next) {
		for (i = 0; i < rec->n; i++) {
			if (rec->d[i].state != DLV_FAILED)
				continue;
			rec->d[i].state = DLV_PENDING;
			rec->d[i].attempts = 0;
			rec->d[i].next_ms = 0;
		}
	}
	fail_orphans(o);
	pthread_cond_broadcast(&o->wake);
	pthread_mutex_unlock(&o->lock);
}

/* Counts and the first OUTBOX_ITEMS_MAX open deliveries, for the status file.  Any thread. */
void outbox_stats_get(struct outbox *o, struct outbox_stats *ret)
{
	struct outbox_item *it;
	struct rec *rec;
	size_t i;

	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&o->lock);
	for (rec = o->head; rec; rec = rec->next) {
		for (i = 0; i < rec->n; i++) {
			if (rec->d[i].state == DLV_DONE)
				continue;
			if (rec->d[i].state == DLV_PENDING && !ret->pending++)
				ret->oldest_pending_ms = (uint64_t)(real_ms() - rec->created_ms);
			ret->failed += rec->d[i].state == DLV_FAILED;
			if (ret->n_items == OUTBOX_ITEMS_MAX)
				continue;
			it = &ret->items[ret->n_items++];
			snprintf(it->hook, sizeof(it->hook), "%s", rec->d[i].hook);
			snprintf(it->id, sizeof(it->id), "%s", rec->id);
			snprintf(it->phase, sizeof(it->phase), "%s", rec->phase);
			it->state = rec->held ? "held" : dlv_names[rec->d[i].state];
			it->attempts = rec->d[i].attempts;
			it->step = rec->d[i].step;
			snprintf(it->err, sizeof(it->err), "%s", rec->d[i].err);
		}
	}
	pthread_mutex_unlock(&o->lock);
}

static void outbox_recs_free(struct outbox *o)
{
	struct rec *rec;

	while ((rec = o->head)) {
		o->head = rec->next;
		rec_free(rec);
	}
}

/*
 * Open the outbox under state_dir for configuration c (which must outlive
 * it or the next outbox_set_conf()): create the directory, initialise
 * libcurl, read back the records a previous run left and fail their
 * deliveries to hooks c does not have.  Returns 0 or a negative errno.
 * Main thread, at start.
 */
int outbox_new(const char *state_dir, const struct conf *c, struct outbox **ret)
{
	pthread_condattr_t attr;
	struct outbox *o;
	int r;

	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	snprintf(o->dir, sizeof(o->dir), "%s/outbox", state_dir);
	o->conf = c;
	o->next_seq = 1;
	r = fsutil_mkdir(o->dir, 0700);
	if (r == 0)
		r = scan(o);
	if (r == 0)
		r = webhook_global_init();
	if (r < 0) {
		outbox_recs_free(o);
		free(o);
		return r;
	}
	pthread_mutex_init(&o->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&o->wake, &attr);
	pthread_cond_init(&o->done, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_lock(&o->lock);
	fail_orphans(o);
	pthread_mutex_unlock(&o->lock);
	*ret = o;

	return 0;
}

/* Start the delivery threads.  Returns 0 or a negative errno.  Main thread. */
int outbox_start(struct outbox *o)
{
	int r;

	pthread_mutex_lock(&o->lock);
	o->started = true;
	r = threads_grow(o, o->conf);
	pthread_mutex_unlock(&o->lock);

	return r;
}

/*
 * Stop the delivery threads after the attempts under way and free the
 * outbox; what is pending stays on disk.  NULL is a no-op.  Main thread.
 */
void outbox_free(struct outbox *o)
{
	size_t i;

	if (!o)
		return;
	pthread_mutex_lock(&o->lock);
	o->stop = true;
	pthread_cond_broadcast(&o->wake);
	pthread_mutex_unlock(&o->lock);
	for (i = 0; i < o->n_threads; i++)
		pthread_join(o->threads[i], NULL);
	outbox_recs_free(o);
	pthread_cond_destroy(&o->wake);
	pthread_cond_destroy(&o->done);
	pthread_mutex_destroy(&o->lock);
	webhook_global_cleanup();
	free(o);
}
