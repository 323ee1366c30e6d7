/*
 * Unit tests for vtpmd/hook.c: programs from the base system (cat, sh used
 * only as a test program, true, false, sleep, env, cp, ls) run through
 * hook_exec(), checked for input delivery, exit status, timeouts that
 * reach the whole process group, environment and descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"
#include "hook.h"
#include "util.h"

#define MIB (1024 * 1024)

FIXTURE(hook)
{
	char dir[64];		/* private temporary directory */
	char path[128];		/* dir/out, where test programs write */
	struct hook_result res;
};

FIXTURE_SETUP(hook)
{
	snprintf(self->dir, sizeof(self->dir), "/tmp/hook_test.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->dir));
	snprintf(self->path, sizeof(self->path), "%s/out", self->dir);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

FIXTURE_TEARDOWN(hook)
{
	if (self->dir[0] == '/')
		(void)nftw(self->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* The whole file at path, NUL-terminated; *len without the NUL. */
static char *slurp(const char *path, size_t *len)
{
	char *buf = NULL;
	size_t size = 0;
	size_t n = 0;
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		if (n + 1 >= size) {
			size = size ? 2 * size : 4096;
			buf = realloc(buf, size);
		}
		r = read(fd, buf + n, size - n - 1);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

static int run(struct hook_result *res, const char *input, size_t len, uint64_t timeout_ms,
	       const char *prog, ...)
{
	char *argv[16];
	va_list ap;
	size_t n = 0;

	argv[n++] = (char *)prog;
	va_start(ap, prog);
	while (n < ARRAY_SIZE(argv) - 1 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	return hook_exec(argv, NULL, input, len, timeout_ms, res);
}

static void expect_exit(const struct hook_result *res, int code)
{
	EXPECT_FALSE(res->timed_out);
	EXPECT_FALSE(res->signaled);
	EXPECT_EQ(res->exit_status, code);
}

TEST_F(hook, delivers_input_exactly)
{
	static const char input[] = "{\"event\":\"rotation\"}\n";
	size_t len;
	char *out;

	ASSERT_EQ(run(&self->res, input, strlen(input), 5000, "/bin/sh", "-c", "cat > \"$0\"",
		      self->path, NULL), 0);
	expect_exit(&self->res, 0);
	EXPECT_EQ(self->res.input_written, strlen(input));
	out = slurp(self->path, &len);
	ASSERT_NE_NULL(out);
	EXPECT_EQ(len, strlen(input));
	EXPECT_STREQ(out, input);
	free(out);
}

TEST_F(hook, delivers_one_mib_exactly)
{
	uint8_t *input = malloc(MIB);
	uint32_t x = 2463534242u;
	size_t len;
	char *out;
	size_t i;

	for (i = 0; i < MIB; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		input[i] = (uint8_t)x;
	}
	ASSERT_EQ(run(&self->res, (char *)input, MIB, 20000, "/bin/sh", "-c", "cat > \"$0\"",
		      self->path, NULL), 0);
	expect_exit(&self->res, 0);
	EXPECT_EQ(self->res.input_written, MIB);
	out = slurp(self->path, &len);
	ASSERT_NE_NULL(out);
	ASSERT_EQ(len, MIB);
	EXPECT_EQ(memcmp(out, input, MIB), 0);
	free(out);
	free(input);
}

TEST_F(hook, empty_input_is_end_of_file)
{
	size_t len = 1;
	char *out;

	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c", "cat > \"$0\"", self->path,
		      NULL), 0);
	expect_exit(&self->res, 0);
	out = slurp(self->path, &len);
	ASSERT_NE_NULL(out);
	EXPECT_EQ(len, 0);
	free(out);
}

TEST_F(hook, reports_exit_codes)
{
	ASSERT_EQ(run(&self->res, "x", 1, 5000, "/bin/true", NULL), 0);
	expect_exit(&self->res, 0);
	ASSERT_EQ(run(&self->res, "x", 1, 5000, "/bin/false", NULL), 0);
	expect_exit(&self->res, 1);
	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c", "exit 42", NULL), 0);
	expect_exit(&self->res, 42);
	EXPECT_LT(self->res.elapsed_ms, 5000);
}

TEST_F(hook, reports_a_killing_signal)
{
	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c", "kill -TERM $$", NULL), 0);
	EXPECT_FALSE(self->res.timed_out);
	EXPECT_TRUE(self->res.signaled);
	EXPECT_EQ(self->res.term_signal, SIGTERM);
	EXPECT_EQ(self->res.exit_status, -1);
}

TEST_F(hook, describes_how_a_program_ended)
{
	char how[200];

	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/false", NULL), 0);
	hook_result_describe(&self->res, how, sizeof(how));
	EXPECT_STREQ(how, "exit status 1");
	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c", "echo no such agent >&2; exit 3",
		      NULL), 0);
	hook_result_describe(&self->res, how, sizeof(how));
	EXPECT_STREQ(how, "exit status 3: no such agent");
	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c", "kill -KILL $$", NULL), 0);
	hook_result_describe(&self->res, how, sizeof(how));
	EXPECT_STREQ(how, "killed by signal 9 (SIGKILL)");
	ASSERT_EQ(run(&self->res, NULL, 0, 200, "/bin/sleep", "10", NULL), 0);
	hook_result_describe(&self->res, how, sizeof(how));
	EXPECT_EQ(strncmp(how, "timed out after ", 16), 0);
	EXPECT_NE_NULL(strstr(how, " ms"));
	/* a short buffer is cut, never overrun */
	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c", "echo xyz >&2; exit 3", NULL), 0);
	hook_result_describe(&self->res, how, 8);
	EXPECT_STREQ(how, "exit st");
}

/* Dead: gone, or a zombie waiting for whoever adopted it. */
static bool is_dead(pid_t pid)
{
	char path[64];
	char *stat;
	char *paren;
	bool dead;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	stat = slurp(path, NULL);
	if (!stat)
		return true;
	paren = strrchr(stat, ')');
	dead = paren && (paren[2] == 'Z' || paren[2] == 'X');
	free(stat);
	return dead;
}

static bool wait_dead(pid_t pid, int ms)
{
	for (; ms > 0; ms -= 10) {
		if (is_dead(pid))
			return true;
		usleep(10000);
	}
	return is_dead(pid);
}

TEST_F(hook, timeout_kills_the_process_group)
{
	char *out;
	pid_t grandchild;

	ASSERT_EQ(run(&self->res, NULL, 0, 400, "/bin/sh", "-c",
		      "/bin/sleep 1000 & echo $! > \"$0\"; wait", self->path, NULL), 0);
	EXPECT_TRUE(self->res.timed_out);
	EXPECT_TRUE(self->res.signaled);
	EXPECT_EQ(self->res.term_signal, SIGKILL);
	EXPECT_GE(self->res.elapsed_ms, 400);
	EXPECT_LT(self->res.elapsed_ms, 10000);
	out = slurp(self->path, NULL);
	ASSERT_NE_NULL(out);
	grandchild = atoi(out);
	free(out);
	ASSERT_GT(grandchild, 1);
	EXPECT_TRUE(wait_dead(grandchild, 2000));
}

TEST_F(hook, leftovers_are_killed_after_exit)
{
	char *out;
	pid_t grandchild;

	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c",
		      "/bin/sleep 1000 & echo $! > \"$0\"", self->path, NULL), 0);
	expect_exit(&self->res, 0);
	out = slurp(self->path, NULL);
	ASSERT_NE_NULL(out);
	grandchild = atoi(out);
	free(out);
	ASSERT_GT(grandchild, 1);
	EXPECT_TRUE(wait_dead(grandchild, 2000));
}

