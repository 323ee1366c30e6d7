#include "rotate.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <tss2/tss2_tpm2_types.h>

#include "event.h"
#include "log.h"
#include "outbox.h"
#include "status.h"
#include "tpmcmd.h"
#include "util.h"

#define ROTATE_TAKE_TIMEOUT_MS 30000
#define ROTATE_URGENT_TAKE_MS 10000
#define ROTATE_RETRY_MS 1000
/*
 * Retiring the old instance (TPM2_Shutdown writes its state, then the
 * process exits) is CPU and disk work; leave the first commands on the
 * new instance this long to themselves, as the pool's refill does.
 */
#define ROTATE_RETIRE_DELAY_MS 50
/* How long a fresh start lets its first event reach fast hooks before serving. */
#define ROTATE_START_WAIT_MS 2000

/* An urgent swap done on the mux thread, to be finished here. */
struct rotate_job {
	struct rotate_job *next;
	char reason[32];
	char event_id[33];
	int64_t time_ms;
	struct inst *old;
	struct meta old_meta;
	struct meta new_meta;		/* the instance this swap brought in */
	uint64_t pause_ns;
};

struct rotate {
	const struct conf *conf;	/* protected by lock; replaced on SIGHUP */
	struct pool *pool;
	struct mux *mux;
	struct outbox *outbox;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	char pending[32];		/* reason of a requested rotation, "" if none */
	struct rotate_job *jobs;	/* urgent swaps to finish */
	bool stop;
	pthread_t thread;
	bool started;
	struct meta cur;		/* deep copy of the active instance's meta */
	struct meta urgent_new;		/* from take_now to swapped, on the mux thread */
	uint64_t rotations;
	uint64_t last_pause_ns;
	uint64_t events_failed;		/* events that could not be recorded */
};

static int64_t now_realtime_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_REALTIME) / 1000000);
}

static void event_id_new(char *buf)
{
	uint8_t rnd[16] = {0};
	size_t i;

	(void)getrandom(rnd, sizeof(rnd), 0);
	for (i = 0; i < sizeof(rnd); i++)
		sprintf(buf + 2 * i, "%02x", rnd[i]);
}

/*
 * Encode one phase of the event and record it in the outbox, whose thread
 * delivers it to the hooks of that phase.  held: not before
 * outbox_release().  Returns the record's number, 0 if none was made.
 */
static uint64_t deliver(struct rotate *r, struct event_rotation *ev, const char *phase, bool held)
{
	char *json = NULL;
	uint64_t seq = 0;
	int e;

	ev->phase = phase;
	e = event_rotation_encode(ev, &json);
	if (e == 0)
		e = outbox_put(r->outbox, ev->id, phase, ev->new->id, held, json, &seq);
	if (e < 0) {
		log_err_errno(e, "rotate: cannot record event id=%s phase=%s", ev->id, phase);
		pthread_mutex_lock(&r->lock);
		r->events_failed++;
		pthread_mutex_unlock(&r->lock);
	}
	free(json);

	return seq;
}

/* The swap waits for prepare, each hook up to its timeout; then it goes on regardless. */
static void wait_prepare(struct rotate *r, uint64_t seq, const char *id)
{
	uint64_t t0 = util_now_ns(CLOCK_MONOTONIC);
	int e;

	e = outbox_wait(r->outbox, seq, UINT64_MAX);
	if (e == -ETIMEDOUT)
		log_warn("rotate: prepare not delivered in time, swapping anyway id=%s elapsed_ms=%llu",
			 id, (unsigned long long)((util_now_ns(CLOCK_MONOTONIC) - t0) / 1000000));
	else if (e < 0)
		log_warn("rotate: prepare delivery failed, swapping anyway id=%s", id);
}

static void event_fill(struct rotate *r, struct event_rotation *ev, const char *id,
		       const char *reason, int64_t time_ms, const struct meta *old,
		       const struct meta *new)
{
	struct mux_stats s = {0};

	if (r->mux)
		mux_stats_get(r->mux, &s);
	memset(ev, 0, sizeof(*ev));
	ev->id = id;
	ev->reason = reason;
	ev->time_ms = time_ms;
	ev->old = old;
	ev->new = new;
	ev->commands = s.inst_commands;
	ev->quotes = s.inst_quotes;
	ev->rotations = s.rotations;
}

