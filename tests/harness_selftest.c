/*
 * Tests for tests/harness.h itself.
 *
 * The program holds two sets of tests.  The "inner_*" tests exercise the
 * harness, several of them by failing on purpose; the "selftest_*" tests
 * run this same binary again with HARNESS_SELFTEST_INNER=1 and a -t filter
 * selecting inner tests, and check its TAP output and exit status.  Run
 * without arguments, only the selftest_* tests are selected.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- inner tests: run only through run_inner() ---- */

TEST(inner_pass)
{
	size_t sz = 3;
	int neg = -1;
	unsigned int big = 0x81000000u;
	const char *s = "abc";
	int x = 5;

	ASSERT_EQ(sz, 3);
	ASSERT_LT(neg, sz);		/* by value, not by C conversion */
	ASSERT_GT(big, neg);
	ASSERT_NE(big, 0);
	ASSERT_LE(x, 5);
	ASSERT_GE(x, 5);
	ASSERT_TRUE(x == 5);
	ASSERT_FALSE(x == 6);
	ASSERT_NULL(NULL);
	ASSERT_NE_NULL(s);
	ASSERT_STREQ(s, "abc");
	ASSERT_EQ(s, s);
	EXPECT_EQ(x++, 5);		/* evaluated once */
	EXPECT_EQ(x, 6);
}

TEST(inner_expect_continues)
{
	int v = 1;

	EXPECT_EQ(v, 2);
	EXPECT_STREQ("a\nb", "c");
	TEST_LOG("after expect");
}

TEST(inner_assert_stops)
{
	ASSERT_EQ(-22, 0);
	TEST_LOG("unreachable");
}

FIXTURE(inner_fx) {
	int value;
};

FIXTURE_SETUP(inner_fx)
{
	self->value = 7;
	TEST_LOG("setup ran");
}

FIXTURE_TEARDOWN(inner_fx)
{
	TEST_LOG("teardown ran value=%d", self->value);
}

TEST_F(inner_fx, assert_then_teardown)
{
	ASSERT_EQ(self->value, 7);
	self->value = 8;
	ASSERT_TRUE(self->value == 0);
	TEST_LOG("unreachable");
}

TEST_F(inner_fx, passes)
{
	EXPECT_EQ(self->value, 7);
}

TEST(inner_skip)
{
	TEST_SKIP("no device %d", 42);
	TEST_LOG("unreachable");
}

TEST(inner_xfail_fails)
{
	TEST_XFAIL("known gap");
	EXPECT_EQ(1, 2);
}

TEST(inner_xfail_passes)
{
	TEST_XFAIL("fixed gap");
}

TEST_TIMEOUT(inner_timeout, 1)
{
	TEST_LOG("sleeping");
	sleep(60);
}

TEST(inner_crash)
{
	struct rlimit rl = { 0, 0 };

	(void)setrlimit(RLIMIT_CORE, &rl);
	abort();
}

TEST(inner_early_return)
{
	if (getpid() > 0)
		return;
	ASSERT_TRUE(false);
}

TEST(inner_exits)
{
	exit(0);
}

TEST(inner_leftover)
{
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (pid == 0) {
		for (;;)
			pause();
	}
	TEST_LOG("leftover=%d", (int)pid);
}

TEST(inner_fork_assert)
{
	int status = 0;
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (pid == 0) {
		ASSERT_EQ(1, 2);
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 1);
	TEST_LOG("helper exited 1");
}

/* ---- outer tests ---- */

struct inner_run {
	char out[65536];
	int status;		/* exit status, or -1 */
};

