#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "internal.h"

#define POOL_MAX_READY 1024
#define POOL_BACKOFF_MAX_MS 30000
#define POOL_ACTIVATED "activated"
#define POOL_TAKE_GIVE_UP 3		/* failed manufactures in a row that end a wait */
/*
 * After a take, the refill waits this long: starting a process and
 * manufacturing compete for the CPU with the first commands on the fresh
 * instance, on a machine with as few as two cores.
 */
#define POOL_REFILL_QUIET_MS 100

struct pool_retiree {
	char id[META_ID_MAX];
	uint64_t wipe_at_ms;	/* CLOCK_MONOTONIC */
};

struct pool {
	char *state_dir;
	char *helper;
	char *ca_cert;
	char *ca_key;
	char inst_dir[PATH_MAX];
	char retired_dir[PATH_MAX];
	struct inst_manufacture_params params;
	struct inst_log inst_log;	/* read and written with __atomic */
	pool_log_fn log;
	uint64_t grace_ms;

	pthread_mutex_t lock;
	pthread_cond_t cond;	/* any change below; protected by lock */
	unsigned size;
	unsigned workers;
	char (*ready)[META_ID_MAX];	/* oldest first, spare not included */
	size_t n_ready;
	unsigned in_progress;	/* manufacturing jobs running */
	unsigned failures;	/* consecutive manufacturing failures */
	uint64_t backoff_until_ms;
	struct inst *spare;	/* warm, loaded from a ready instance */
	struct meta spare_meta;
	bool spare_loading;
	struct pool_retiree *retired;
	size_t n_retired;
	uint64_t quiet_until_ms;	/* no refill before this, after a take */
	bool stop;
	pthread_t thread;
};