/* After a short delay, TPM2_Shutdown, stop the process, move the state to retired/. */
static void retire(struct rotate *r, struct inst *old, const char *id)
{
	struct timespec delay = { .tv_nsec = ROTATE_RETIRE_DELAY_MS * 1000000L };
	uint8_t cmd[16];
	uint8_t rsp[64];
	size_t len;
	size_t rlen;
	int e;

	(void)nanosleep(&delay, NULL);
	e = tpmcmd_build_shutdown(false, cmd, sizeof(cmd), &len);
	if (e == 0)
		e = inst_transmit(old, 0, cmd, len, rsp, sizeof(rsp), &rlen);
	if (e < 0)
		log_warn_errno(e, "rotate: shutdown of retired instance failed inst=%s", id);
	inst_stop(old);
	e = pool_retire(r->pool, id);
	if (e < 0)
		log_warn_errno(e, "rotate: cannot move retired instance inst=%s", id);
	else
		log_info("rotate: retired inst=%s", id);
}

static void set_cur(struct rotate *r, const struct meta *m)
{
	struct meta copy;

	if (meta_copy(m, &copy) < 0) {
		meta_clear(&copy);
		memset(&copy, 0, sizeof(copy));
		snprintf(copy.id, sizeof(copy.id), "%s", m->id);
	}
	pthread_mutex_lock(&r->lock);
	meta_clear(&r->cur);
	r->cur = copy;
	pthread_mutex_unlock(&r->lock);
}

/*
 * Run two read-only commands the clients are sure to need (the capability
 * read of the health probe, ReadPublic of a key) so that the first
 * client command after the swap finds the process's code and data paged
 * in: a fresh process pays some hundred microseconds of page faults once.
 */
static void warm_up(struct inst *in, const struct meta *m)
{
	uint8_t cmd[32];
	uint8_t rsp[1024];
	uint32_t key = m->ak.alg != META_ALG_NONE ? m->ak.handle :
		       m->n_ek ? m->ek[0].handle : 0;
	size_t len;
	size_t rlen;

	if (tpmcmd_build_getcap(TPM2_CAP_TPM_PROPERTIES, TPM2_PT_HR_LOADED_AVAIL, 12, cmd,
				sizeof(cmd), &len) == 0)
		(void)inst_transmit(in, 0, cmd, len, rsp, sizeof(rsp), &rlen);
	if (key && tpmcmd_build_readpublic(key, cmd, sizeof(cmd), &len) == 0)
		(void)inst_transmit(in, 0, cmd, len, rsp, sizeof(rsp), &rlen);
}

/*
 * The instance is live now: its saved volatile state (from manufacturing)
 * must never be loaded again.
 */
static void activated(struct inst *in, const struct meta *m)
{
	int e;

	e = inst_drop_volatile(in);
	if (e < 0)
		log_warn_errno(e, "rotate: cannot drop the saved volatile state inst=%s", m->id);
}

