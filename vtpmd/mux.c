#include "mux.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tss2/tss2_tpm2_types.h>

#include "log.h"
#include "space.h"
#include "tpmcmd.h"
#include "util.h"

#define MUX_MAX_QUEUED 4096
#define MUX_TAKE_TIMEOUT_MS 10000
/*
 * How long a FUSE thread running a tpm0 command itself (see mux_submit())
 * waits for the answer before it hands the command to the mux thread:
 * a client killed in write(2) waits for no longer than this.  After the
 * first MUX_INLINE_QUICK_US it lets another FUSE thread read requests;
 * until then other requests wait, which costs them little (TPM commands
 * wait for the instance anyway), while handing over costs the client's
 * poll and read a wake-up of another thread, likely on another CPU.  An
 * ECC quote fits in the quick part, an RSA one mostly.
 */
#define MUX_INLINE_WAIT_US 10000
#define MUX_INLINE_QUICK_US 5000

/* A tpmrm0 open: its resource-manager space. */
struct mux_client {
	struct mux_client *next;	/* in m->clients (mux thread) or m->clients_new (lock) */
	struct space *space;
};

struct mux_req {
	struct mux_req *next;
	struct fusedev_file *file;	/* holds a reference; NULL for a close */
	struct mux_client *client;	/* tpmrm0, or NULL for tpm0 */
	bool close;			/* flush and free client */
	size_t len;
	uint8_t cmd[];
};

struct mux_policy {
	unsigned session_watermark;
	unsigned object_watermark;
	unsigned lockout_margin;
	uint64_t max_quotes;
	uint64_t max_commands;
	bool on_exhaustion;
	uint64_t command_timeout_ms;	/* given to each instance made active */
};

struct mux {
	struct mux_rotator rot;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* queue, swap and stop; protected by lock */
	/*
	 * One FIFO for every open: an open has at most one command queued
	 * (a second write is EBUSY until the answer is read), so first come
	 * first served takes the opens in turn and none can starve another.
	 */
	struct mux_req *head;		/* protected by lock */
	struct mux_req **tail;
	size_t queued;
	bool stop;
	/* a swap the rotator asked for; protected by lock */
	struct inst *swap_next;
	struct meta *swap_meta;
	bool swap_done;
	int swap_result;
	struct inst *swap_old;
	struct meta swap_old_meta;
	uint64_t swap_pause_ns;

	/*
	 * Who runs commands on the active instance: the mux thread, or a FUSE
	 * thread that found the mux idle (busy), until it hands its command
	 * over (handover) or is done.  Protected by lock.
	 */
	bool busy;
	struct mux_req *handover;	/* a tpm0 command whose answer is pending */
	bool handover_waiting;		/* still in the instance */
	int handover_r;			/* else its result, the answer in rsp */
	size_t handover_rlen;
	uint64_t handover_t0;
	const char *handover_reason;	/* to swap, or NULL */
	bool handover_gap;		/* the context counter moved: gap_check() */
	bool probe_due;			/* a health probe before the next command */

	struct mux_policy policy;	/* protected by lock */
	struct space_limits limits;	/* for new tpmrm0 opens; protected by lock */
	unsigned max_opens;		/* protected by lock */
	unsigned opens;			/* tpmrm0 opens not yet closed; protected by lock */
	struct mux_client *clients_new;	/* opened, not yet seen by the mux thread; lock */
	struct mux_stats stats;		/* protected by lock */
	bool rotation_asked;		/* until the next swap; protected by lock */

	/* used by whoever is busy (the mux thread, or a FUSE thread inline) */
	struct inst *active;
	struct meta meta;
	struct tpmcmd_table *table;
	struct mux_client *clients;
	struct space_tpm tpm;		/* the active instance, for the spaces */
	uint8_t cmd[INST_BUF_MAX];	/* a tpmrm0 command as the instance gets it */
	uint8_t rsp[INST_BUF_MAX];
	pthread_t thread;
	bool started;
};

static void policy_from_conf(struct mux_policy *p, const struct conf *c)
{
	p->session_watermark = c->session_watermark;
	p->object_watermark = c->object_watermark;
	p->lockout_margin = c->lockout_margin;
	p->max_quotes = c->max_quotes;
	p->max_commands = c->max_commands;
	p->on_exhaustion = c->on_exhaustion;
	p->command_timeout_ms = c->command_timeout_ms;
}