static void pool_nolog(int prio, const char *fmt, ...)
{
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void id_new(char *buf, size_t size)
{
	struct timespec ts;
	uint16_t rnd = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	(void)getrandom(&rnd, sizeof(rnd), 0);
	snprintf(buf, size, "%010llx%05lx-%04x", (unsigned long long)ts.tv_sec,
		 ts.tv_nsec / 10000, rnd);
}

static int id_is_valid(const char *id)
{
	size_t len = strlen(id);

	if (len == 0 || len >= META_ID_MAX)
		return 0;
	return strspn(id, "0123456789abcdef-") == len;
}

static void path_of(const struct pool *p, const char *id, const char *file,
		    char *buf, size_t size)
{
	if (file)
		snprintf(buf, size, "%s/%s/%s", p->inst_dir, id, file);
	else
		snprintf(buf, size, "%s/%s", p->inst_dir, id);
}

/* Called with p->lock held. */
static void ready_add(struct pool *p, const char *id)
{
	size_t i;

	if (p->n_ready >= POOL_MAX_READY)
		return;
	/* ids sort by creation time: keep the list ordered, oldest first */
	for (i = p->n_ready; i > 0 && strcmp(p->ready[i - 1], id) > 0; i--)
		memcpy(p->ready[i], p->ready[i - 1], META_ID_MAX);
	snprintf(p->ready[i], META_ID_MAX, "%s", id);
	p->n_ready++;
}

/* Called with p->lock held; returns false when the list is empty. */
static bool ready_pop(struct pool *p, bool newest, char *ret_id)
{
	if (p->n_ready == 0)
		return false;
	if (newest) {
		memcpy(ret_id, p->ready[p->n_ready - 1], META_ID_MAX);
	} else {
		memcpy(ret_id, p->ready[0], META_ID_MAX);
		memmove(p->ready[0], p->ready[1], (p->n_ready - 1) * META_ID_MAX);
	}
	p->n_ready--;

	return true;
}

/* Called with p->lock held. */
static int retire_locked(struct pool *p, const char *id)
{
	char from[PATH_MAX];
	char to[PATH_MAX];
	struct pool_retiree *n;

	path_of(p, id, NULL, from, sizeof(from));
	snprintf(to, sizeof(to), "%s/%s", p->retired_dir, id);
	if (rename(from, to) < 0)
		return -errno;
	(void)fsutil_fsync_dir(p->inst_dir);
	n = realloc(p->retired, (p->n_retired + 1) * sizeof(*n));
	if (!n)
		return 0;	/* the next start wipes it */
	p->retired = n;
	snprintf(n[p->n_retired].id, META_ID_MAX, "%s", id);
	n[p->n_retired].wipe_at_ms = now_ms() + p->grace_ms;
	p->n_retired++;
	pthread_cond_broadcast(&p->cond);

	return 0;
}

struct pool_job {
	struct pool *pool;
	char id[META_ID_MAX];
};

/* Where instance processes started now log. */
static struct inst_log pool_inst_log(struct pool *p)
{
	return (struct inst_log){
		.to_syslog = __atomic_load_n(&p->inst_log.to_syslog, __ATOMIC_RELAXED),
		.level = __atomic_load_n(&p->inst_log.level, __ATOMIC_RELAXED),
	};
}

/*
 * Instance processes started from now on log as log says (after SIGHUP:
 * a new level); running ones keep what they were started with.  Any
 * thread.
 */
void pool_set_inst_log(struct pool *p, const struct inst_log *log)
{
	__atomic_store_n(&p->inst_log.to_syslog, log->to_syslog, __ATOMIC_RELAXED);
	__atomic_store_n(&p->inst_log.level, log->level, __ATOMIC_RELAXED);
}

static int job_manufacture(struct pool *p, const char *id)
{
	struct inst_log log;
	char tmp[PATH_MAX];
	char final[PATH_MAX];
	uint64_t t0 = now_ms();
	int r;

	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", p->inst_dir, id);
	path_of(p, id, NULL, final, sizeof(final));
	r = fsutil_mkdir(tmp, 0700);
	if (r < 0)
		return r;
	log = pool_inst_log(p);
	r = inst_manufacture(p->helper, &log, tmp, id, &p->params);
	if (r == 0 && rename(tmp, final) < 0)
		r = -errno;
	if (r == 0)
		r = fsutil_fsync_dir(p->inst_dir);
	if (r < 0) {
		(void)fsutil_rm_rf(tmp);
		return r;
	}
	p->log(LOG_INFO, "pool: manufactured inst=%s elapsed_ms=%llu", id,
	       (unsigned long long)(now_ms() - t0));

	return 0;
}

static void *job_main(void *arg)
{
	struct pool_job *job = arg;
	struct pool *p = job->pool;
	uint64_t delay;
	int r;

	r = job_manufacture(p, job->id);
	pthread_mutex_lock(&p->lock);
	if (r == 0) {
		ready_add(p, job->id);
		p->failures = 0;
	} else {
		p->failures++;
		delay = 100ull << (p->failures < 9 ? p->failures : 9);
		if (delay > POOL_BACKOFF_MAX_MS)
			delay = POOL_BACKOFF_MAX_MS;
		p->backoff_until_ms = now_ms() + delay;
		p->log(LOG_ERR, "pool: manufacturing failed inst=%s attempt=%u err=\"%s\" retry_ms=%llu",
		       job->id, p->failures, strerror(-r), (unsigned long long)delay);
	}
	p->in_progress--;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	free(job);

	return NULL;
}

/* Called with p->lock held. */
static void jobs_start(struct pool *p)
{
	struct pool_job *job;
	pthread_attr_t attr;
	pthread_t t;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (!p->stop && p->in_progress < p->workers &&
	       p->n_ready + (p->spare || p->spare_loading) + p->in_progress < p->size &&
	       now_ms() >= p->backoff_until_ms) {
		job = calloc(1, sizeof(*job));
		if (!job)
			break;
		job->pool = p;
		id_new(job->id, sizeof(job->id));
		if (pthread_create(&t, &attr, job_main, job) != 0) {
			free(job);
			break;
		}
		p->in_progress++;
		/* ids must differ even when two jobs start in one tick */
		usleep(20);
	}
	pthread_attr_destroy(&attr);
}

/* Called with p->lock held; drops it while the process starts. */
static void spare_load(struct pool *p)
{
	struct inst_log log;
	char id[META_ID_MAX];
	char path[PATH_MAX];
	struct inst *in = NULL;
	struct meta m = {0};
	int r;

	if (p->spare || p->spare_loading || !ready_pop(p, false, id))
		return;
	p->spare_loading = true;
	pthread_mutex_unlock(&p->lock);
	path_of(p, id, "meta", path, sizeof(path));
	r = meta_load(path, &m);
	if (r == 0) {
		path_of(p, id, NULL, path, sizeof(path));
		log = pool_inst_log(p);
		r = inst_start(p->helper, &log, path, true, &in);
	}
	pthread_mutex_lock(&p->lock);
	p->spare_loading = false;
	if (r < 0) {
		p->log(LOG_ERR, "pool: cannot load ready instance, discarding it inst=%s err=\"%s\"",
		       id, strerror(-r));
		meta_clear(&m);
		(void)retire_locked(p, id);
	} else {
		p->spare = in;
		p->spare_meta = m;
		p->log(LOG_DEBUG, "pool: warm spare ready inst=%s pid=%d", id, (int)inst_pid(in));
	}
	pthread_cond_broadcast(&p->cond);
}

/* Called with p->lock held: wipe retired instances whose grace is over. */
static void retired_wipe(struct pool *p)
{
	char path[PATH_MAX];
	uint64_t now = now_ms();
	size_t i = 0;

	while (i < p->n_retired) {
		if (p->retired[i].wipe_at_ms > now) {
			i++;
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", p->retired_dir, p->retired[i].id);
		(void)fsutil_rm_rf(path);
		p->log(LOG_INFO, "pool: wiped retired instance inst=%s", p->retired[i].id);
		p->retired[i] = p->retired[--p->n_retired];
	}
}

/* Called with p->lock held: drop ready instances above the size. */
static void ready_trim(struct pool *p)
{
	char id[META_ID_MAX];

	while (p->n_ready + (p->spare != NULL) > p->size && p->n_ready > 0 &&
	       ready_pop(p, true, id)) {
		p->log(LOG_INFO, "pool: pool shrunk, retiring ready instance inst=%s", id);
		(void)retire_locked(p, id);
	}
}

static void *pool_main(void *arg)
{
	struct pool *p = arg;
	struct timespec ts;
	uint64_t wait_ms;
	uint64_t now;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		wait_ms = 200;
		ready_trim(p);
		now = now_ms();
		if (now >= p->quiet_until_ms) {
			jobs_start(p);
			spare_load(p);
		} else {
			wait_ms = p->quiet_until_ms - now;
		}
		retired_wipe(p);
		if (p->stop)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)wait_ms * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	}
	pthread_mutex_unlock(&p->lock);

	return NULL;
}