/* A planned rotation: the old instance keeps serving while prepare runs. */
static int rotate_planned(struct rotate *r, const char *reason)
{
	struct event_rotation ev;
	struct inst *next;
	struct inst *old;
	struct meta next_meta;
	struct meta new_copy = {0};
	struct meta cur_copy = {0};
	struct meta old_meta;
	char id[33];
	uint64_t pause;
	uint64_t prepare;
	uint64_t commit = 0;
	int64_t t = now_realtime_ms();
	int e;

	e = pool_take(r->pool, ROTATE_TAKE_TIMEOUT_MS, &next, &next_meta);
	if (e < 0)
		return log_err_errno(e, "rotate: no ready instance reason=%s", reason);
	e = meta_copy(&next_meta, &new_copy);
	pthread_mutex_lock(&r->lock);
	if (e == 0)
		e = meta_copy(&r->cur, &cur_copy);
	pthread_mutex_unlock(&r->lock);
	if (e < 0)
		goto err_put_back;
	event_id_new(id);
	event_fill(r, &ev, id, reason, t, &cur_copy, &new_copy);
	/* Both phases are on disk before prepare goes out: a crash cannot lose the commit. */
	prepare = deliver(r, &ev, "prepare", false);
	commit = deliver(r, &ev, "commit", true);
	wait_prepare(r, prepare, id);
	e = pool_mark_activated(r->pool, next_meta.id);
	if (e < 0) {
		log_err_errno(e, "rotate: cannot record the new active instance inst=%s",
			      next_meta.id);
		goto err_put_back;
	}
	/* before the swap: once the mux owns next, only whoever serves its commands may */
	activated(next, &new_copy);
	/*
	 * Only here: an urgent swap stalls a client meanwhile, and its replay
	 * warms the process anyway; at start the multiplexer's table load does.
	 */
	warm_up(next, &new_copy);
	e = mux_swap(r->mux, next, &next_meta, &old, &old_meta, &pause);
	if (e < 0)
		goto err_put_back;
	log_notice("rotate: swapped inst=%s old=%s reason=%s pause_us=%.1f", new_copy.id,
		   old_meta.id, reason, (double)pause / 1000.0);
	outbox_release(r->outbox, commit);
	set_cur(r, &new_copy);
	pthread_mutex_lock(&r->lock);
	r->rotations++;
	r->last_pause_ns = pause;
	pthread_mutex_unlock(&r->lock);
	retire(r, old, old_meta.id);
	meta_clear(&old_meta);
	meta_clear(&new_copy);
	meta_clear(&cur_copy);

	return 0;

err_put_back:
	/*
	 * A taken spare that cannot be activated is retired, not put back: its
	 * prepare event may be out already, and the pool makes another.
	 */
	outbox_drop(r->outbox, commit);
	meta_clear(&new_copy);
	meta_clear(&cur_copy);
	inst_stop(next);
	(void)pool_retire(r->pool, next_meta.id);
	meta_clear(&next_meta);
	return e;
}

/* Finish an urgent swap: hooks of both phases, then retirement. */
static void rotate_finish(struct rotate *r, struct rotate_job *job)
{
	struct event_rotation ev;

	event_fill(r, &ev, job->event_id, job->reason, job->time_ms, &job->old_meta,
		   &job->new_meta);
	(void)deliver(r, &ev, "prepare", false);
	(void)deliver(r, &ev, "commit", false);
	retire(r, job->old, job->old_meta.id);
	meta_clear(&job->new_meta);
	meta_clear(&job->old_meta);
	free(job);
}

static void check_age(struct rotate *r)
{
	struct mux_stats s;
	uint64_t max_age;

	pthread_mutex_lock(&r->lock);
	max_age = r->conf->max_age_ms;
	pthread_mutex_unlock(&r->lock);
	if (!max_age || !r->mux)
		return;
	mux_stats_get(r->mux, &s);
	if (util_now_ns(CLOCK_MONOTONIC) / 1000000 - s.active_since_ms >= max_age)
		rotate_request(r, "max_age");
}

static void *rotate_main(void *arg)
{
	struct rotate *r = arg;
	struct rotate_job *job;
	struct timespec ts;
	char reason[32];

	pthread_mutex_lock(&r->lock);
	while (!r->stop) {
		if ((job = r->jobs)) {
			r->jobs = job->next;
			r->pending[0] = '\0';
			pthread_mutex_unlock(&r->lock);
			rotate_finish(r, job);
			pthread_mutex_lock(&r->lock);
			continue;
		}
		if (r->pending[0]) {
			memcpy(reason, r->pending, sizeof(reason));
			pthread_mutex_unlock(&r->lock);
			if (rotate_planned(r, reason) < 0) {
				usleep(ROTATE_RETRY_MS * 1000);
				pthread_mutex_lock(&r->lock);
				continue;
			}
			pthread_mutex_lock(&r->lock);
			r->pending[0] = '\0';
			continue;
		}
		pthread_mutex_unlock(&r->lock);
		check_age(r);
		pthread_mutex_lock(&r->lock);
		if (r->pending[0] || r->jobs || r->stop)
			continue;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	}
	pthread_mutex_unlock(&r->lock);

	return NULL;
}