static void limits_from_conf(struct space_limits *l, const struct conf *c)
{
	l->max_objects = c->rm_max_objects;
	l->max_sessions = c->rm_max_sessions;
	l->max_pending = c->rm_max_pending;
}

static int tpm_transmit(void *userdata, const uint8_t *cmd, size_t len, uint8_t *rsp,
			size_t size, size_t *ret_len)
{
	struct mux *m = userdata;

	return inst_transmit(m->active, 0, cmd, len, rsp, size, ret_len);
}

/*
 * Create a multiplexer with the rotation policy of c; it runs nothing until
 * mux_start().  Returns 0 or -ENOMEM.
 */
int mux_new(const struct conf *c, const struct mux_rotator *rot, struct mux **ret)
{
	struct mux *m;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	if (tpmcmd_table_new(&m->table) < 0) {
		free(m);
		return -ENOMEM;
	}
	m->rot = *rot;
	m->tail = &m->head;
	policy_from_conf(&m->policy, c);
	limits_from_conf(&m->limits, c);
	m->max_opens = c->rm_max_opens;
	m->tpm.userdata = m;
	m->tpm.transmit = tpm_transmit;
	m->stats.sessions_avail = -1;
	m->stats.transient_avail = -1;
	m->stats.lockout_counter = -1;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	*ret = m;

	return 0;
}

/* New policy after SIGHUP.  Any thread. */
void mux_set_policy(struct mux *m, const struct conf *c)
{
	pthread_mutex_lock(&m->lock);
	policy_from_conf(&m->policy, c);
	limits_from_conf(&m->limits, c);
	m->max_opens = c->rm_max_opens;
	pthread_mutex_unlock(&m->lock);
}

static int exchange(struct mux *m, const uint8_t *cmd, size_t len, size_t *ret_len)
{
	return inst_transmit(m->active, 0, cmd, len, m->rsp, sizeof(m->rsp), ret_len);
}

/* Learn each command's handle count from the instance (TPM_CAP_COMMANDS). */
static int table_load(struct mux *m)
{
	uint8_t cmd[32];
	uint32_t next = TPM2_CC_FIRST;
	size_t len;
	size_t rlen;
	int r;

	while (next) {
		r = tpmcmd_build_getcap(TPM2_CAP_COMMANDS, next, TPM2_MAX_CAP_CC,
					cmd, sizeof(cmd), &len);
		if (r == 0)
			r = exchange(m, cmd, len, &rlen);
		if (r == 0)
			r = tpmcmd_table_add(m->table, m->rsp, rlen, &next);
		if (r < 0)
			return r;
	}

	return 0;
}

/*
 * Called with m->lock held by whoever is busy (the mux thread or a FUSE
 * thread inline), or once the mux thread has stopped: take the opens made
 * meanwhile.
 */
static void clients_adopt(struct mux *m)
{
	struct mux_client *c = m->clients_new;

	if (!c)
		return;
	while (c->next)
		c = c->next;
	c->next = m->clients;
	m->clients = m->clients_new;
	m->clients_new = NULL;
}

/*
 * Called with m->lock held.  Every space's contexts belong to the instance
 * that is going: forget them, so their handles answer TPM_RC_HANDLE.
 */
static void set_active(struct mux *m, struct inst *in, struct meta *meta)
{
	struct mux_client *c;

	clients_adopt(m);
	for (c = m->clients; c; c = c->next)
		space_reset(c->space);
	m->tpm.next_seq = 0;
	m->active = in;
	inst_set_timeout(in, m->policy.command_timeout_ms);
	m->meta = *meta;
	memset(meta, 0, sizeof(*meta));
	snprintf(m->stats.active, sizeof(m->stats.active), "%s", m->meta.id);
	m->stats.inst_commands = 0;
	m->stats.inst_quotes = 0;
	m->stats.active_since_ms = util_now_ns(CLOCK_MONOTONIC) / 1000000;
	m->stats.sessions_avail = -1;
	m->stats.transient_avail = -1;
	m->stats.lockout_counter = -1;
	m->rotation_asked = false;
}