static int pool_scan(struct pool *p)
{
	char active[META_ID_MAX] = "";
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	size_t len;

	(void)pool_active_load(p, active, sizeof(active));
	d = opendir(p->inst_dir);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		len = strlen(de->d_name);
		if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) {
			snprintf(path, sizeof(path), "%s/%s", p->inst_dir, de->d_name);
			(void)fsutil_rm_rf(path);
			p->log(LOG_NOTICE, "pool: discarded half-made instance path=%s", path);
			continue;
		}
		if (!id_is_valid(de->d_name) || strcmp(de->d_name, active) == 0)
			continue;
		path_of(p, de->d_name, POOL_ACTIVATED, path, sizeof(path));
		if (access(path, F_OK) == 0) {
			p->log(LOG_NOTICE, "pool: retiring instance left from an earlier run inst=%s",
			       de->d_name);
			(void)retire_locked(p, de->d_name);
			continue;
		}
		ready_add(p, de->d_name);
	}
	closedir(d);

	return 0;
}

static void pool_scan_retired(struct pool *p)
{
	struct dirent *de;
	DIR *d;
	struct pool_retiree *n;

	d = opendir(p->retired_dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !id_is_valid(de->d_name))
			continue;
		n = realloc(p->retired, (p->n_retired + 1) * sizeof(*n));
		if (!n)
			break;
		p->retired = n;
		snprintf(n[p->n_retired].id, META_ID_MAX, "%s", de->d_name);
		n[p->n_retired].wipe_at_ms = now_ms() + p->grace_ms;
		p->n_retired++;
	}
	closedir(d);
}

static int pool_dirs(struct pool *p)
{
	int r;

	snprintf(p->inst_dir, sizeof(p->inst_dir), "%s/instances", p->state_dir);
	snprintf(p->retired_dir, sizeof(p->retired_dir), "%s/retired", p->state_dir);
	r = fsutil_mkdir(p->inst_dir, 0700);
	if (r < 0)
		return r;

	return fsutil_mkdir(p->retired_dir, 0700);
}