/* Run this binary on the inner tests matching glob; capture its stdout. */
static void run_inner(const char *glob, const char *scale, struct inner_run *run)
{
	size_t len = 0;
	int fds[2];
	int status;
	pid_t pid;
	ssize_t n;

	memset(run, 0, sizeof(*run));
	run->status = -1;
	ASSERT_EQ(pipe(fds), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		setenv("HARNESS_SELFTEST_INNER", "1", 1);
		if (scale)
			setenv("VTPMD_TEST_TIMEOUT_SCALE", scale, 1);
		else
			unsetenv("VTPMD_TEST_TIMEOUT_SCALE");
		execl("/proc/self/exe", "harness_selftest", "-t", glob, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while (len < sizeof(run->out) - 1) {
		n = read(fds[0], run->out + len, sizeof(run->out) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fds[0]);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	run->status = WEXITSTATUS(status);
}

static bool has_line(const struct inner_run *run, const char *line)
{
	const char *p = run->out;
	size_t n = strlen(line);

	while (p && *p) {
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return true;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return false;
}

static const char *last_line(struct inner_run *run)
{
	size_t len = strlen(run->out);
	char *p;

	if (len && run->out[len - 1] == '\n')
		run->out[--len] = '\0';
	p = strrchr(run->out, '\n');
	return p ? p + 1 : run->out;
}

#define EXPECT_LINE(run, line) do { \
	if (!has_line(run, line)) { \
		EXPECT_TRUE(has_line(run, line)); \
		TEST_LOG("missing line: %s\noutput:\n%s", line, (run)->out); \
	} \
} while (0)

TEST(selftest_pass)
{
	struct inner_run run;

	run_inner("inner_pass", NULL, &run);
	EXPECT_LINE(&run, "TAP version 13");
	EXPECT_LINE(&run, "1..1");
	EXPECT_LINE(&run, "ok 1 inner_pass");
	EXPECT_STREQ(last_line(&run), "1 passed, 0 failed, 0 skipped");
	EXPECT_EQ(run.status, 0);
}

TEST(selftest_expect_continues)
{
	struct inner_run run;

	run_inner("inner_expect_continues", NULL, &run);
	EXPECT_LINE(&run, "not ok 1 inner_expect_continues");
	EXPECT_TRUE(strstr(run.out, "harness_selftest.c:") != NULL);
	EXPECT_TRUE(strstr(run.out, "EXPECT_EQ(v, 2) failed") != NULL);
	EXPECT_LINE(&run, "#     v = 1");
	EXPECT_LINE(&run, "#     \"a\\nb\" = \"a\\nb\"");
	EXPECT_LINE(&run, "# after expect");
	EXPECT_STREQ(last_line(&run), "0 passed, 1 failed, 0 skipped");
	EXPECT_EQ(run.status, 1);
}

TEST(selftest_assert_stops)
{
	struct inner_run run;

	run_inner("inner_assert_stops", NULL, &run);
	EXPECT_LINE(&run, "not ok 1 inner_assert_stops");
	EXPECT_LINE(&run, "#     -22 = -22");
	EXPECT_FALSE(strstr(run.out, "unreachable") != NULL);
	EXPECT_EQ(run.status, 1);
}

TEST(selftest_teardown_after_assert)
{
	struct inner_run run;

	run_inner("inner_fx.*", NULL, &run);
	EXPECT_LINE(&run, "1..2");
	EXPECT_LINE(&run, "not ok 1 inner_fx.assert_then_teardown");
	EXPECT_LINE(&run, "# teardown ran value=8");
	EXPECT_LINE(&run, "ok 2 inner_fx.passes");
	EXPECT_FALSE(strstr(run.out, "unreachable") != NULL);
	EXPECT_STREQ(last_line(&run), "1 passed, 1 failed, 0 skipped");
}

TEST(selftest_skip)
{
	struct inner_run run;

	run_inner("inner_skip", NULL, &run);
	EXPECT_LINE(&run, "ok 1 inner_skip # SKIP no device 42");
	EXPECT_FALSE(strstr(run.out, "unreachable") != NULL);
	EXPECT_STREQ(last_line(&run), "0 passed, 0 failed, 1 skipped");
	EXPECT_EQ(run.status, 0);
}

TEST(selftest_xfail_fails)
{
	struct inner_run run;

	run_inner("inner_xfail_fails", NULL, &run);
	EXPECT_LINE(&run, "not ok 1 inner_xfail_fails # " HARNESS_TAP_XFAIL " known gap");
	EXPECT_LINE(&run, "# xfail: inner_xfail_fails: known gap");
	EXPECT_STREQ(last_line(&run), "0 passed, 0 failed, 1 skipped");
	EXPECT_EQ(run.status, 0);
}

TEST(selftest_xfail_passes)
{
	struct inner_run run;

	run_inner("inner_xfail_passes", NULL, &run);
	EXPECT_LINE(&run, "not ok 1 inner_xfail_passes");
	EXPECT_TRUE(strstr(run.out, "expected to fail (fixed gap) but passed") != NULL);
	EXPECT_STREQ(last_line(&run), "0 passed, 1 failed, 0 skipped");
	EXPECT_EQ(run.status, 1);
}

TEST(selftest_timeout)
{
	struct inner_run run;

	run_inner("inner_timeout", "0.2", &run);
	EXPECT_LINE(&run, "# sleeping");
	EXPECT_LINE(&run, "# inner_timeout: timed out after 0.2 s (limit 1 s, scale 0.2)");
	EXPECT_LINE(&run, "not ok 1 inner_timeout");
	EXPECT_EQ(run.status, 1);
}

TEST(selftest_crash)
{
	struct inner_run run;

	run_inner("inner_crash", NULL, &run);
	EXPECT_TRUE(strstr(run.out, "# inner_crash: killed by signal 6") != NULL);
	EXPECT_LINE(&run, "not ok 1 inner_crash");
	EXPECT_EQ(run.status, 1);
}

TEST(selftest_early_return_and_exit)
{
	struct inner_run run;

	run_inner("inner_e[ax][ri]*", NULL, &run);
	EXPECT_LINE(&run, "1..2");
	EXPECT_LINE(&run, "ok 1 inner_early_return");
	EXPECT_LINE(&run, "# inner_exits: exited with status 0 before reporting a result");
	EXPECT_LINE(&run, "not ok 2 inner_exits");
}

/* Is pid gone, or a zombie waiting for its reaper? */
static bool is_dead(int pid)
{
	char path[64];
	char stat[256];
	const char *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	if (!fgets(stat, sizeof(stat), f))
		stat[0] = '\0';
	fclose(f);
	p = strrchr(stat, ')');
	return !p || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
}

TEST(selftest_leftover_killed)
{
	struct inner_run run;
	const char *p;
	int pid;
	int i;

	run_inner("inner_leftover", NULL, &run);
	EXPECT_LINE(&run, "ok 1 inner_leftover");
	p = strstr(run.out, "# leftover=");
	ASSERT_NE_NULL(p);
	pid = atoi(p + strlen("# leftover="));
	ASSERT_GT(pid, 0);
	/* SIGKILL is delivered asynchronously: poll for up to 5 s. */
	for (i = 0; i < 500 && !is_dead(pid); i++)
		usleep(10000);
	EXPECT_TRUE(is_dead(pid));
}

TEST(selftest_assert_in_forked_helper)
{
	struct inner_run run;

	run_inner("inner_fork_assert", NULL, &run);
	EXPECT_LINE(&run, "# helper exited 1");
	EXPECT_LINE(&run, "ok 1 inner_fork_assert");
	EXPECT_EQ(run.status, 0);
}

TEST(selftest_filter_and_count)
{
	struct inner_run run;

	run_inner("inner_[ps]*", NULL, &run);
	EXPECT_LINE(&run, "1..2");
	EXPECT_LINE(&run, "ok 1 inner_pass");
	EXPECT_LINE(&run, "ok 2 inner_skip # SKIP no device 42");
	EXPECT_FALSE(strstr(run.out, "inner_crash") != NULL);
	EXPECT_STREQ(last_line(&run), "1 passed, 0 failed, 1 skipped");

	run_inner("nothing-matches", NULL, &run);
	EXPECT_LINE(&run, "1..0");
	EXPECT_STREQ(last_line(&run), "0 passed, 0 failed, 0 skipped");
	EXPECT_EQ(run.status, 0);
}

TEST(selftest_bad_scale_bails_out)
{
	struct inner_run run;

	run_inner("inner_pass", "zero", &run);
	EXPECT_TRUE(strncmp(last_line(&run), "Bail out! ", 10) == 0);
	EXPECT_EQ(run.status, 1);
}

int main(int argc, char **argv)
{
	char *outer[] = { argv[0], "-t", "selftest_*", NULL };

	if (getenv("HARNESS_SELFTEST_INNER") || argc > 1)
		return harness_main(argc, argv);
	return harness_main(3, outer);
}