/* Called with m->lock held, on the mux thread. */
static void ask_rotation(struct mux *m, const char *reason)
{
	if (m->rotation_asked)
		return;
	m->rotation_asked = true;
	pthread_mutex_unlock(&m->lock);
	m->rot.request(m->rot.userdata, reason);
	pthread_mutex_lock(&m->lock);
}

/* Health probe between two client commands; may ask for a rotation. */
static void probe(struct mux *m)
{
	struct tpmcmd_health h;
	uint8_t cmd[32];
	size_t len;
	size_t rlen;
	const char *why = NULL;
	int r;

	r = tpmcmd_build_getcap(TPM2_CAP_TPM_PROPERTIES, TPM2_PT_HR_LOADED_AVAIL, 12,
				cmd, sizeof(cmd), &len);
	if (r == 0)
		r = exchange(m, cmd, len, &rlen);
	if (r == 0)
		r = tpmcmd_parse_health(m->rsp, rlen, &h);
	if (r < 0) {
		log_warn_errno(r, "mux: health probe failed inst=%s", m->meta.id);
		return;
	}
	pthread_mutex_lock(&m->lock);
	m->stats.sessions_avail = h.sessions_avail;
	m->stats.transient_avail = h.transient_avail;
	m->stats.lockout_counter = h.lockout_counter;
	if (m->policy.session_watermark && h.sessions_avail >= 0 &&
	    h.sessions_avail <= (int64_t)m->policy.session_watermark)
		why = "session_watermark";
	else if (m->policy.object_watermark && h.transient_avail >= 0 &&
		 h.transient_avail <= (int64_t)m->policy.object_watermark)
		why = "object_watermark";
	/* only after a failure: a margin of max_auth_fail must not rotate at every probe */
	else if (h.lockout_counter > 0 && h.max_auth_fail > 0 &&
		 h.lockout_counter + (int64_t)m->policy.lockout_margin >= h.max_auth_fail)
		why = "lockout_watermark";
	if (why) {
		log_info("mux: watermark reached inst=%s reason=%s sessions_avail=%lld transient_avail=%lld lockout=%lld",
			 m->meta.id, why, (long long)h.sessions_avail,
			 (long long)h.transient_avail, (long long)h.lockout_counter);
		ask_rotation(m, why);
	}
	pthread_mutex_unlock(&m->lock);
}

/*
 * A swap the rotator prepared, between two commands: by the mux thread,
 * or by a FUSE thread whose command would otherwise wait for it.  Called
 * with m->lock held while nobody is busy.
 */
static void swap_pending(struct mux *m)
{
	uint64_t t0 = util_now_ns(CLOCK_MONOTONIC);

	m->swap_old = m->active;
	m->swap_old_meta = m->meta;
	set_active(m, m->swap_next, m->swap_meta);
	m->stats.rotations++;
	m->swap_pause_ns = util_now_ns(CLOCK_MONOTONIC) - t0;
	m->stats.last_pause_ns = m->swap_pause_ns;
	m->swap_next = NULL;
	m->swap_meta = NULL;
	m->swap_result = 0;
	m->swap_done = true;
	pthread_cond_broadcast(&m->cond);
}

/*
 * The active instance answered with an exhaustion code (or failed): swap
 * now, on this thread.  Returns true when a fresh instance is active.
 */
static bool swap_urgent(struct mux *m, const char *reason)
{
	struct inst *old = m->active;
	struct meta old_meta = m->meta;
	struct inst *next;
	struct meta next_meta;
	uint64_t t0 = util_now_ns(CLOCK_MONOTONIC);
	uint64_t pause;
	int r;

	r = m->rot.take_now(m->rot.userdata, reason, &next, &next_meta);
	if (r < 0) {
		log_err_errno(r, "mux: no fresh instance for an exhausted one inst=%s reason=%s",
			      m->meta.id, reason);
		return false;
	}
	pthread_mutex_lock(&m->lock);
	set_active(m, next, &next_meta);
	m->stats.rotations++;
	pause = util_now_ns(CLOCK_MONOTONIC) - t0;
	m->stats.last_pause_ns = pause;
	pthread_mutex_unlock(&m->lock);
	m->rot.swapped(m->rot.userdata, reason, old, &old_meta, pause);

	return true;
}