/* Free the memory of p; its threads and processes are gone already. */
static void pool_release(struct pool *p)
{
	free(p->retired);
	free(p->ready);
	free(p->ca_key);
	free(p->ca_cert);
	free(p->helper);
	free(p->state_dir);
	free(p);
}

/*
 * Open the pool under c->state_dir: discard half-made instances, retire
 * those an earlier run activated, take stock of the ready ones and start
 * the background thread that refills the pool and keeps a warm spare.
 * Returns 0 or a negative errno.  Runs in the daemon's main thread.
 */
int pool_new(const struct pool_config *c, struct pool **ret)
{
	struct pool *p;
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->state_dir = strdup(c->state_dir);
	p->helper = strdup(c->helper);
	p->ca_cert = c->params.ca_cert ? strdup(c->params.ca_cert) : NULL;
	p->ca_key = c->params.ca_key ? strdup(c->params.ca_key) : NULL;
	p->ready = calloc(POOL_MAX_READY, META_ID_MAX);
	if (!p->state_dir || !p->helper || !p->ready) {
		r = -ENOMEM;
		goto err_free;
	}
	p->params = c->params;
	p->inst_log = c->inst_log;
	p->params.ca_cert = p->ca_cert;
	p->params.ca_key = p->ca_key;
	p->log = c->log ? c->log : pool_nolog;
	p->size = c->size;
	p->workers = c->workers ? c->workers : 1;
	p->grace_ms = c->grace_ms;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	r = pool_dirs(p);
	if (r < 0)
		goto err_free;
	pool_scan_retired(p);
	r = pool_scan(p);
	if (r < 0)
		goto err_free;
	r = -pthread_create(&p->thread, NULL, pool_main, p);
	if (r < 0)
		goto err_free;
	*ret = p;

	return 0;

err_free:
	pool_release(p);
	return r;
}

/*
 * Stop the background thread, wait for manufacturing jobs, stop the warm
 * spare (it stays ready on disk).  NULL is a no-op.
 */
void pool_free(struct pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	pthread_mutex_lock(&p->lock);
	while (p->in_progress > 0)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	inst_stop(p->spare);
	meta_clear(&p->spare_meta);
	pool_release(p);
}

