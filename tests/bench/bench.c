/*
 * vtpmd-bench: the measuring client of scripts/bench.  Each mode prints
 * one JSON object per line on stdout; scripts/bench adds them up.
 *
 *   vtpmd-bench lat TCTI OP N       N timed runs of OP (after 5% warm-up)
 *   vtpmd-bench thr TCTI OP CLIENTS SECONDS
 *                                   CLIENTS threads, each with its own
 *                                   TCTI, running OP back to back
 *   vtpmd-bench raw PATH N          N GetRandom(16) as raw bytes on a
 *                                   device file: write, poll, read
 *   vtpmd-bench rot PATH PID STATUS COUNT
 *                                   back-to-back TPM2_ReadPublic(EK) on
 *                                   tpm0 while COUNT rotations are asked
 *                                   of PID with SIGUSR1, one at a time
 *                                   with the pool full again; the first
 *                                   answer that differs from the one
 *                                   before came from the new instance
 *
 * TCTI is "inproc:DIR" (libtpms in this process; TPM2_Startup is sent) or
 * a tpm2-tss TCTI loader string.  Exit status 0, or 1 after a line on
 * stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "workload.h"

#define BENCH_MAX_CLIENTS 64
#define BENCH_ROT_MAX_SAMPLES (4u << 20)
#define BENCH_ROT_TIMEOUT_MS 10000
#define BENCH_REFILL_TIMEOUT_MS 60000
#define BENCH_EK_ECC 0x81010002u

/* TPM2_GetRandom(16), TPM_ST_NO_SESSIONS */
static const uint8_t bench_getrandom16[] = {
	0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x10,
};

/* TPM2_ReadPublic(0x81010002), TPM_ST_NO_SESSIONS */
static const uint8_t bench_readpublic_ek[] = {
	0x80, 0x01, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x01, 0x73,
	0x81, 0x01, 0x00, 0x02,
};

static void print_samples(const char *op, const char *extra, const uint64_t *ns, size_t n)
{
	size_t i;

	printf("{\"op\": \"%s\"%s, \"samples_us\": [", op, extra ? extra : "");
	for (i = 0; i < n; i++)
		printf("%s%.2f", i ? ", " : "", (double)ns[i] / 1000.0);
	printf("]}\n");
	fflush(stdout);
}

static int mode_lat(const char *conf, const char *opname, size_t n)
{
	struct workload *w = NULL;
	enum workload_op op;
	uint64_t *ns;
	uint64_t t0;
	size_t warm = n / 20 + 1;
	size_t i;
	int r;

	if (workload_op_parse(opname, &op) < 0 || n == 0)
		return -EINVAL;
	ns = calloc(n, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	r = workload_open(conf, &w);
	if (r == 0 && strncmp(conf, "inproc:", 7) == 0)
		r = workload_startup(w);
	if (r == 0)
		r = workload_prepare(w, op);
	for (i = 0; r == 0 && i < warm; i++)
		r = workload_run(w, op);
	for (i = 0; r == 0 && i < n; i++) {
		t0 = workload_now_ns();
		r = workload_run(w, op);
		ns[i] = workload_now_ns() - t0;
	}
	if (r == 0)
		print_samples(opname, NULL, ns, n);
	workload_close(w);
	free(ns);

	return r;
}

struct thr {
	const char *conf;
	enum workload_op op;
	pthread_barrier_t *start;
	atomic_bool *stop;
	uint64_t count;
	int r;
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	struct workload *w = NULL;

	t->r = workload_open(t->conf, &w);
	if (t->r == 0)
		t->r = workload_prepare(w, t->op);
	if (t->r == 0)
		t->r = workload_run(w, t->op);
	pthread_barrier_wait(t->start);
	while (t->r == 0 && !atomic_load(t->stop)) {
		t->r = workload_run(w, t->op);
		if (t->r == 0)
			t->count++;
	}
	workload_close(w);

	return NULL;
}

static int mode_thr(const char *conf, const char *opname, unsigned clients, double secs)
{
	struct thr t[BENCH_MAX_CLIENTS];
	pthread_t tid[BENCH_MAX_CLIENTS];
	pthread_barrier_t start;
	atomic_bool stop = false;
	struct timespec ts = { (time_t)secs, (long)((secs - (time_t)secs) * 1e9) };
	enum workload_op op;
	uint64_t total = 0;
	uint64_t t0;
	unsigned i;
	int r = 0;

	if (workload_op_parse(opname, &op) < 0 || clients == 0 || clients > BENCH_MAX_CLIENTS)
		return -EINVAL;
	pthread_barrier_init(&start, NULL, clients + 1);
	for (i = 0; i < clients; i++) {
		t[i] = (struct thr){ .conf = conf, .op = op, .start = &start, .stop = &stop };
		pthread_create(&tid[i], NULL, thr_main, &t[i]);
	}
	pthread_barrier_wait(&start);
	t0 = workload_now_ns();
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	for (i = 0; i < clients; i++) {
		pthread_join(tid[i], NULL);
		total += t[i].count;
		if (t[i].r < 0)
			r = t[i].r;
	}
	secs = (double)(workload_now_ns() - t0) / 1e9;
	pthread_barrier_destroy(&start);
	if (r == 0)
		printf("{\"op\": \"%s\", \"clients\": %u, \"count\": %llu, \"seconds\": %.3f}\n",
		       opname, clients, (unsigned long long)total, secs);

	return r;
}

/* One command as raw bytes: write, poll for POLLIN, read.  Returns the length. */
static ssize_t xfer(int fd, const uint8_t *cmd, size_t len, uint8_t *rsp, size_t size)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (write(fd, cmd, len) != (ssize_t)len)
		return -errno;
	if (poll(&p, 1, BENCH_ROT_TIMEOUT_MS) != 1)
		return -ETIMEDOUT;
	if (p.revents != POLLIN)
		return -EPROTO;

	return read(fd, rsp, size);
}

