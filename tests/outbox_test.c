/*
 * The outbox on its own: records on disk, order per hook, retries, failed
 * deliveries, held commits and the resume after a restart, with real hook
 * programs (a small shell script) in a temporary state directory.
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "event.h"
#include "outbox.h"

#define ID1 "0123456789abcdef0123456789abcdef"
#define ID2 "fedcba9876543210fedcba9876543210"

FIXTURE(outbox) {
	char dir[64];
	char script[128];
	struct conf *conf;
	struct conf *conf2;	/* a second configuration, for outbox_set_conf() */
	struct outbox *o;
	struct meta new;
	uint8_t tpm[34];
	uint8_t name[34];
};

/*
 * Into *c: of the two hooks a (one retry) and b (many), those named in
 * hooks ("ab", "a", ""), running one script that logs "<hook> <id> <phase>"
 * and fails while <dir>/fail-<hook> exists; then extra.
 */
static void load_conf_hooks(struct harness_fx_outbox *self, struct conf **c, const char *hooks,
			    const char *extra)
{
	char buf[2048];
	char err[CONF_ERR_MAX];
	size_t n;

	n = (size_t)snprintf(buf, sizeof(buf), "[vtpmd]\nstate_dir = %s/state\nmountpoint = %s/mnt\n",
			     self->dir, self->dir);
	for (; *hooks; hooks++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n,
				      "[hook.%c]\nexec = %s %c\nretries = %d\n"
				      "retry_delay = 10ms\nretry_max_delay = 20ms\n",
				      *hooks, self->script, *hooks, *hooks == 'a' ? 1 : 50);
	snprintf(buf + n, sizeof(buf) - n, "%s", extra ? extra : "");
	conf_free(*c);
	*c = NULL;
	ASSERT_EQ(conf_load_buffer("t.conf", buf, strlen(buf), c, err, sizeof(err)), 0);
}

/* Both hooks, a and b, then extra. */
static void load_conf(struct harness_fx_outbox *self, const char *extra)
{
	load_conf_hooks(self, &self->conf, "ab", extra);
}

FIXTURE_SETUP(outbox)
{
	FILE *f;

	snprintf(self->dir, sizeof(self->dir), "/tmp/outbox-test.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->dir));
	snprintf(self->script, sizeof(self->script), "%s/hook", self->dir);
	f = fopen(self->script, "w");
	ASSERT_NE_NULL(f);
	fprintf(f, "#!/bin/sh\ncat >/dev/null\n[ -e %s/fail-$1 ] && exit 3\n"
		"echo \"$1 $VTPMD_EVENT_ID $VTPMD_EVENT_PHASE\" >> %s/log\n", self->dir, self->dir);
	fclose(f);
	ASSERT_EQ(chmod(self->script, 0755), 0);
	load_conf(self, NULL);
	snprintf(self->new.id, sizeof(self->new.id), "inst-new-0002");
	self->new.created = 1796083200;
	self->tpm[1] = 32;
	self->name[1] = 0x0b;
	self->new.ek[0] = (struct meta_key){ .alg = META_ALG_ECC_P256, .handle = 0x81010002,
					     .tpm = self->tpm, .tpm_len = sizeof(self->tpm),
					     .name = self->name, .name_len = sizeof(self->name) };
	self->new.n_ek = 1;
}

FIXTURE_TEARDOWN(outbox)
{
	char cmd[128];

	outbox_free(self->o);
	conf_free(self->conf);
	conf_free(self->conf2);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", self->dir);
	(void)system(cmd);
}

static char *event_json(struct harness_fx_outbox *self, const char *id, const char *phase)
{
	struct event_rotation ev = { .id = id, .phase = phase, .time_ms = 1796322240123,
				     .reason = "operator", .new = &self->new };
	char *json = NULL;

	if (event_rotation_encode(&ev, &json) < 0)
		return NULL;
	return json;
}

static uint64_t put(struct harness_fx_outbox *self, const char *id, const char *phase, bool held)
{
	char *json = event_json(self, id, phase);
	uint64_t seq = 0;

	if (!json || outbox_put(self->o, id, phase, self->new.id, held, json, &seq) < 0)
		seq = 0;
	free(json);
	return seq;
}

static void open_outbox(struct harness_fx_outbox *self, bool start)
{
	char state[96];

	snprintf(state, sizeof(state), "%s/state", self->dir);
	mkdir(state, 0700);
	ASSERT_EQ(outbox_new(state, self->conf, &self->o), 0);
	if (start)
		ASSERT_EQ(outbox_start(self->o), 0);
}

static void close_outbox(struct harness_fx_outbox *self)
{
	outbox_free(self->o);
	self->o = NULL;
}

/* The hook log, lines joined with '|'. */
static void read_log(struct harness_fx_outbox *self, char *buf, size_t size)
{
	char path[96];
	FILE *f;
	size_t n;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/log", self->dir);
	f = fopen(path, "r");
	if (!f)
		return;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (char *p = buf; *p; p++) {
		if (*p == '\n')
			*p = *(p + 1) ? '|' : '\0';
	}
}

static int files_in_outbox(struct harness_fx_outbox *self)
{
	char cmd[128];
	char buf[16] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "ls '%s/state/outbox' | wc -l", self->dir);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (!fgets(buf, sizeof(buf), p))
		buf[0] = '\0';
	pclose(p);
	return atoi(buf);
}