/* Change the number of ready instances to keep (SIGHUP).  Any thread. */
void pool_set_size(struct pool *p, unsigned size)
{
	pthread_mutex_lock(&p->lock);
	p->size = size;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* Ready instances on disk, the warm spare included.  Any thread. */
unsigned pool_ready_count(struct pool *p)
{
	unsigned n;

	pthread_mutex_lock(&p->lock);
	n = (unsigned)p->n_ready + (p->spare != NULL) + p->spare_loading;
	pthread_mutex_unlock(&p->lock);

	return n;
}

unsigned pool_size(struct pool *p)
{
	unsigned n;

	pthread_mutex_lock(&p->lock);
	n = p->size;
	pthread_mutex_unlock(&p->lock);

	return n;
}

/*
 * Take the warm spare: a live instance process with a ready instance
 * loaded (TPM2_Startup already done).  Waits up to timeout_ms for one.
 * The caller owns the instance and the metadata; the instance is no longer
 * counted as ready, and must be passed to pool_mark_activated() before it
 * serves a client.  Returns 0, -ETIMEDOUT, or -EIO when nothing is ready
 * and manufacturing has failed POOL_TAKE_GIVE_UP times in a row.  Any thread.
 */
int pool_take(struct pool *p, uint64_t timeout_ms, struct inst **ret_inst,
	      struct meta *ret_meta)
{
	uint64_t deadline = now_ms() + timeout_ms;
	struct timespec ts;
	int r = 0;

	pthread_mutex_lock(&p->lock);
	while (!p->spare) {
		uint64_t now = now_ms();

		if (now >= deadline || p->stop) {
			r = -ETIMEDOUT;
			goto out;
		}
		/* nothing ready and manufacturing keeps failing: say so now */
		if (p->failures >= POOL_TAKE_GIVE_UP && p->n_ready == 0 && !p->spare_loading) {
			r = -EIO;
			goto out;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)((deadline - now) / 1000);
		ts.tv_nsec += (long)((deadline - now) % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	}
	*ret_inst = p->spare;
	*ret_meta = p->spare_meta;
	p->spare = NULL;
	p->quiet_until_ms = now_ms() + POOL_REFILL_QUIET_MS;
	memset(&p->spare_meta, 0, sizeof(p->spare_meta));
	pthread_cond_broadcast(&p->cond);
out:
	pthread_mutex_unlock(&p->lock);

	return r;
}

/*
 * Record durably that instance id is the active one: the marker file in
 * its directory (so it is never handed out again, even after a crash) and
 * <state_dir>/active.  Returns 0 or a negative errno.  Any thread.
 */
int pool_mark_activated(struct pool *p, const char *id)
{
	char path[PATH_MAX];
	char line[META_ID_MAX + 1];
	int r;

	path_of(p, id, POOL_ACTIVATED, path, sizeof(path));
	r = fsutil_write_atomic(path, "", 0, 0600);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/active", p->state_dir);
	snprintf(line, sizeof(line), "%s\n", id);

	return fsutil_write_atomic(path, line, strlen(line), 0600);
}

/*
 * Read the id of the instance that was active when the daemon last ran.
 * Returns 0, -ENOENT when there is none, or -EINVAL when the file is bad.
 */
int pool_active_load(struct pool *p, char *ret_id, size_t size)
{
	char path[PATH_MAX];
	char *buf;
	int r;

	snprintf(path, sizeof(path), "%s/active", p->state_dir);
	r = fsutil_read_file(path, META_ID_MAX + 1, &buf, NULL);
	if (r < 0)
		return r == -EFBIG ? -EINVAL : r;
	buf[strcspn(buf, "\n")] = '\0';
	if (!id_is_valid(buf) || strlen(buf) >= size) {
		free(buf);
		return -EINVAL;
	}
	snprintf(ret_id, size, "%s", buf);
	free(buf);

	return 0;
}

/*
 * Start the instance id again after a daemon restart.  After a clean stop
 * its saved volatile state resumes it where it was; after a crash only the
 * permanent state is there, and TPM2_Startup(CLEAR) follows, as after a
 * TPM reset.  Either way the volatile file is dropped once loaded, so a
 * later crash never resumes stale state.  Returns 0 or a negative errno.
 * Main thread, at start-up.
 */
int pool_resume(struct pool *p, const char *id, struct inst **ret_inst,
		struct meta *ret_meta)
{
	char path[PATH_MAX];
	struct inst_log log;
	struct inst *in;
	struct meta m = {0};
	bool clean;
	int r;

	if (!id_is_valid(id))
		return -EINVAL;
	path_of(p, id, "meta", path, sizeof(path));
	r = meta_load(path, &m);
	if (r < 0)
		return r;
	path_of(p, id, POOL_FILE_VOLATILE, path, sizeof(path));
	clean = access(path, F_OK) == 0;
	path_of(p, id, NULL, path, sizeof(path));
	log = pool_inst_log(p);
	r = inst_start(p->helper, &log, path, clean, &in);
	if (r < 0 && clean) {
		p->log(LOG_WARNING, "pool: saved volatile state unusable, resetting inst=%s err=\"%s\"",
		       id, strerror(-r));
		clean = false;
		r = inst_start(p->helper, &log, path, false, &in);
	}
	if (r < 0)
		goto err_meta;
	r = clean ? inst_drop_volatile(in) : inst_startup(in);
	if (r < 0)
		goto err_stop;
	p->log(LOG_INFO, "pool: resumed inst=%s state=%s", id, clean ? "saved" : "reset");
	*ret_inst = in;
	*ret_meta = m;

	return 0;

err_stop:
	inst_stop(in);
err_meta:
	meta_clear(&m);
	return r;
}

/*
 * Move instance id, whose process has been stopped, out of the pool into
 * <state_dir>/retired, to be wiped after the grace period.  Returns 0 or a
 * negative errno.  Any thread.
 */
int pool_retire(struct pool *p, const char *id)
{
	int r;

	pthread_mutex_lock(&p->lock);
	r = retire_locked(p, id);
	pthread_mutex_unlock(&p->lock);

	return r;
}