static int mode_raw(const char *path, size_t n)
{
	uint8_t rsp[4096];
	uint64_t *ns;
	uint64_t t0;
	ssize_t len = 0;
	size_t i;
	int fd;

	ns = calloc(n + 1, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	fd = open(path, O_RDWR | O_NONBLOCK);
	if (fd < 0) {
		free(ns);
		return -errno;
	}
	for (i = 0; len >= 0 && i < n / 20 + 1; i++)
		len = xfer(fd, bench_getrandom16, sizeof(bench_getrandom16), rsp, sizeof(rsp));
	for (i = 0; len >= 0 && i < n; i++) {
		t0 = workload_now_ns();
		len = xfer(fd, bench_getrandom16, sizeof(bench_getrandom16), rsp, sizeof(rsp));
		ns[i] = workload_now_ns() - t0;
	}
	close(fd);
	if (len >= 0)
		print_samples("raw_getrandom", NULL, ns, n);
	free(ns);

	return len < 0 ? (int)len : 0;
}

struct rot {
	int fd;
	atomic_bool stop;
	atomic_uint seen;		/* instance changes the client saw */
	size_t n;			/* samples taken */
	uint64_t *start_ns;		/* per command: when it was written */
	uint32_t *lat_ns;		/* its latency */
	uint8_t *changed;		/* 1: first answer of a new instance */
	int r;
};

static void *rot_client(void *arg)
{
	struct rot *c = arg;
	uint8_t last[1024];
	uint8_t rsp[1024];
	size_t last_len = 0;
	uint64_t t0;
	ssize_t len;

	while (!atomic_load(&c->stop) && c->n < BENCH_ROT_MAX_SAMPLES) {
		t0 = workload_now_ns();
		len = xfer(c->fd, bench_readpublic_ek, sizeof(bench_readpublic_ek), rsp,
			   sizeof(rsp));
		if (len < 10) {
			c->r = len < 0 ? (int)len : -EPROTO;
			break;
		}
		c->start_ns[c->n] = t0;
		c->lat_ns[c->n] = (uint32_t)(workload_now_ns() - t0);
		c->changed[c->n] = last_len && ((size_t)len != last_len ||
						memcmp(rsp, last, (size_t)len) != 0);
		if (c->changed[c->n])
			atomic_fetch_add(&c->seen, 1);
		memcpy(last, rsp, (size_t)len);
		last_len = (size_t)len;
		c->n++;
	}
	atomic_store(&c->stop, true);

	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* The pool is full again and no rotation is pending, per the status file. */
static bool pool_is_full(const char *status)
{
	char buf[8192];
	ssize_t n;
	char *ready;
	char *size;
	int fd;

	fd = open(status, O_RDONLY);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	ready = strstr(buf, "\"ready\": ");
	size = strstr(buf, "\"size\": ");
	if (!ready || !size || strstr(buf, "\"rotation_pending\": true"))
		return false;

	return atoll(ready + 9) >= atoll(size + 8);
}

/* Ask for one rotation and wait until the client has seen the new instance. */
static int rot_one(struct rot *c, pid_t pid, const char *status)
{
	unsigned before = atomic_load(&c->seen);
	int waited;

	for (waited = 0; !pool_is_full(status); waited += 5) {
		if (waited > BENCH_REFILL_TIMEOUT_MS || atomic_load(&c->stop))
			return -ETIMEDOUT;
		sleep_ms(5);
	}
	sleep_ms(20);
	if (kill(pid, SIGUSR1) < 0)
		return -errno;
	for (waited = 0; atomic_load(&c->seen) == before; waited++) {
		if (waited > BENCH_ROT_TIMEOUT_MS || atomic_load(&c->stop))
			return -ETIMEDOUT;
		sleep_ms(1);
	}

	return 0;
}

static void rot_print(const struct rot *c, unsigned asked, int r)
{
	size_t i;
	size_t k = 0;

	printf("{\"op\": \"rotation\", \"asked\": %u, \"error\": \"%s\", \"samples_us\": [",
	       asked, r < 0 ? strerror(-r) : "");
	for (i = 0; i < c->n; i++)
		printf("%s%.2f", i ? ", " : "", c->lat_ns[i] / 1000.0);
	printf("], \"crossing\": [");
	for (i = 0; i < c->n; i++)
		if (c->changed[i])
			printf("%s%zu", k++ ? ", " : "", i);
	printf("], \"start_ms\": [");
	for (i = 0; i < c->n; i++)
		printf("%s%.3f", i ? ", " : "", (double)(c->start_ns[i] - c->start_ns[0]) / 1e6);
	printf("]}\n");
}

static int mode_rot(const char *path, pid_t pid, const char *status, unsigned count)
{
	struct rot c = { .fd = -1 };
	pthread_t tid;
	unsigned i;
	int r = -ENOMEM;

	c.start_ns = calloc(BENCH_ROT_MAX_SAMPLES, sizeof(*c.start_ns));
	c.lat_ns = calloc(BENCH_ROT_MAX_SAMPLES, sizeof(*c.lat_ns));
	c.changed = calloc(BENCH_ROT_MAX_SAMPLES, 1);
	if (!c.start_ns || !c.lat_ns || !c.changed)
		goto out;
	c.fd = open(path, O_RDWR | O_NONBLOCK);
	r = c.fd < 0 ? -errno : 0;
	if (r < 0)
		goto out;
	pthread_create(&tid, NULL, rot_client, &c);
	sleep_ms(200);
	for (i = 0; r == 0 && i < count; i++)
		r = rot_one(&c, pid, status);
	sleep_ms(50);
	atomic_store(&c.stop, true);
	pthread_join(tid, NULL);
	if (r == 0)
		r = c.r;
	/* what was measured up to a failure is still worth reporting */
	if (c.n > 0) {
		rot_print(&c, i, r);
		r = 0;
	}
out:
	if (c.fd >= 0)
		close(c.fd);
	free(c.start_ns);
	free(c.lat_ns);
	free(c.changed);
	return r;
}

static int usage(void)
{
	fprintf(stderr, "usage: vtpmd-bench lat TCTI OP N | thr TCTI OP CLIENTS SECONDS |\n"
		"       raw PATH N | rot PATH PID STATUS COUNT\n"
		"OP: getrandom quote_ecc quote_rsa create_load_flush\n");

	return 2;
}

int main(int argc, char **argv)
{
	int r;

	/* ESYS and the TCTIs log through their own logger: keep stderr quiet. */
	(void)setenv("TSS2_LOG", "all+none", 0);
	if (argc == 5 && strcmp(argv[1], "lat") == 0)
		r = mode_lat(argv[2], argv[3], strtoul(argv[4], NULL, 10));
	else if (argc == 6 && strcmp(argv[1], "thr") == 0)
		r = mode_thr(argv[2], argv[3], (unsigned)strtoul(argv[4], NULL, 10),
			     strtod(argv[5], NULL));
	else if (argc == 4 && strcmp(argv[1], "raw") == 0)
		r = mode_raw(argv[2], strtoul(argv[3], NULL, 10));
	else if (argc == 6 && strcmp(argv[1], "rot") == 0)
		r = mode_rot(argv[2], (pid_t)atoi(argv[3]), argv[4],
			     (unsigned)strtoul(argv[5], NULL, 10));
	else
		return usage();
	if (r < 0) {
		fprintf(stderr, "vtpmd-bench: %s failed: %s\n", argv[1], strerror(-r));
		return 1;
	}

	return 0;
}