static void touch(struct harness_fx_outbox *self, const char *name, bool on)
{
	char path[96];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", self->dir, name);
	if (!on) {
		(void)unlink(path);
		return;
	}
	f = fopen(path, "w");
	if (f)
		fclose(f);
}

TEST_F(outbox, delivers_each_hook_in_order_and_removes_the_records)
{
	char log[1024];
	uint64_t s1;
	uint64_t s2;
	uint64_t s3;

	open_outbox(self, true);
	s1 = put(self, ID1, "prepare", false);
	s2 = put(self, ID1, "commit", false);
	s3 = put(self, ID2, "prepare", false);
	ASSERT_TRUE(s1 && s1 < s2 && s2 < s3);
	EXPECT_EQ(outbox_wait(self->o, s3, 10000), 0);
	EXPECT_EQ(outbox_wait(self->o, s1, 10000), 0);
	read_log(self, log, sizeof(log));
	/* Each hook got them in order; the two hooks may interleave. */
	EXPECT_NE_NULL(strstr(log, "a " ID1 " prepare"));
	EXPECT_TRUE(strstr(log, "a " ID1 " prepare") < strstr(log, "a " ID1 " commit"));
	EXPECT_TRUE(strstr(log, "a " ID1 " commit") < strstr(log, "a " ID2 " prepare"));
	EXPECT_TRUE(strstr(log, "b " ID1 " commit") < strstr(log, "b " ID2 " prepare"));
	EXPECT_EQ(files_in_outbox(self), 0);
}

TEST_F(outbox, failed_delivery_stays_on_disk_and_resumes_after_a_restart)
{
	struct outbox_stats st;
	char log[1024];
	uint64_t seq;
	int i;

	touch(self, "fail-a", true);
	open_outbox(self, true);
	seq = put(self, ID1, "commit", false);
	ASSERT_NE(seq, 0);
	/* a: two attempts, then failed; b delivers. */
	EXPECT_EQ(outbox_wait(self->o, seq, 10000), -EIO);
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.failed, 1);
	EXPECT_EQ(st.pending, 0);
	ASSERT_EQ(st.n_items, 1);
	EXPECT_STREQ(st.items[0].hook, "a");
	EXPECT_EQ(st.items[0].attempts, 2);
	EXPECT_NE_NULL(strstr(st.items[0].err, "exit status 3"));
	EXPECT_EQ(files_in_outbox(self), 2);
	close_outbox(self);

	/* The next start retries it, and only for a. */
	touch(self, "fail-a", false);
	open_outbox(self, false);
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.pending, 1);
	EXPECT_EQ(st.failed, 0);
	ASSERT_EQ(outbox_start(self->o), 0);
	for (i = 0; i < 100 && files_in_outbox(self) > 0; i++)
		usleep(50000);
	EXPECT_EQ(files_in_outbox(self), 0);
	read_log(self, log, sizeof(log));
	EXPECT_STREQ(log, "b " ID1 " commit|a " ID1 " commit");
}