static bool is_sigpipe_blocked_or_pending(void)
{
	sigset_t set;

	if (pthread_sigmask(SIG_BLOCK, NULL, &set) == 0 && sigismember(&set, SIGPIPE))
		return true;
	return sigpending(&set) == 0 && sigismember(&set, SIGPIPE);
}

TEST_F(hook, unread_input_neither_hangs_nor_raises_sigpipe)
{
	size_t len = 8 * MIB;
	char *input = calloc(1, len);

	/* SIGPIPE keeps its default action here: raising it would kill this test. */
	ASSERT_EQ(run(&self->res, input, len, 5000, "/bin/true", NULL), 0);
	expect_exit(&self->res, 0);
	EXPECT_LT(self->res.input_written, len);

	/* Closes its stdin, then keeps running. */
	ASSERT_EQ(run(&self->res, input, len, 5000, "/bin/sh", "-c", "exec 0<&-; sleep 0.2",
		      NULL), 0);
	expect_exit(&self->res, 0);
	EXPECT_LT(self->res.input_written, len);

	/* Never reads, never exits: the deadline ends it. */
	ASSERT_EQ(run(&self->res, input, len, 300, "/bin/sleep", "1000", NULL), 0);
	EXPECT_TRUE(self->res.timed_out);
	EXPECT_LT(self->res.elapsed_ms, 5000);
	EXPECT_LT(self->res.input_written, len);
	EXPECT_FALSE(is_sigpipe_blocked_or_pending());
	free(input);
}