static const char *exhaustion_reason(uint32_t rc)
{
	return rc == TPM2_RC_LOCKOUT ? "lockout" : "exhaustion";
}

/* Save again, in every space, the sessions saved before sequence before. */
static int refresh_all(struct mux *m, uint64_t before)
{
	struct mux_client *c;
	int r;

	for (c = m->clients; c; c = c->next) {
		r = space_refresh(c->space, &m->tpm, before);
		if (r < 0)
			return r;
	}

	return 0;
}

/*
 * A client's ContextSave of a session tells the instance's context counter
 * (TPMS_CONTEXT.sequence, then savedHandle), which tpm0 clients move too.
 */
static void seq_learn(struct mux *m, uint32_t cc, size_t rlen)
{
	uint64_t seq;
	uint8_t type;

	if (cc != TPM2_CC_ContextSave || rlen < TPMCMD_HEADER + 12 ||
	    tpmcmd_rc(m->rsp, rlen) != TPM2_RC_SUCCESS)
		return;
	seq = (uint64_t)util_be32(m->rsp + TPMCMD_HEADER) << 32 |
	      util_be32(m->rsp + TPMCMD_HEADER + 4);
	type = m->rsp[TPMCMD_HEADER + 8];
	if ((type == TPM2_HT_HMAC_SESSION || type == TPM2_HT_POLICY_SESSION) &&
	    seq >= m->tpm.next_seq)
		m->tpm.next_seq = seq + 1;
}

/*
 * Keep the oldest saved session of any space within SPACE_GAP_RESAVE saves
 * of the context counter, so TPM_RC_CONTEXT_GAP never comes.
 */
static int gap_check(struct mux *m)
{
	if (m->tpm.next_seq <= SPACE_GAP_RESAVE)
		return 0;

	return refresh_all(m, m->tpm.next_seq - SPACE_GAP_RESAVE);
}

/* Instance, space commit; a commit stopped by the context gap goes on after a refresh. */
static int rm_exchange(struct mux *m, struct space *s, size_t len, size_t *rlen)
{
	int r;

	r = exchange(m, m->cmd, len, rlen);
	if (r < 0) {
		space_reset(s);
		return r;
	}
	r = space_commit(s, &m->tpm, m->rsp, rlen, sizeof(m->rsp));
	if (r == -EAGAIN) {
		r = refresh_all(m, m->tpm.next_seq);
		if (r == 0)
			r = space_commit(s, &m->tpm, m->rsp, rlen, sizeof(m->rsp));
	}
	if (r == -EAGAIN) {
		/* the oldest session is not ours (a tpm0 client's) */
		space_reset(s);
		(void)tpmcmd_failure_response(TPM2_RC_CONTEXT_GAP, m->rsp, sizeof(m->rsp), rlen);
		r = 0;
	}

	return r;
}

/*
 * One tpmrm0 command through its space: prepare, instance, commit, on a
 * copy (the original stays for a retry).  TPM_RC_CONTEXT_GAP is the
 * resource manager's business: refresh the oldest sessions and retry once.
 */
static int rm_run(struct mux *m, struct mux_req *req, size_t *rlen)
{
	struct space *s = req->client->space;
	int attempt;
	int r = 0;

	for (attempt = 0; attempt < 2; attempt++) {
		memcpy(m->cmd, req->cmd, req->len);
		r = space_prepare(s, m->table, &m->tpm, m->cmd, req->len, m->rsp,
				  sizeof(m->rsp), rlen);
		if (r < 0)
			space_reset(s);
		if (r != 0)
			return r < 0 ? r : 0;
		r = rm_exchange(m, s, req->len, rlen);
		if (r < 0 || tpmcmd_rc(m->rsp, *rlen) != TPM2_RC_CONTEXT_GAP)
			return r;
		r = refresh_all(m, m->tpm.next_seq);
		if (r < 0)
			return r;
	}

	return r;
}

/* What follows every answer: the context counter, the gap. */
static int run_after(struct mux *m, struct mux_req *req, size_t rlen)
{
	seq_learn(m, tpmcmd_code(req->cmd, req->len), rlen);

	return gap_check(m);
}