/* Send the daemon's log (stderr) to <dir>/stderr. */
static void capture_log(struct harness_fx_outbox *self)
{
	char path[96];

	snprintf(path, sizeof(path), "%s/stderr", self->dir);
	ASSERT_NE_NULL(freopen(path, "w", stderr));
	setvbuf(stderr, NULL, _IONBF, 0);
}

/* How many lines of the captured log contain s. */
static int log_lines(struct harness_fx_outbox *self, const char *s)
{
	char path[96];
	char line[1024];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "%s/stderr", self->dir);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, s) != NULL;
	fclose(f);
	return n;
}

#define NO_SUCH_HOOK "outbox: delivery failed, no such hook"

TEST_F(outbox, orphans_fail_at_open_without_any_hook)
{
	struct outbox_stats st;
	uint64_t seq;

	capture_log(self);
	open_outbox(self, false);
	seq = put(self, ID1, "commit", false);
	ASSERT_NE(seq, 0);
	close_outbox(self);

	/* Restart with no hook at all: no delivery thread runs. */
	load_conf_hooks(self, &self->conf, "", NULL);
	open_outbox(self, true);
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.pending, 0);
	EXPECT_EQ(st.failed, 2);
	ASSERT_EQ(st.n_items, 2);
	EXPECT_STREQ(st.items[0].state, "failed");
	EXPECT_STREQ(st.items[0].err, "hook is not configured");
	EXPECT_EQ(outbox_wait(self->o, seq, 10000), -EIO);
	EXPECT_EQ(log_lines(self, NO_SUCH_HOOK " hook=a id=" ID1 " phase=commit"), 1);
	EXPECT_EQ(log_lines(self, NO_SUCH_HOOK " hook=b id=" ID1 " phase=commit"), 1);
	/* They stay on disk, should the hooks come back. */
	EXPECT_EQ(files_in_outbox(self), 2);

	/* A reload that still has no hook fails them again, once each. */
	load_conf_hooks(self, &self->conf2, "", NULL);
	outbox_set_conf(self->o, self->conf2);
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.pending, 0);
	EXPECT_EQ(st.failed, 2);
	EXPECT_EQ(log_lines(self, NO_SUCH_HOOK), 4);
}

TEST_F(outbox, orphans_of_a_removed_hook_fail_once_beside_a_remaining_one)
{
	struct outbox_stats st;
	char log[1024];
	uint64_t seq;

	capture_log(self);
	open_outbox(self, false);
	seq = put(self, ID1, "commit", false);
	ASSERT_NE(seq, 0);
	close_outbox(self);

	/* Restart with a only: b fails at open, before any thread runs. */
	load_conf_hooks(self, &self->conf, "a", NULL);
	open_outbox(self, false);
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.pending, 1);
	EXPECT_EQ(st.failed, 1);
	ASSERT_EQ(outbox_start(self->o), 0);
	EXPECT_EQ(outbox_wait(self->o, seq, 10000), -EIO);
	read_log(self, log, sizeof(log));
	EXPECT_STREQ(log, "a " ID1 " commit");
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.pending, 0);
	EXPECT_EQ(st.failed, 1);
	ASSERT_EQ(st.n_items, 1);
	EXPECT_STREQ(st.items[0].hook, "b");
	EXPECT_STREQ(st.items[0].err, "hook is not configured");
	EXPECT_EQ(log_lines(self, NO_SUCH_HOOK " hook=b id=" ID1 " phase=commit"), 1);

	/* A reload without b: failed again at once, one more line. */
	load_conf_hooks(self, &self->conf2, "a", NULL);
	outbox_set_conf(self->o, self->conf2);
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.pending, 0);
	EXPECT_EQ(st.failed, 1);
	EXPECT_EQ(log_lines(self, NO_SUCH_HOOK), 2);
	EXPECT_EQ(log_lines(self, "hook=a"), 1);

	/* b comes back: the delivery is retried and the record leaves. */
	load_conf_hooks(self, &self->conf, "ab", NULL);
	outbox_set_conf(self->o, self->conf);
	EXPECT_EQ(outbox_wait(self->o, seq, 10000), 0);
	read_log(self, log, sizeof(log));
	EXPECT_STREQ(log, "a " ID1 " commit|b " ID1 " commit");
	EXPECT_EQ(files_in_outbox(self), 0);
	EXPECT_EQ(log_lines(self, NO_SUCH_HOOK), 2);
}