TEST_F(hook, cannot_start_gives_errno)
{
	char *argv[] = { NULL, NULL };
	char file[160];
	int fd;

	memset(&self->res, 0xa5, sizeof(self->res));
	EXPECT_EQ(run(&self->res, "x", 1, 1000, "/nonexistent/hook", NULL), -ENOENT);
	snprintf(file, sizeof(file), "%s/not-executable", self->dir);
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, "#!/bin/sh\n", 10), 10);
	close(fd);
	EXPECT_EQ(run(&self->res, "x", 1, 1000, file, NULL), -EACCES);
	EXPECT_EQ(run(&self->res, "x", 1, 1000, self->dir, NULL), -EACCES);
	EXPECT_EQ(run(&self->res, "x", 1, 1000, "bin/true", NULL), -EINVAL);
	EXPECT_EQ(run(&self->res, "x", 1, 1000, "true", NULL), -EINVAL);
	EXPECT_EQ(run(&self->res, "x", 1, 0, "/bin/true", NULL), -EINVAL);
	EXPECT_EQ(run(&self->res, "x", 1, HOOK_TIMEOUT_MAX_MS + 1, "/bin/true", NULL), -EINVAL);
	EXPECT_EQ(hook_exec(argv, NULL, "x", 1, 1000, &self->res), -EINVAL);
	/* Failures leave the result alone. */
	EXPECT_EQ(self->res.exit_status, (int)0xa5a5a5a5);
}

TEST_F(hook, rejects_foreign_environment)
{
	static const char *const bad[] = {
		"LD_PRELOAD=/tmp/x.so", "PATH=/tmp", "VTPMD_=1", "VTPMD_id=1", "VTPMD_ID",
		"VTPMD_ID =1", " VTPMD_ID=1",
	};
	char *argv[] = { (char *)"/bin/true", NULL };
	char *envp[HOOK_ENV_MAX + 2];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		envp[0] = (char *)bad[i];
		envp[1] = NULL;
		EXPECT_EQ(hook_exec(argv, envp, NULL, 0, 1000, &self->res), -EINVAL);
	}
	for (i = 0; i < HOOK_ENV_MAX + 1; i++)
		envp[i] = (char *)"VTPMD_X=1";
	envp[HOOK_ENV_MAX + 1] = NULL;
	EXPECT_EQ(hook_exec(argv, envp, NULL, 0, 1000, &self->res), -EINVAL);
	envp[HOOK_ENV_MAX] = NULL;
	EXPECT_EQ(hook_exec(argv, envp, NULL, 0, 1000, &self->res), 0);
}

/* Sorted lines of text, as one string, for comparing environments. */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void expect_env(char *text, char sep, const char *const *want, size_t n_want)
{
	char *lines[32];
	size_t n = 0;
	char *p = text;
	char *end;
	size_t i;

	while (*p && n < ARRAY_SIZE(lines)) {
		end = strchr(p, sep);
		if (end)
			*end = '\0';
		lines[n++] = p;
		if (!end)
			break;
		p = end + 1;
	}
	qsort(lines, n, sizeof(lines[0]), cmp_str);
	ASSERT_EQ(n, n_want);
	for (i = 0; i < n; i++)
		EXPECT_STREQ(lines[i], want[i]);
}

