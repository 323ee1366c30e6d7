#include "hook.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define HOOK_CHUNK 65536	/* bytes per write(2) of the input */
#define HOOK_TICK_MS 10		/* waitid polling period without a pidfd */
#define HOOK_DRAIN_READS 16	/* reads of stderr after exit: a chatty grandchild cannot pin us */
#define HOOK_ENV_PREFIX "VTPMD_"

/* One running program, as seen from hook_exec(). */
struct hook_run {
	pid_t pid;
	int pidfd;		/* -1: poll waitid every HOOK_TICK_MS instead */
	int in;			/* write end of its stdin; -1 once closed */
	int err;		/* read end of its stderr; -1 at EOF */
	const char *input;
	size_t len;
	size_t off;		/* bytes of input written so far */
	bool epipe;		/* a write raised (blocked) SIGPIPE */
	bool timed_out;
	int status;		/* from waitpid() */
	char tail[HOOK_ERR_TAIL];	/* last bytes of stderr, not NUL-terminated */
	size_t tail_len;
};

static void hook_close(int *fd)
{
	if (*fd >= 0)
		(void)close(*fd);
	*fd = -1;
}

/* Only "VTPMD_<NAME>=value", <NAME> in [A-Z0-9_]: nothing that changes how programs load. */
static bool hook_is_env_valid(const char *entry)
{
	size_t n;

	if (strncmp(entry, HOOK_ENV_PREFIX, strlen(HOOK_ENV_PREFIX)) != 0)
		return false;
	n = strspn(entry, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");

	return n > strlen(HOOK_ENV_PREFIX) && entry[n] == '=';
}

/* env gets PATH, then the entries of envp (may be NULL), then NULL. */
static int hook_env_build(char *const envp[], char *env[HOOK_ENV_MAX + 2])
{
	size_t i;

	env[0] = (char *)HOOK_PATH;
	for (i = 0; envp && envp[i]; i++) {
		if (i == HOOK_ENV_MAX || !hook_is_env_valid(envp[i]))
			return -EINVAL;
		env[i + 1] = envp[i];
	}
	env[i + 1] = NULL;

	return 0;
}

/* Keep fds off 0-2, so that the child's dup2 actions cannot clobber one another. */
static int hook_fd_raise(int *fd)
{
	int nfd;

	if (*fd > STDERR_FILENO)
		return 0;
	nfd = fcntl(*fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	if (nfd < 0)
		return -errno;
	(void)close(*fd);
	*fd = nfd;

	return 0;
}

/* A close-on-exec pipe; our end (fds[ours]) does not block, the child's does. */
static int hook_pipe_open(int fds[2], int ours)
{
	int r;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	r = hook_fd_raise(&fds[0]);
	if (r == 0)
		r = hook_fd_raise(&fds[1]);
	if (r == 0 && fcntl(fds[ours], F_SETFL, O_NONBLOCK) < 0)
		r = -errno;
	if (r < 0) {
		hook_close(&fds[0]);
		hook_close(&fds[1]);
	}

	return r;
}

/* stdin from the pipe, stdout to /dev/null, stderr to the pipe, nothing else; cwd "/". */
static int hook_actions_init(posix_spawn_file_actions_t *fa, int in, int err)
{
	int r;

	r = posix_spawn_file_actions_init(fa);
	if (r)
		return -r;
	r = posix_spawn_file_actions_adddup2(fa, in, STDIN_FILENO);
	if (!r)
		r = posix_spawn_file_actions_addopen(fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	if (!r)
		r = posix_spawn_file_actions_adddup2(fa, err, STDERR_FILENO);
	if (!r)
		r = posix_spawn_file_actions_addclosefrom_np(fa, STDERR_FILENO + 1);
	if (!r)
		r = posix_spawn_file_actions_addchdir_np(fa, "/");
	if (r)
		posix_spawn_file_actions_destroy(fa);

	return -r;
}

/*
 * Its own process group, so that a timeout reaches its children; every
 * signal at its default action and none blocked, whatever the daemon
 * ignores (SIGPIPE) or blocks.
 */
static int hook_attr_init(posix_spawnattr_t *attr)
{
	sigset_t all;
	sigset_t none;
	int r;

	sigfillset(&all);
	sigemptyset(&none);
	r = posix_spawnattr_init(attr);
	if (r)
		return -r;
	r = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
					   POSIX_SPAWN_SETSIGMASK);
	if (!r)
		r = posix_spawnattr_setpgroup(attr, 0);
	if (!r)
		r = posix_spawnattr_setsigdefault(attr, &all);
	if (!r)
		r = posix_spawnattr_setsigmask(attr, &none);
	if (r)
		posix_spawnattr_destroy(attr);

	return -r;
}

static int hook_spawn(pid_t *ret_pid, char *const argv[], char *const env[], int in, int err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	pid_t pid;
	int r;

	r = hook_actions_init(&fa, in, err);
	if (r < 0)
		return r;
	r = hook_attr_init(&attr);
	if (r < 0)
		goto out_actions;

	/* glibc reports the execve error (ENOENT, EACCES, ...) here and reaps that child. */
	r = -posix_spawn(&pid, argv[0], &fa, &attr, argv, env);
	if (r == 0)
		*ret_pid = pid;
	posix_spawnattr_destroy(&attr);
out_actions:
	posix_spawn_file_actions_destroy(&fa);
	return r;
}

static int hook_start(struct hook_run *run, char *const argv[], char *const env[])
{
	int in[2] = { -1, -1 };
	int err[2] = { -1, -1 };
	int r;

	r = hook_pipe_open(in, 1);
	if (r < 0)
		return r;
	r = hook_pipe_open(err, 0);
	if (r < 0)
		goto out_close;
	r = hook_spawn(&run->pid, argv, env, in[0], err[1]);
	if (r < 0)
		goto out_close;

	run->in = in[1];
	in[1] = -1;
	run->err = err[0];
	err[0] = -1;
	/* Without a pidfd (old kernel, seccomp), hook_wait() polls waitid. */
	run->pidfd = pidfd_open(run->pid, 0);
out_close:
	hook_close(&in[0]);
	hook_close(&in[1]);
	hook_close(&err[0]);
	hook_close(&err[1]);
	return r;
}

static void hook_write(struct hook_run *run)
{
	size_t n = run->len - run->off;
	ssize_t w;

	w = write(run->in, run->input + run->off, n < HOOK_CHUNK ? n : HOOK_CHUNK);
	if (w < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (w < 0) {
		/* It closed its stdin early: its exit status says whether that was fine. */
		run->epipe = errno == EPIPE;
		hook_close(&run->in);
		return;
	}
	run->off += (size_t)w;
	if (run->off == run->len)
		hook_close(&run->in);
}

static void hook_tail_add(struct hook_run *run, const char *buf, size_t n)
{
	size_t cap = sizeof(run->tail) - 1;
	size_t keep;

	if (n >= cap) {
		memcpy(run->tail, buf + n - cap, cap);
		run->tail_len = cap;
		return;
	}
	keep = run->tail_len < cap - n ? run->tail_len : cap - n;
	memmove(run->tail, run->tail + run->tail_len - keep, keep);
	memcpy(run->tail + keep, buf, n);
	run->tail_len = keep + n;
}

/* One read of stderr; true when it gave bytes. */
static bool hook_read(struct hook_run *run)
{
	char buf[4096];
	ssize_t n;

	n = read(run->err, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0) {
		hook_close(&run->err);
		return false;
	}
	hook_tail_add(run, buf, (size_t)n);

	return true;
}

/* 1 once it has exited (still unreaped, so its pid and group stay ours), 0 while it runs. */
static int hook_has_exited(pid_t pid)
{
	siginfo_t info = { 0 };

	if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0)
		return errno == EINTR ? 0 : -errno;

	return info.si_pid == pid;
}

static int hook_poll_ms(const struct hook_run *run, uint64_t left_ns)
{
	uint64_t ms = (left_ns + 999999) / 1000000;

	if (run->pidfd < 0 && ms > HOOK_TICK_MS)
		ms = HOOK_TICK_MS;

	return (int)ms;
}

/*
 * Feed stdin and collect stderr until the program exits or the deadline
 * passes.  Returns 1 when it exited, 0 at the deadline, or a negative
 * errno; in the first two cases it is still unreaped.
 */
static int hook_wait(struct hook_run *run, uint64_t deadline_ns)
{
	struct pollfd pfd[3];
	uint64_t now;
	int r;

	if (!run->len)
		hook_close(&run->in);
	for (;;) {
		r = hook_has_exited(run->pid);
		if (r != 0)
			return r;
		now = util_now_ns(CLOCK_MONOTONIC);
		if (now >= deadline_ns)
			return 0;
		/* poll() skips negative fds: closed pipes and a missing pidfd. */
		pfd[0] = (struct pollfd){ .fd = run->in, .events = POLLOUT };
		pfd[1] = (struct pollfd){ .fd = run->err, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = run->pidfd, .events = POLLIN };
		if (poll(pfd, ARRAY_SIZE(pfd), hook_poll_ms(run, deadline_ns - now)) < 0 &&
		    errno != EINTR)
			return -errno;
		if (pfd[0].revents)
			hook_write(run);
		if (pfd[1].revents)
			(void)hook_read(run);
	}
}

/* Kill what is left of its process group, then reap the program itself. */
static int hook_reap(struct hook_run *run)
{
	pid_t w;

	/* Unreaped, the leader keeps its group id from being reused: this kill is safe. */
	(void)kill(-run->pid, SIGKILL);
	do
		w = waitpid(run->pid, &run->status, 0);
	while (w < 0 && errno == EINTR);

	return w < 0 ? -errno : 0;
}

static void hook_drain(struct hook_run *run)
{
	int i;

	for (i = 0; i < HOOK_DRAIN_READS && run->err >= 0; i++)
		if (!hook_read(run))
			return;
}

/*
 * Run the program to its end with SIGPIPE blocked in this thread, so that
 * input it does not read cannot kill the daemon even where SIGPIPE is not
 * ignored; a SIGPIPE that we raised is taken back before the mask is
 * restored.
 */
static int hook_supervise(struct hook_run *run, uint64_t deadline_ns)
{
	static const struct timespec zero = { 0 };
	sigset_t pipe_set;
	sigset_t pending;
	sigset_t old;
	bool was_pending;
	int r;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	(void)pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);

	r = hook_wait(run, deadline_ns);
	if (r >= 0) {
		run->timed_out = r == 0;
		r = hook_reap(run);
	} else if (r != -ECHILD) {
		/* poll() failed: do not leave it running.  After ECHILD it is not ours to kill. */
		(void)hook_reap(run);
	}
	hook_drain(run);

	if (run->epipe && !was_pending)
		(void)sigtimedwait(&pipe_set, NULL, &zero);
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

/* The stderr tail as one printable line for a log value: no controls, no double quotes. */
static void hook_tail_copy(const struct hook_run *run, char *out)
{
	size_t len = run->tail_len;
	size_t i;
	unsigned char c;

	while (len && strchr(" \t\r\n", run->tail[len - 1]))
		len--;
	for (i = 0; i < len; i++) {
		c = (unsigned char)run->tail[i];
		if (c < 0x20 || c == 0x7f)
			c = ' ';
		else if (c == '"')
			c = '\'';
		else if (c > 0x7f)
			c = '?';
		out[i] = (char)c;
	}
	out[len] = '\0';
}

static void hook_result_fill(const struct hook_run *run, uint64_t start_ns,
			     struct hook_result *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->timed_out = run->timed_out;
	ret->signaled = WIFSIGNALED(run->status);
	ret->term_signal = ret->signaled ? WTERMSIG(run->status) : 0;
	ret->exit_status = WIFEXITED(run->status) ? WEXITSTATUS(run->status) : -1;
	ret->elapsed_ms = (util_now_ns(CLOCK_MONOTONIC) - start_ns) / 1000000;
	ret->input_written = run->off;
	hook_tail_copy(run, ret->err_tail);
}

/*
 * Run the program argv[0] (an absolute path; no shell, no PATH search)
 * with arguments argv and input on its standard input.  It runs in "/",
 * standard output to /dev/null, standard error kept for *ret's err_tail,
 * no fd other than 0-2, default signal actions, its own process group, and
 * an environment of only HOOK_PATH and the "VTPMD_<NAME>=value" entries of
 * envp (NULL-terminated, at most HOOK_ENV_MAX; envp may be NULL).  When it
 * exits, or at timeout_ms, whatever is left in its group is killed with
 * SIGKILL (a hook that must leave something running has to setsid).  Only
 * this child is reaped, so the daemon must neither waitpid(-1) nor ignore
 * SIGCHLD.  The caller keeps argv, envp and input.
 *
 * Returns 0 with *ret filled once the program ran, whatever its outcome;
 * -EINVAL for a relative argv[0], a bad envp entry or a timeout of 0 or
 * beyond HOOK_TIMEOUT_MAX_MS; the execve error (-ENOENT, -EACCES, -ENOEXEC,
 * ...) when it could not be started; -ECHILD when someone else reaped it;
 * other negative errnos for pipe or poll failures.  Blocks up to
 * timeout_ms: call it from a thread that may block, never a FUSE handler.
 */
int hook_exec(char *const argv[], char *const envp[], const char *input, size_t len,
	      uint64_t timeout_ms, struct hook_result *ret)
{
	struct hook_run run = {
		.pid = -1, .pidfd = -1, .in = -1, .err = -1, .input = input, .len = len,
	};
	char *env[HOOK_ENV_MAX + 2];
	uint64_t start;
	int r;

	assert(argv);
	assert(input || !len);
	assert(ret);

	if (!argv[0] || argv[0][0] != '/' || !timeout_ms || timeout_ms > HOOK_TIMEOUT_MAX_MS)
		return -EINVAL;
	r = hook_env_build(envp, env);
	if (r < 0)
		return r;

	start = util_now_ns(CLOCK_MONOTONIC);
	r = hook_start(&run, argv, env);
	if (r < 0)
		return r;
	r = hook_supervise(&run, start + timeout_ms * 1000000);
	hook_close(&run.in);
	hook_close(&run.err);
	hook_close(&run.pidfd);
	if (r < 0)
		return r;

	hook_result_fill(&run, start, ret);
	return 0;
}

/*
 * argv behind "setpriv --reuid --regid --clear-groups --", into out
 * (HOOK_ARGS_MAX entries, with the number strings in ids).  posix_spawn
 * cannot change the user, and fork in this multithreaded daemon would copy
 * its locks in whatever state other threads hold them; setpriv does the
 * setgroups/setresgid/setresuid in a single-threaded process of its own and
 * passes the environment on untouched.
 */
static int hook_argv_as(char *const argv[], const struct hook_cred *cred,
			char ids[2][32], char *out[HOOK_ARGS_MAX])
{
	size_t n = 0;
	size_t i;

	(void)snprintf(ids[0], sizeof(ids[0]), "--reuid=%u", (unsigned)cred->uid);
	(void)snprintf(ids[1], sizeof(ids[1]), "--regid=%u", (unsigned)cred->gid);
	out[n++] = (char *)HOOK_SETPRIV;
	out[n++] = ids[0];
	out[n++] = ids[1];
	out[n++] = (char *)"--clear-groups";
	out[n++] = (char *)"--";
	for (i = 0; argv[i]; i++) {
		if (n + 1 >= HOOK_ARGS_MAX)
			return -E2BIG;
		out[n++] = argv[i];
	}
	out[n] = NULL;

	return 0;
}

/*
 * hook_exec(), with the program run as cred's user and group (NULL: as the
 * daemon's).  Also -E2BIG when argv and setpriv's words pass
 * HOOK_ARGS_MAX, and a failure to run setpriv shows as a non-zero exit.
 * Same context as hook_exec().
 */
int hook_exec_as(char *const argv[], char *const envp[], const char *input, size_t len,
		 uint64_t timeout_ms, const struct hook_cred *cred, struct hook_result *ret)
{
	char *as[HOOK_ARGS_MAX];
	char ids[2][32];
	int r;

	assert(argv);

	if (!cred)
		return hook_exec(argv, envp, input, len, timeout_ms, ret);
	if (!argv[0] || argv[0][0] != '/')
		return -EINVAL;
	r = hook_argv_as(argv, cred, ids, as);
	if (r < 0)
		return r;

	return hook_exec(as, envp, input, len, timeout_ms, ret);
}

/*
 * Say in buf (n bytes) how a program that failed ended: "exit status 3",
 * "killed by signal 9" or "timed out after 30000 ms", then ": " and the
 * end of its stderr when it wrote any.  Any thread.
 */
void hook_result_describe(const struct hook_result *res, char *buf, size_t n)
{
	const char *abbrev;
	int len;

	if (res->timed_out)
		len = snprintf(buf, n, "timed out after %" PRIu64 " ms", res->elapsed_ms);
	else if (res->signaled && (abbrev = sigabbrev_np(res->term_signal)))
		len = snprintf(buf, n, "killed by signal %d (SIG%s)", res->term_signal, abbrev);
	else if (res->signaled)
		len = snprintf(buf, n, "killed by signal %d", res->term_signal);
	else
		len = snprintf(buf, n, "exit status %d", res->exit_status);
	if (len >= 0 && (size_t)len < n && res->err_tail[0])
		(void)snprintf(buf + len, n - (size_t)len, ": %.80s", res->err_tail);
}