/* One client command on the active instance: 0 with the answer in m->rsp, or -errno. */
static int run(struct mux *m, struct mux_req *req, size_t *rlen)
{
	int r;

	if (req->client)
		r = rm_run(m, req, rlen);
	else
		r = exchange(m, req->cmd, req->len, rlen);
	if (r == 0)
		r = run_after(m, req, *rlen);

	return r;
}

/*
 * After an exhaustion swap: run the command again on the fresh instance
 * when that is safe.  Through a space it always is: handles from the old
 * instance answer TPM_RC_HANDLE there.  True when m->rsp holds the answer.
 */
static bool replay(struct mux *m, struct mux_req *req, size_t *rlen)
{
	if (!req->client && !tpmcmd_is_replayable(m->table, req->cmd, req->len))
		return false;
	if (run(m, req, rlen) < 0)
		return false;
	pthread_mutex_lock(&m->lock);
	m->stats.replays++;
	pthread_mutex_unlock(&m->lock);

	return true;
}

static void count(struct mux *m, uint32_t cc, uint32_t rc)
{
	pthread_mutex_lock(&m->lock);
	m->stats.commands++;
	m->stats.inst_commands++;
	if (cc == TPM2_CC_Quote && rc == TPM2_RC_SUCCESS) {
		m->stats.quotes++;
		m->stats.inst_quotes++;
	}
	if (m->policy.max_commands && m->stats.inst_commands >= m->policy.max_commands)
		ask_rotation(m, "max_commands");
	else if (m->policy.max_quotes && m->stats.inst_quotes >= m->policy.max_quotes)
		ask_rotation(m, "max_quotes");
	pthread_mutex_unlock(&m->lock);
}

/*
 * The command failed (r < 0) or answered with an exhaustion code that the
 * policy of the moment rotates on: the reason to swap, or NULL.
 */
static const char *swap_reason(struct mux *m, int r, size_t rlen)
{
	uint32_t rc = r < 0 ? TPM2_RC_FAILURE : tpmcmd_rc(m->rsp, rlen);
	bool on_exhaustion;

	if (r < 0)
		return "instance_failure";
	pthread_mutex_lock(&m->lock);
	on_exhaustion = m->policy.on_exhaustion;
	pthread_mutex_unlock(&m->lock);
	if (tpmcmd_rc_is_exhaustion(rc) && on_exhaustion)
		return exhaustion_reason(rc);

	return NULL;
}

/*
 * The client command req ran (r == 0, its answer in m->rsp) or failed:
 * swap (for reason, from swap_reason()) and replay if it must, answer the
 * client, count.  True when a health probe should follow.
 */
static bool serve_end(struct mux *m, struct mux_req *req, int r, size_t rlen, uint64_t t0,
		      const char *reason)
{
	uint32_t cc = tpmcmd_code(req->cmd, req->len);
	uint32_t rc;
	bool replayed = false;

	rc = r < 0 ? TPM2_RC_FAILURE : tpmcmd_rc(m->rsp, rlen);
	if (r < 0)
		log_err_errno(r, "mux: instance failed inst=%s cc=0x%x", m->meta.id, cc);
	else if (reason)
		log_notice("mux: instance exhausted inst=%s cc=0x%x rc=0x%x", m->meta.id, cc, rc);
	if (reason && swap_urgent(m, reason))
		replayed = replay(m, req, &rlen);
	if (replayed)
		rc = tpmcmd_rc(m->rsp, rlen);
	else if (r < 0)
		(void)tpmcmd_failure_response(rc, m->rsp, sizeof(m->rsp), &rlen);
	log_debug("mux: command cc=0x%x len=%zu rc=0x%x elapsed_us=%llu%s%s", cc, req->len, rc,
		  (unsigned long long)((util_now_ns(CLOCK_MONOTONIC) - t0) / 1000),
		  replayed ? " replayed=1" : "", req->client ? " rm=1" : "");
	fusedev_file_complete(req->file, m->rsp, rlen);

	count(m, cc, rc);

	return (rc == TPM2_RC_SUCCESS && tpmcmd_may_allocate(cc)) || tpmcmd_rc_is_auth_failure(rc);
}