TEST_F(hook, environment_is_only_path_and_given_variables)
{
	static const char *const want[] = {
		HOOK_PATH, "VTPMD_EVENT_ID=ev-1", "VTPMD_EVENT_PHASE=prepare",
	};
	/* dash exports PWD itself (hooks run in "/"); the rest is what hook_exec() passed. */
	static const char *const want_sh[] = {
		HOOK_PATH, "PWD=/", "VTPMD_EVENT_ID=ev-1", "VTPMD_EVENT_PHASE=prepare",
	};
	char *envp[] = { (char *)"VTPMD_EVENT_PHASE=prepare", (char *)"VTPMD_EVENT_ID=ev-1", NULL };
	char *cp[] = { (char *)"/bin/cp", (char *)"/proc/self/environ", self->path, NULL };
	char *env[] = {
		(char *)"/bin/sh", (char *)"-c", (char *)"exec /usr/bin/env > \"$0\"",
		self->path, NULL,
	};
	char *out;

	ASSERT_EQ(setenv("VTPMD_LEAK", "1", 1), 0);
	ASSERT_EQ(setenv("HOME", "/root", 1), 0);

	/* cp reads its own environment, with no shell in between. */
	ASSERT_EQ(hook_exec(cp, envp, NULL, 0, 5000, &self->res), 0);
	expect_exit(&self->res, 0);
	out = slurp(self->path, NULL);
	ASSERT_NE_NULL(out);
	expect_env(out, '\0', want, ARRAY_SIZE(want));
	free(out);

	ASSERT_EQ(hook_exec(env, envp, NULL, 0, 5000, &self->res), 0);
	expect_exit(&self->res, 0);
	out = slurp(self->path, NULL);
	ASSERT_NE_NULL(out);
	expect_env(out, '\n', want_sh, ARRAY_SIZE(want_sh));
	free(out);

	ASSERT_EQ(hook_exec(cp, NULL, NULL, 0, 5000, &self->res), 0);
	out = slurp(self->path, NULL);
	ASSERT_NE_NULL(out);
	EXPECT_STREQ(out, HOOK_PATH);
	free(out);
}

TEST_F(hook, leaks_no_descriptors)
{
	char marker[160];
	char *out;
	char *line;
	int fds = 0;
	int leak;

	/* Opened without O_CLOEXEC on purpose: hook_exec() must still close it. */
	snprintf(marker, sizeof(marker), "%s/leak-marker", self->dir);
	leak = open(marker, O_WRONLY | O_CREAT, 0600);
	ASSERT_GE(leak, 0);
	ASSERT_EQ(run(&self->res, "x", 1, 5000, "/bin/sh", "-c",
		      "exec ls -l /proc/self/fd > \"$0\"", self->path, NULL), 0);
	close(leak);
	expect_exit(&self->res, 0);
	out = slurp(self->path, NULL);
	ASSERT_NE_NULL(out);
	TEST_LOG("%s", out);
	EXPECT_NULL(strstr(out, "leak-marker"));
	for (line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		if (!strstr(line, " -> "))
			continue;
		fds++;
		/* 0 and 2 are our pipes, 1 the output file, 3 the directory ls reads. */
		if (strstr(line, " 0 -> ") || strstr(line, " 2 -> "))
			EXPECT_NE_NULL(strstr(line, "pipe:["));
		else if (strstr(line, " 1 -> "))
			EXPECT_NE_NULL(strstr(line, self->path));
		else
			EXPECT_NE_NULL(strstr(line, "/fd"));
	}
	EXPECT_EQ(fds, 4);
	free(out);
}

TEST_F(hook, stdout_is_dev_null_and_stderr_is_kept)
{
	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c",
		      "echo to-stdout; [ /proc/self/fd/1 -ef /dev/null ] && echo null >&2;"
		      "echo 'last \"line\"' >&2",
		      NULL), 0);
	expect_exit(&self->res, 0);
	EXPECT_STREQ(self->res.err_tail, "null last 'line'");
}