/*
 * Ask for a rotation (watermark, counter, age, SIGUSR1).  A request while
 * one is pending is merged into it.  Any thread; does not block.
 */
void rotate_request(struct rotate *r, const char *reason)
{
	pthread_mutex_lock(&r->lock);
	if (!r->pending[0])
		snprintf(r->pending, sizeof(r->pending), "%s", reason);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void mux_request(void *userdata, const char *reason)
{
	rotate_request(userdata, reason);
}

static int mux_take_now(void *userdata, const char *reason, struct inst **ret_inst,
			struct meta *ret_meta)
{
	struct rotate *r = userdata;
	struct inst *in;
	struct meta m;
	int e;

	e = pool_take(r->pool, ROTATE_URGENT_TAKE_MS, &in, &m);
	if (e < 0)
		return e;
	e = pool_mark_activated(r->pool, m.id);
	if (e < 0) {
		inst_stop(in);
		(void)pool_retire(r->pool, m.id);
		meta_clear(&m);
		return e;
	}
	activated(in, &m);
	set_cur(r, &m);
	meta_clear(&r->urgent_new);
	if (meta_copy(&m, &r->urgent_new) < 0) {
		meta_clear(&r->urgent_new);
		memset(&r->urgent_new, 0, sizeof(r->urgent_new));
		snprintf(r->urgent_new.id, sizeof(r->urgent_new.id), "%s", m.id);
	}
	*ret_inst = in;
	*ret_meta = m;

	return 0;
}

static void mux_swapped(void *userdata, const char *reason, struct inst *old,
			struct meta *old_meta, uint64_t pause_ns)
{
	struct rotate *r = userdata;
	struct rotate_job *job;
	struct rotate_job **p;

	log_notice("rotate: swapped inst=%s old=%s reason=%s pause_us=%.1f urgent=1",
		   r->urgent_new.id, old_meta->id, reason, (double)pause_ns / 1000.0);
	job = calloc(1, sizeof(*job));
	if (!job) {
		inst_stop(old);
		meta_clear(old_meta);
		meta_clear(&r->urgent_new);
		return;
	}
	job->new_meta = r->urgent_new;
	memset(&r->urgent_new, 0, sizeof(r->urgent_new));
	snprintf(job->reason, sizeof(job->reason), "%s", reason);
	event_id_new(job->event_id);
	job->time_ms = now_realtime_ms();
	job->old = old;
	job->old_meta = *old_meta;
	job->pause_ns = pause_ns;
	pthread_mutex_lock(&r->lock);
	r->rotations++;
	r->last_pause_ns = pause_ns;
	for (p = &r->jobs; *p; p = &(*p)->next)
		;
	*p = job;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* The callbacks the mux needs, bound to r. */
void rotate_mux_ops(struct rotate *r, struct mux_rotator *ret)
{
	ret->userdata = r;
	ret->request = mux_request;
	ret->take_now = mux_take_now;
	ret->swapped = mux_swapped;
}

/*
 * Create the rotator for configuration c and pool; events go to ob, which
 * must outlive it.  Returns 0 or -ENOMEM.  Main thread.
 */
int rotate_new(const struct conf *c, struct pool *pool, struct outbox *ob, struct rotate **ret)
{
	struct rotate *r;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->conf = c;
	r->pool = pool;
	r->outbox = ob;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	*ret = r;

	return 0;
}

/* Tell the hooks about the active instance, with old = null, before serving. */
static void announce(struct rotate *r, struct mux *m, const char *reason)
{
	struct event_rotation ev;
	char id[33];

	event_id_new(id);
	r->mux = NULL;
	event_fill(r, &ev, id, reason, now_realtime_ms(), NULL, &r->cur);
	(void)deliver(r, &ev, "prepare", false);
	/*
	 * Fast hooks (programs) get the first event before the device
	 * appears; slow ones (an agent restart needs the device) go on after.
	 */
	(void)outbox_wait(r->outbox, deliver(r, &ev, "commit", false), ROTATE_START_WAIT_MS);
	r->mux = m;
}

/*
 * The instance to serve at start-up: the one active when the daemon last
 * ran, resumed, or else the first ready one, announced to the hooks with
 * old = null.  A resumed one is announced again (reason "resume") when a
 * crash came between the prepare and the swap of a rotation, since the
 * verifier may have dropped it already.  Returns 0 or a negative errno.
 * Main thread, before the mux runs.
 */
int rotate_first(struct rotate *r, struct mux *m, struct inst **ret_inst, struct meta *ret_meta)
{
	char active[META_ID_MAX];
	int e;

	r->mux = m;
	if (pool_active_load(r->pool, active, sizeof(active)) == 0) {
		e = pool_resume(r->pool, active, ret_inst, ret_meta);
		if (e == 0) {
			log_notice("rotate: resumed active instance inst=%s", active);
			set_cur(r, ret_meta);
			if (outbox_resolve_held(r->outbox, active) > 0)
				announce(r, m, "resume");
			return 0;
		}
		log_err_errno(e, "rotate: cannot resume the active instance, taking a fresh one inst=%s",
			      active);
	}
	e = pool_take(r->pool, ROTATE_TAKE_TIMEOUT_MS, ret_inst, ret_meta);
	if (e < 0)
		return log_err_errno(e, "rotate: no instance became ready (manufacturing failed, see the lines above)");
	e = pool_mark_activated(r->pool, ret_meta->id);
	if (e < 0) {
		inst_stop(*ret_inst);
		meta_clear(ret_meta);
		return log_err_errno(e, "rotate: cannot record the active instance");
	}
	activated(*ret_inst, ret_meta);
	(void)outbox_resolve_held(r->outbox, ret_meta->id);
	set_cur(r, ret_meta);
	announce(r, m, "start");
	log_notice("rotate: activated inst=%s reason=start", ret_meta->id);

	return 0;
}

/* Start the rotator's thread.  Returns 0 or a negative errno. */
int rotate_start(struct rotate *r)
{
	int e;

	e = -pthread_create(&r->thread, NULL, rotate_main, r);
	if (e == 0)
		r->started = true;

	return e;
}

/* New configuration after SIGHUP; c must outlive the rotator or the next call. */
void rotate_set_conf(struct rotate *r, const struct conf *c)
{
	pthread_mutex_lock(&r->lock);
	r->conf = c;
	pthread_mutex_unlock(&r->lock);
	outbox_set_conf(r->outbox, c);
}

/* The status file's JSON, malloc'd.  Any thread. */
int rotate_status(struct rotate *r, char **ret_json)
{
	struct status_info info = {0};
	int e;

	if (r->mux)
		mux_stats_get(r->mux, &info.stats);
	info.pool_ready = pool_ready_count(r->pool);
	info.pool_size = pool_size(r->pool);
	pthread_mutex_lock(&r->lock);
	outbox_stats_get(r->outbox, &info.outbox);
	info.active = &r->cur;
	info.events_failed = r->events_failed + info.outbox.failed;
	info.rotation_pending = r->pending[0] != '\0';
	e = status_encode(&info, ret_json);
	pthread_mutex_unlock(&r->lock);

	return e;
}

/* Stop the thread after the rotation under way.  NULL is a no-op.  Main thread. */
void rotate_free(struct rotate *r)
{
	struct rotate_job *job;

	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (r->started)
		pthread_join(r->thread, NULL);
	while ((job = r->jobs)) {
		r->jobs = job->next;
		inst_stop(job->old);
		meta_clear(&job->old_meta);
		meta_clear(&job->new_meta);
		free(job);
	}
	meta_clear(&r->urgent_new);
	meta_clear(&r->cur);
	free(r);
}