/* Run one client command on the active instance and answer the client.  Mux thread. */
static void serve(struct mux *m, struct mux_req *req)
{
	uint64_t t0 = util_now_ns(CLOCK_MONOTONIC);
	size_t rlen = 0;
	int r;

	r = run(m, req, &rlen);
	if (serve_end(m, req, r, rlen, t0, swap_reason(m, r, rlen)))
		probe(m);
}

/* The end of a command: drop the queue's reference and the request. */
static void req_free(struct mux_req *req)
{
	fusedev_file_put(req->file);
	free(req);
}

/* Called with m->lock held: the mux thread has nothing to do, or a FUSE thread is busy. */
static bool mux_idle(const struct mux *m)
{
	if (m->busy)
		return !m->handover;

	return !m->head && !m->stop && !m->swap_next && !m->probe_due;
}

/*
 * Run a tpm0 command on the calling FUSE thread, which found the mux idle
 * and made itself busy: the answer is ready when write(2) returns, so the
 * client's poll sees it at once, with no thread hand-off and no poll
 * notification.  A command still running after MUX_INLINE_WAIT_US, or one
 * that failed or exhausted the instance (a swap, which may wait for the
 * pool), goes to the mux thread, which finishes it as any other; a health
 * probe is left to the mux thread too.  Releases busy.
 */