TEST_F(hook, stderr_tail_keeps_the_last_bytes)
{
	const char *tail = self->res.err_tail;
	size_t len;

	ASSERT_EQ(run(&self->res, NULL, 0, 10000, "/bin/sh", "-c",
		      "i=0; while [ $i -lt 3000 ]; do echo \"err $i\" >&2; i=$((i+1)); done", NULL),
		  0);
	expect_exit(&self->res, 0);
	len = strlen(tail);
	EXPECT_EQ(len, HOOK_ERR_TAIL - 2);	/* the final newline is trimmed */
	ASSERT_GT(len, 20);
	EXPECT_STREQ(tail + len - 17, "err 2998 err 2999");
}

TEST_F(hook, child_gets_default_signals)
{
	unsigned long long blocked;
	unsigned long long ignored;
	sigset_t set;

	/* As in the daemon: SIGPIPE ignored, some signals blocked in this thread. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGUSR1);
	ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
	ASSERT_EQ(run(&self->res, NULL, 0, 5000, "/bin/sh", "-c",
		      "exec grep -E '^(SigBlk|SigIgn)' /proc/self/status >&2", NULL), 0);
	expect_exit(&self->res, 0);
	ASSERT_EQ(sscanf(self->res.err_tail, "SigBlk: %llx SigIgn: %llx", &blocked, &ignored), 2);
	EXPECT_EQ(blocked, 0);
	/* glibc's posix_spawn leaves its own signals 32 and 33 ignored: only 1-31 matter. */
	EXPECT_EQ(ignored & 0x7fffffffull, 0);
}

struct job {
	const char *script;
	int r;
	struct hook_result res;
};

static void *job_run(void *arg)
{
	struct job *j = arg;

	j->r = run(&j->res, NULL, 0, 5000, "/bin/sh", "-c", j->script, NULL);
	return NULL;
}

TEST_F(hook, threads_reap_only_their_own_child)
{
	struct job jobs[4] = {
		{ .script = "sleep 0.3; exit 3" }, { .script = "exit 4" },
		{ .script = "sleep 0.1; exit 5" }, { .script = "kill -KILL $$" },
	};
	pthread_t t[4];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(jobs); i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, job_run, &jobs[i]), 0);
	for (i = 0; i < ARRAY_SIZE(jobs); i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < 3; i++) {
		EXPECT_EQ(jobs[i].r, 0);
		expect_exit(&jobs[i].res, 3 + (int)i);
	}
	EXPECT_EQ(jobs[3].r, 0);
	EXPECT_TRUE(jobs[3].res.signaled);
	EXPECT_EQ(jobs[3].res.term_signal, SIGKILL);
	EXPECT_FALSE(jobs[3].res.timed_out);
}

/* Make pidfd_open(2) fail with ENOSYS in this process, as on an old kernel. */
static int deny_pidfd_open(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = ARRAY_SIZE(filter), .filter = filter };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0 ? -errno : 0;
}

TEST_F(hook, works_without_pidfd)
{
	char *out;

	if (deny_pidfd_open() < 0)
		TEST_SKIP("cannot install a seccomp filter");
	ASSERT_LT(syscall(SYS_pidfd_open, getpid(), 0), 0);
	ASSERT_EQ(errno, ENOSYS);

	ASSERT_EQ(run(&self->res, "abc", 3, 5000, "/bin/sh", "-c", "cat > \"$0\"; exit 7",
		      self->path, NULL), 0);
	expect_exit(&self->res, 7);
	out = slurp(self->path, NULL);
	EXPECT_STREQ(out, "abc");
	free(out);
	ASSERT_EQ(run(&self->res, NULL, 0, 200, "/bin/sleep", "1000", NULL), 0);
	EXPECT_TRUE(self->res.timed_out);
	EXPECT_GE(self->res.elapsed_ms, 200);
	EXPECT_LT(self->res.elapsed_ms, 5000);
}

TEST_HARNESS_MAIN