TEST_F(outbox, a_later_event_waits_for_the_earlier_one_of_the_same_hook)
{
	char log[1024] = "";
	uint64_t s1;
	uint64_t s2;

	touch(self, "fail-b", true);
	open_outbox(self, true);
	s1 = put(self, ID1, "commit", false);
	s2 = put(self, ID2, "prepare", false);
	for (int i = 0; i < 200 && !strstr(log, ID2); i++) {
		usleep(20000);
		read_log(self, log, sizeof(log));
	}
	/* b refuses ID1: ID2 must not overtake it. a is not held back. */
	EXPECT_STREQ(log, "a " ID1 " commit|a " ID2 " prepare");
	touch(self, "fail-b", false);
	EXPECT_EQ(outbox_wait(self->o, s2, 10000), 0);
	EXPECT_EQ(outbox_wait(self->o, s1, 10000), 0);
	read_log(self, log, sizeof(log));
	EXPECT_NE_NULL(strstr(log, "b " ID1 " commit|b " ID2 " prepare"));
}

TEST_F(outbox, held_commit_waits_for_the_swap)
{
	char log[1024];
	uint64_t seq;

	open_outbox(self, true);
	seq = put(self, ID1, "commit", true);
	EXPECT_EQ(outbox_wait(self->o, seq, 200), -ETIMEDOUT);
	read_log(self, log, sizeof(log));
	EXPECT_STREQ(log, "");
	outbox_release(self->o, seq);
	EXPECT_EQ(outbox_wait(self->o, seq, 10000), 0);
	EXPECT_EQ(files_in_outbox(self), 0);
}

TEST_F(outbox, held_commit_after_a_crash_follows_the_active_instance)
{
	char log[1024];

	open_outbox(self, false);
	ASSERT_NE(put(self, ID1, "commit", true), 0);
	close_outbox(self);
	/* The swap did not happen: another instance is active. */
	open_outbox(self, false);
	outbox_resolve_held(self->o, "inst-old-0001");
	EXPECT_EQ(files_in_outbox(self), 0);
	ASSERT_NE(put(self, ID2, "commit", true), 0);
	close_outbox(self);
	/* It happened: the announced instance is active. */
	open_outbox(self, false);
	outbox_resolve_held(self->o, "inst-new-0002");
	ASSERT_EQ(outbox_start(self->o), 0);
	for (int i = 0; i < 100 && files_in_outbox(self) > 0; i++)
		usleep(50000);
	read_log(self, log, sizeof(log));
	EXPECT_NE_NULL(strstr(log, "a " ID2 " commit"));
	EXPECT_NULL(strstr(log, ID1));
}

TEST_F(outbox, unreadable_records_are_left_alone)
{
	struct outbox_stats st;
	char path[160];
	FILE *f;

	open_outbox(self, false);
	close_outbox(self);
	snprintf(path, sizeof(path), "%s/state/outbox/0000000000000007-" ID1 "-commit.json",
		 self->dir);
	f = fopen(path, "w");
	ASSERT_NE_NULL(f);
	fputs("{\"event\": \"not quite\"", f);
	fclose(f);
	open_outbox(self, true);
	outbox_stats_get(self->o, &st);
	EXPECT_EQ(st.pending, 0);
	EXPECT_EQ(access(path, F_OK), 0);
	/* New records still go after it. */
	EXPECT_GT(put(self, ID2, "commit", false), 7);
}

TEST_F(outbox, wait_is_bounded_by_the_hook_timeout)
{
	struct timespec t0;
	struct timespec t1;
	uint64_t seq;
	double s;

	load_conf(self, "[hook.slow]\nexec = /bin/sleep 5\ntimeout = 300ms\nretries = 0\n");
	open_outbox(self, true);
	seq = put(self, ID1, "prepare", false);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	EXPECT_NE(outbox_wait(self->o, seq, 60000), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	EXPECT_LT(s, 3.0);
}

TEST_HARNESS_MAIN