static void serve_inline(struct mux *m, struct mux_req *req)
{
	uint64_t t0 = util_now_ns(CLOCK_MONOTONIC);
	uint64_t seq = m->tpm.next_seq;
	const char *reason = NULL;
	size_t rlen = 0;
	bool want_probe;
	bool gap;
	int r;

	r = inst_send(m->active, 0, req->cmd, req->len);
	if (r == 0)
		r = inst_await(m->active, MUX_INLINE_QUICK_US, m->rsp, sizeof(m->rsp), &rlen);
	if (r == -EINPROGRESS) {
		fusedev_file_yield(req->file);
		r = inst_await(m->active, MUX_INLINE_WAIT_US - MUX_INLINE_QUICK_US, m->rsp,
			       sizeof(m->rsp), &rlen);
	}
	if (r == 0)
		seq_learn(m, tpmcmd_code(req->cmd, req->len), rlen);
	/* keeping the gap away may take many commands: not here */
	gap = m->tpm.next_seq != seq && m->tpm.next_seq > SPACE_GAP_RESAVE;
	if (r != -EINPROGRESS)
		reason = swap_reason(m, r, rlen);
	if (r == -EINPROGRESS || reason || gap) {
		pthread_mutex_lock(&m->lock);
		m->handover = req;
		m->handover_waiting = r == -EINPROGRESS;
		m->handover_r = r;
		m->handover_rlen = rlen;
		m->handover_t0 = t0;
		m->handover_reason = reason;
		m->handover_gap = gap;
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
		return;
	}

	want_probe = serve_end(m, req, r, rlen, t0, NULL);
	req_free(req);
	pthread_mutex_lock(&m->lock);
	m->busy = false;
	if (want_probe)
		m->probe_due = true;
	/* wake the mux thread only for work: a futex wake is a cross-CPU wake-up */
	if (!mux_idle(m))
		pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

/* Finish a command a FUSE thread handed over (the m->handover_* fields).  Mux thread, busy. */
static void serve_handover(struct mux *m, struct mux_req *req, bool waiting, int r,
			   size_t rlen, uint64_t t0, const char *reason, bool gap)
{
	if (waiting) {
		r = inst_await(m->active, -1, m->rsp, sizeof(m->rsp), &rlen);
		if (r == 0)
			r = run_after(m, req, rlen);
		reason = swap_reason(m, r, rlen);
	} else if (gap && r == 0 && !reason) {
		r = gap_check(m);
		reason = swap_reason(m, r, rlen);
	}
	if (serve_end(m, req, r, rlen, t0, reason))
		probe(m);
}

/* A tpmrm0 open is gone: flush what its space holds and free it.  Mux thread. */
static void client_close(struct mux *m, struct mux_client *client)
{
	struct mux_client **p;

	for (p = &m->clients; *p && *p != client; p = &(*p)->next)
		;
	if (*p)
		*p = client->next;
	if (m->active)
		space_flush(client->space, &m->tpm);
	space_free(client->space);
	free(client);
}

static void *mux_main(void *arg)
{
	struct mux *m = arg;
	struct mux_req *req;

	pthread_mutex_lock(&m->lock);
	for (;;) {
		while (mux_idle(m))
			pthread_cond_wait(&m->cond, &m->lock);
		if (m->handover) {
			/* busy stays set: it passes from the FUSE thread to this one */
			struct mux_req *h = m->handover;
			bool waiting = m->handover_waiting;
			int hr = m->handover_r;
			size_t hlen = m->handover_rlen;
			uint64_t t0 = m->handover_t0;
			const char *why = m->handover_reason;
			bool gap = m->handover_gap;

			m->handover = NULL;
			pthread_mutex_unlock(&m->lock);
			serve_handover(m, h, waiting, hr, hlen, t0, why, gap);
			req_free(h);
			pthread_mutex_lock(&m->lock);
			m->busy = false;
			continue;
		}
		if (m->swap_next)
			swap_pending(m);
		if (m->stop)
			break;
		if (m->probe_due) {
			m->probe_due = false;
			m->busy = true;
			pthread_mutex_unlock(&m->lock);
			probe(m);
			pthread_mutex_lock(&m->lock);
			m->busy = false;
			continue;
		}
		req = m->head;
		if (!req)
			continue;
		m->head = req->next;
		if (!m->head)
			m->tail = &m->head;
		m->queued--;
		m->busy = true;
		clients_adopt(m);
		pthread_mutex_unlock(&m->lock);
		if (req->close)
			client_close(m, req->client);
		else
			serve(m, req);
		req_free(req);
		pthread_mutex_lock(&m->lock);
		m->busy = false;
	}
	pthread_mutex_unlock(&m->lock);

	return NULL;
}

/*
 * Start serving with active (whose TPM2_Startup is done) and its metadata;
 * the mux owns both from now on.  Returns 0 or a negative errno.  Main
 * thread.
 */
int mux_start(struct mux *m, struct inst *active, struct meta *meta)
{
	int r;

	set_active(m, active, meta);
	r = table_load(m);
	if (r < 0)
		return log_err_errno(r, "mux: cannot read the command table inst=%s", m->meta.id);
	r = -pthread_create(&m->thread, NULL, mux_main, m);
	if (r < 0)
		return r;
	m->started = true;

	return 0;
}

/*
 * Stop the mux thread, after the command it runs; from now on mux_swap()
 * answers -ESHUTDOWN and nothing calls the rotator.  Idempotent.  Main
 * thread.
 */
void mux_stop(struct mux *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	m->stop = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	if (m->started)
		pthread_join(m->thread, NULL);
	m->started = false;
}

/*
 * Stop the mux thread (mux_stop()); queued commands are dropped (their
 * files released).  The active instance and its metadata go back to the
 * caller.  Main thread.
 */
void mux_free(struct mux *m, struct inst **ret_active, struct meta *ret_meta)
{
	struct mux_req *req;

	if (!m)
		return;
	mux_stop(m);
	clients_adopt(m);
	while ((req = m->head)) {
		m->head = req->next;
		if (req->close)
			client_close(m, req->client);
		fusedev_file_put(req->file);
		free(req);
	}
	while (m->clients)
		client_close(m, m->clients);
	*ret_active = m->active;
	*ret_meta = m->meta;
	tpmcmd_table_free(m->table);
	free(m);
}

/*
 * Queue one framing-checked command from an open device file.  A tpm0
 * command that finds the mux idle runs on the calling thread instead (see
 * serve_inline()), for at most MUX_INLINE_WAIT_US before it is handed to
 * the mux thread.  tpmrm0 commands always queue: the kernel serialises
 * writes to one FUSE file, so an open waiting there behind another's
 * command could not be killed.  Returns 0, or -EAGAIN when too many
 * commands are queued.  FUSE thread.
 */
int mux_submit(struct mux *m, struct fusedev_file *f, const uint8_t *cmd, size_t len)
{
	struct mux_req *req;

	req = malloc(sizeof(*req) + len);
	if (!req)
		return -ENOMEM;
	req->next = NULL;
	req->file = f;
	req->client = fusedev_file_get_data(f);
	req->close = false;
	req->len = len;
	memcpy(req->cmd, cmd, len);
	pthread_mutex_lock(&m->lock);
	if (m->queued >= MUX_MAX_QUEUED || m->stop) {
		pthread_mutex_unlock(&m->lock);
		free(req);
		return -EAGAIN;
	}
	fusedev_file_get(f);
	/* between two commands: the command that crosses a swap need not queue */
	if (m->swap_next && !m->busy && !m->head)
		swap_pending(m);
	if (!req->client && !m->busy && !m->head && !m->swap_next && !m->probe_due) {
		m->busy = true;
		pthread_mutex_unlock(&m->lock);
		serve_inline(m, req);
		return 0;
	}
	*m->tail = req;
	m->tail = &req->next;
	m->queued++;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);

	return 0;
}

/*
 * Make next the active instance between two commands, and hand the old one
 * and its metadata back.  Blocks until the switch is made, by the mux
 * thread or by the FUSE thread whose command crosses it (at most one
 * command's time).  *ret_pause_ns is how long the mux held new
 * commands for the switch.  Returns 0 or -ESHUTDOWN.  Rotator thread.
 */
int mux_swap(struct mux *m, struct inst *next, struct meta *next_meta,
	     struct inst **ret_old, struct meta *ret_old_meta, uint64_t *ret_pause_ns)
{
	int r;

	pthread_mutex_lock(&m->lock);
	if (m->stop) {
		pthread_mutex_unlock(&m->lock);
		return -ESHUTDOWN;
	}
	m->swap_next = next;
	m->swap_meta = next_meta;
	m->swap_done = false;
	pthread_cond_broadcast(&m->cond);
	while (!m->swap_done && !m->stop)
		pthread_cond_wait(&m->cond, &m->lock);
	r = m->swap_done ? m->swap_result : -ESHUTDOWN;
	if (r == 0) {
		*ret_old = m->swap_old;
		*ret_old_meta = m->swap_old_meta;
		*ret_pause_ns = m->swap_pause_ns;
		m->swap_old = NULL;
	}
	m->swap_next = NULL;
	m->swap_meta = NULL;
	pthread_mutex_unlock(&m->lock);

	return r;
}

/* A consistent copy of the counters.  Any thread. */
void mux_stats_get(struct mux *m, struct mux_stats *ret)
{
	pthread_mutex_lock(&m->lock);
	*ret = m->stats;
	pthread_mutex_unlock(&m->lock);
}

/*
 * A device file was opened: a tpmrm0 open gets its resource-manager space
 * (with the [rm] limits of the moment), attached to f.  tpm0 needs
 * nothing.  Returns 0, -EMFILE when [rm] max_opens tpmrm0 files are open,
 * or -ENOMEM.  FUSE thread.
 */
int mux_client_open(struct mux *m, struct fusedev_file *f)
{
	struct mux_client *c;
	struct space_limits l;

	if (fusedev_file_kind(f) != FUSEDEV_TPMRM0)
		return 0;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	l = m->limits;
	pthread_mutex_unlock(&m->lock);
	c->space = space_new(&l);
	if (!c->space) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_lock(&m->lock);
	if (m->opens >= m->max_opens) {
		pthread_mutex_unlock(&m->lock);
		space_free(c->space);
		free(c);
		return -EMFILE;
	}
	m->opens++;
	fusedev_file_set_data(f, c);
	c->next = m->clients_new;
	m->clients_new = c;
	pthread_mutex_unlock(&m->lock);

	return 0;
}

/*
 * The last user-space reference to f is gone (close, exit, SIGKILL): queue
 * the flush of everything its space holds, after any command of its still
 * queued; the mux thread does it, never the caller.  With no memory for
 * the request the space is leaked, not freed under the mux.  FUSE thread.
 */
void mux_client_close(struct mux *m, struct fusedev_file *f)
{
	struct mux_req *req;
	struct mux_client *c = fusedev_file_get_data(f);

	if (!c)
		return;
	pthread_mutex_lock(&m->lock);
	m->opens--;
	pthread_mutex_unlock(&m->lock);
	req = calloc(1, sizeof(*req));
	if (!req)
		return;
	req->client = c;
	req->close = true;
	fusedev_file_set_data(f, NULL);
	pthread_mutex_lock(&m->lock);
	*m->tail = req;
	m->tail = &req->next;
	m->queued++;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}
