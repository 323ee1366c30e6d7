#include "inst.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"

/* How long an instance may take to load its state and to terminate. */
#define INST_READY_TIMEOUT_MS 10000
#define INST_STOP_TIMEOUT_MS 2000
/* A manufacture is tens of milliseconds; an RSA prime search a few seconds at worst. */
#define INST_MANUFACTURE_TIMEOUT_MS 120000
#define INST_FD 3

extern char **environ;

struct inst {
	pid_t pid;		/* the instance process, 0 if it was never spawned */
	int fd;			/* our end of the socketpair; -1 once broken */
	bool started;		/* TPM2_Startup done in the loaded state */
	int timeout_ms;		/* for one command or request; see inst_set_timeout() */
	uint64_t sent_ns;	/* CLOCK_MONOTONIC when the command in flight was sent */
	int cpu;		/* the one CPU it may run on, -1 for any */
	uint8_t buf[IPC_PAYLOAD_MAX];	/* frames received */
};

/*
 * The --log and --log-level arguments of an instance that logs as log says
 * (NULL: to stderr, up to LOG_INFO); the level goes into buf.
 */
static const char *inst_log_args(const struct inst_log *log, char buf[2])
{
	int level = log ? log->level : LOG_INFO;

	if (level < LOG_EMERG || level > LOG_DEBUG)
		level = LOG_INFO;
	buf[0] = (char)('0' + level);
	buf[1] = '\0';

	return log && log->to_syslog ? "syslog" : "stderr";
}

/*
 * Spawn helper with argv and the given file actions, with a clean signal
 * state (the daemon blocks signals in its threads and the child must not
 * inherit that) and in a process group of its own, so that a ^C meant for
 * the daemon does not kill its instances behind its back: the daemon ends
 * them, or they end when its socket closes.  Returns 0 or a negative errno.
 */
static int inst_spawn(const char *helper, char *const argv[], posix_spawn_file_actions_t *fa,
		      pid_t *ret_pid)
{
	posix_spawnattr_t attr;
	sigset_t none;
	sigset_t all;
	int r;

	r = posix_spawnattr_init(&attr);
	if (r)
		return -r;
	sigemptyset(&none);
	sigfillset(&all);
	r = posix_spawnattr_setsigmask(&attr, &none);
	if (!r)
		r = posix_spawnattr_setsigdefault(&attr, &all);
	if (!r)
		r = posix_spawnattr_setpgroup(&attr, 0);
	if (!r)
		r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
					     POSIX_SPAWN_SETPGROUP);
	if (!r)
		r = posix_spawn(ret_pid, helper, fa, &attr, argv, environ);
	(void)posix_spawnattr_destroy(&attr);

	return -r;
}

static int inst_waitpid(pid_t pid, int *ret_status)
{
	pid_t p;

	do {
		p = waitpid(pid, ret_status, 0);
	} while (p < 0 && errno == EINTR);

	return p < 0 ? -errno : 0;
}

/*
 * Wait for pid to exit within timeout_ms; past it, SIGKILL it, reap it and
 * return -ETIMEDOUT.  A pidfd lets poll() wake on the exit itself.
 */
static int inst_wait_deadline(pid_t pid, int timeout_ms, int *ret_status)
{
	struct pollfd pfd = { .events = POLLIN };
	int n;
	int r;

	pfd.fd = pidfd_open(pid, 0);
	if (pfd.fd < 0)
		return inst_waitpid(pid, ret_status);
	do {
		n = poll(&pfd, 1, timeout_ms);
	} while (n < 0 && errno == EINTR);
	(void)close(pfd.fd);
	if (n == 0)
		(void)kill(pid, SIGKILL);
	r = inst_waitpid(pid, ret_status);

	return n == 0 ? -ETIMEDOUT : r;
}

static void inst_ek_arg(const struct inst_manufacture_params *p, char *buf, size_t size)
{
	(void)snprintf(buf, size, "%s%s%s", p->ek_rsa ? "rsa2048" : "",
		       p->ek_rsa && p->ek_ecc ? "," : "", p->ek_ecc ? "ecc-p256" : "");
	if (!buf[0])
		(void)snprintf(buf, size, "none");
}

/*
 * Manufacture an instance in dir (which must hold no state) by running
 * "helper manufacture" and waiting for it.  The helper logs its failure as
 * log says (NULL: on the inherited stderr) and removes what it wrote.  Returns 0, -EINVAL for
 * bad parameters, -EIO when the helper failed, or another negative errno
 * when it could not be run.  Any thread; blocks for the manufacture (tens of
 * milliseconds).  The caller must not reap children with waitpid(-1).
 */
int inst_manufacture(const char *helper, const struct inst_log *log, const char *dir,
		     const char *id, const struct inst_manufacture_params *p)
{
	const char *ak = meta_alg_name(p->ak_alg);
	posix_spawn_file_actions_t fa;
	char ak_handle[16];
	char level[2];
	const char *to = inst_log_args(log, level);
	char eks[32];
	char *const argv[] = {
		(char *)helper, "manufacture", "--dir", (char *)dir, "--id", (char *)id,
		"--ek", eks, "--ak", (char *)ak, "--ak-handle", ak_handle,
		"--ca-cert", (char *)p->ca_cert, "--ca-key", (char *)p->ca_key,
		"--log", (char *)to, "--log-level", level, NULL,
	};
	pid_t pid;
	int status;
	int r;

	if (!helper || !dir || !meta_id_is_valid(id) || !p->ca_cert || !p->ca_key || !ak)
		return -EINVAL;
	inst_ek_arg(p, eks, sizeof(eks));
	(void)snprintf(ak_handle, sizeof(ak_handle), "0x%08" PRIx32, p->ak_handle);

	r = -posix_spawn_file_actions_init(&fa);
	if (r < 0)
		return r;
	r = -posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	if (r == 0)
		r = inst_spawn(helper, argv, &fa, &pid);
	(void)posix_spawn_file_actions_destroy(&fa);
	if (r < 0)
		return r;

	r = inst_wait_deadline(pid, INST_MANUFACTURE_TIMEOUT_MS, &status);
	if (r < 0)
		return r;

	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int inst_spawn_serve(const char *helper, const struct inst_log *log, const char *dir,
			    bool with_volatile, int sock, pid_t *ret_pid)
{
	posix_spawn_file_actions_t fa;
	char level[2];
	const char *to = inst_log_args(log, level);
	char *const argv[] = {
		(char *)helper, "serve", "--dir", (char *)dir, "--log", (char *)to,
		"--log-level", level, with_volatile ? "--volatile" : NULL, NULL,
	};
	int r;

	r = -posix_spawn_file_actions_init(&fa);
	if (r < 0)
		return r;
	r = -posix_spawn_file_actions_adddup2(&fa, sock, INST_FD);
	if (r == 0)
		r = -posix_spawn_file_actions_addclosefrom_np(&fa, INST_FD + 1);
	if (r == 0)
		r = inst_spawn(helper, argv, &fa, ret_pid);
	(void)posix_spawn_file_actions_destroy(&fa);

	return r;
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);

	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wait up to timeout_us for the socket to become readable. */
static int inst_poll_us(struct inst *in, int64_t timeout_us)
{
	struct pollfd pfd = { .fd = in->fd, .events = POLLIN };
	struct timespec ts = {
		.tv_sec = timeout_us / 1000000,
		.tv_nsec = (timeout_us % 1000000) * 1000,
	};
	int n;

	do {
		n = ppoll(&pfd, 1, &ts, NULL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	return n == 0 ? -ETIMEDOUT : 0;
}

/* The connection is broken: every later request fails at once. */
static void inst_break(struct inst *in)
{
	(void)close(in->fd);
	in->fd = -1;
}

/*
 * Receive the next frame.  A transport failure or a protocol violation
 * breaks the connection for good: every later call answers -EPIPE.
 */
static int inst_recv(struct inst *in, int timeout_ms, uint32_t *ret_type, size_t *ret_len)
{
	int r;

	if (in->fd < 0)
		return -EPIPE;
	r = timeout_ms >= 0 ? inst_poll_us(in, (int64_t)timeout_ms * 1000) : 0;
	if (r == 0)
		r = ipc_recv(in->fd, ret_type, in->buf, sizeof(in->buf), ret_len);
	if (r < 0) {
		inst_break(in);
		return r == -EMSGSIZE ? -EBADMSG : r;
	}

	return 0;
}

static int inst_recv_status(struct inst *in, uint32_t want, int timeout_ms,
			    struct ipc_status *ret)
{
	uint32_t type;
	size_t len;
	int r;

	r = inst_recv(in, timeout_ms, &type, &len);
	if (r < 0)
		return r;
	if (type != want || ipc_status_parse(in->buf, len, ret) < 0) {
		inst_break(in);
		return -EBADMSG;
	}

	return 0;
}

static int inst_await_ready(struct inst *in)
{
	struct ipc_status st;
	int r;

	r = inst_recv_status(in, IPC_READY, INST_READY_TIMEOUT_MS, &st);
	if (r < 0)
		return r;
	if (st.status < 0)
		return st.status;
	in->started = st.flags & IPC_READY_STARTED;

	return 0;
}

/*
 * Start an instance process ("helper serve") on the state in dir, with the
 * saved volatile state when with_volatile, and wait until it has loaded it.
 * The socketpair end it gets is its fd 3; it inherits no other descriptor
 * but stdin, stdout and stderr, and logs as log says (NULL: on stderr).
 * Returns 0, -EIO (or the instance's errno) when it could not load the
 * state, -ETIMEDOUT, or another negative errno.  *ret is released with
 * inst_stop().  Any thread; the caller must not reap
 * children with waitpid(-1).
 */
int inst_start(const char *helper, const struct inst_log *log, const char *dir,
	       bool with_volatile, struct inst **ret)
{
	struct inst *in;
	int sv[2];
	int r;

	in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		free(in);
		return r;
	}
	in->fd = sv[0];
	in->timeout_ms = INST_COMMAND_TIMEOUT_MS;
	in->cpu = -1;

	/* dup2 onto the same number would keep FD_CLOEXEC set: move it. */
	if (sv[1] == INST_FD) {
		sv[1] = fcntl(INST_FD, F_DUPFD_CLOEXEC, INST_FD + 1);
		(void)close(INST_FD);
	}
	if (sv[1] < 0)
		r = -errno;
	else
		r = inst_spawn_serve(helper, log, dir, with_volatile, sv[1], &in->pid);
	if (sv[1] >= 0)
		(void)close(sv[1]);
	if (r == 0)
		r = inst_await_ready(in);
	if (r < 0) {
		inst_stop(in);
		return r;
	}

	*ret = in;

	return 0;
}

/*
 * An instance that did not answer in time is hung (or stopped): kill it and
 * reap it now, so that nothing waits on it again and its pid is not reused
 * under us.
 */
static void inst_kill(struct inst *in)
{
	int status;

	if (in->pid <= 0)
		return;
	(void)kill(in->pid, SIGKILL);
	(void)inst_waitpid(in->pid, &status);
	in->pid = 0;
}

/*
 * Limit how long one command or request on in may take, from now on; the
 * default is INST_COMMAND_TIMEOUT_MS.  0 means no limit.  The caller
 * serialises this with the other calls on in.
 */
void inst_set_timeout(struct inst *in, uint64_t timeout_ms)
{
	in->timeout_ms = timeout_ms == 0 || timeout_ms > INT_MAX ? -1 : (int)timeout_ms;
}

/*
 * Keep the instance on the CPU of the thread that talks to it.  The two
 * take turns (one sends and sleeps, the other wakes, answers and sleeps),
 * so they never want two CPUs at once; left to itself the scheduler wakes
 * the instance on the idle CPU instead, and on a virtual machine a
 * wake-up across CPUs costs tens of microseconds each way, several times
 * a small command's whole work.  Changes only when the caller moved;
 * a failure (a cpuset that forbids the CPU) leaves the instance where it
 * was.
 */
static void inst_follow(struct inst *in)
{
	cpu_set_t set;
	int cpu = sched_getcpu();

	if (cpu < 0 || cpu == in->cpu || in->pid <= 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(in->pid, sizeof(set), &set);
	in->cpu = cpu;	/* tried: not again until the caller moves */
}

/*
 * Send one TPM command (cmd, len bytes, at most INST_BUF_MAX) to run at
 * locality; inst_await() gets its response.  Returns 0, -EINVAL for an
 * empty command, -EMSGSIZE over INST_BUF_MAX, -EPIPE when the instance has
 * gone.  The caller serialises calls on one inst.
 */
int inst_send(struct inst *in, uint8_t locality, const uint8_t *cmd, size_t len)
{
	int r;

	if (len == 0)
		return -EINVAL;
	if (len > INST_BUF_MAX)
		return -EMSGSIZE;
	if (in->fd < 0)
		return -EPIPE;

	inst_follow(in);
	r = ipc_send(in->fd, IPC_CMD, &locality, 1, cmd, len);
	if (r == 0)
		in->sent_ns = monotonic_ns();

	return r;
}

/*
 * Wait for the response to the command inst_send() sent and put it in rsp.
 * With limit_us >= 0, give up after that long while the command is still
 * within its timeout: -EINPROGRESS, and a later call picks the response up.
 * Otherwise wait out the command's timeout (counted from the send).  TPM
 * errors are in the response.  Returns 0, -EMSGSIZE when the response does
 * not fit rsp_size, -EPIPE when the instance has gone, -EBADMSG when it
 * broke the protocol, -ETIMEDOUT when it did not answer within its timeout
 * (it is killed then, and every later call answers -EPIPE), or the
 * negative errno it reported.
 */
int inst_await(struct inst *in, int64_t limit_us, uint8_t *rsp, size_t rsp_size,
	       size_t *ret_len)
{
	struct ipc_status st;
	uint64_t elapsed_ms;
	uint32_t type;
	int wait = in->timeout_ms;
	size_t n;
	int r;

	if (in->fd < 0)
		return -EPIPE;
	if (wait >= 0) {
		elapsed_ms = (monotonic_ns() - in->sent_ns) / 1000000;
		wait = elapsed_ms >= (uint64_t)wait ? 0 : wait - (int)elapsed_ms;
	}
	if (limit_us >= 0 && (wait < 0 || limit_us < (int64_t)wait * 1000)) {
		r = inst_poll_us(in, limit_us);
		if (r == -ETIMEDOUT)
			return -EINPROGRESS;
		if (r < 0) {
			inst_break(in);
			return r;
		}
		wait = -1;	/* readable: no second poll(2) */
	}
	r = inst_recv(in, wait, &type, &n);
	if (r == -ETIMEDOUT)
		inst_kill(in);
	if (r < 0)
		return r;

	if (type == IPC_STATUS && ipc_status_parse(in->buf, n, &st) == 0 && st.status < 0)
		return st.status;
	if (type != IPC_RSP || n > INST_BUF_MAX) {
		inst_break(in);
		return -EBADMSG;
	}
	if (n > rsp_size)
		return -EMSGSIZE;
	memcpy(rsp, in->buf, n);
	*ret_len = n;

	return 0;
}

/*
 * Run one TPM command on the instance: inst_send(), then inst_await()
 * without a limit of its own.  Same returns as those two.
 */
int inst_transmit(struct inst *in, uint8_t locality, const uint8_t *cmd, size_t len,
		  uint8_t *rsp, size_t rsp_size, size_t *ret_len)
{
	int r;

	r = inst_send(in, locality, cmd, len);
	if (r == 0)
		r = inst_await(in, -1, rsp, rsp_size, ret_len);

	return r;
}

static int inst_request(struct inst *in, uint32_t type, struct ipc_status *ret)
{
	int r;

	if (in->fd < 0)
		return -EPIPE;
	r = ipc_send(in->fd, type, NULL, 0, NULL, 0);
	if (r == 0)
		r = inst_recv_status(in, IPC_STATUS, in->timeout_ms, ret);
	if (r == -ETIMEDOUT)
		inst_kill(in);

	return r;
}

/*
 * Run TPM2_Startup(CLEAR) in an instance loaded without volatile state, and
 * lock its platform hierarchy again with a random authValue.  Returns 0,
 * -EALREADY when the TPM has had Startup, -EIO when the TPM refused (the
 * instance logs the response code), or a transport errno as inst_transmit().
 */
int inst_startup(struct inst *in)
{
	struct ipc_status st;
	int r;

	r = inst_request(in, IPC_STARTUP, &st);
	if (r < 0)
		return r;
	if (st.status < 0)
		return st.status;
	in->started = true;

	return 0;
}

/*
 * Delete the instance directory's saved volatile state: once the instance
 * runs, that state is stale and must never be loaded again.  Returns 0, or
 * the instance's file system errno, or a transport errno.
 */
int inst_drop_volatile(struct inst *in)
{
	struct ipc_status st;
	int r;

	r = inst_request(in, IPC_DROP_VOLATILE, &st);

	return r < 0 ? r : st.status;
}

/*
 * Store the instance's current volatile state atomically in its directory,
 * so that inst_start() with it resumes here.  Returns 0, -EINVAL when the
 * TPM has not had TPM2_Startup, the instance's errno, or a transport errno.
 */
int inst_save_volatile(struct inst *in)
{
	struct ipc_status st;
	int r;

	r = inst_request(in, IPC_SAVE_VOLATILE, &st);

	return r < 0 ? r : st.status;
}

static void inst_reap(struct inst *in)
{
	struct timespec step = { .tv_nsec = 5 * 1000 * 1000 };
	int status;
	pid_t p;

	for (int waited = 0; waited < INST_STOP_TIMEOUT_MS; waited += 5) {
		p = waitpid(in->pid, &status, WNOHANG);
		if (p != 0 && !(p < 0 && errno == EINTR))
			return;
		(void)nanosleep(&step, NULL);
	}

	(void)kill(in->pid, SIGKILL);
	(void)inst_waitpid(in->pid, &status);
}

/*
 * Stop the instance: TERMINATE (libtpms shuts down, nothing is saved), wait
 * for its exit for a short while, then SIGKILL it; free in.  NULL is a
 * no-op.  Blocks for at most a few seconds.
 */
void inst_stop(struct inst *in)
{
	struct ipc_status st;

	if (!in)
		return;

	if (in->fd >= 0 && ipc_send(in->fd, IPC_TERMINATE, NULL, 0, NULL, 0) == 0)
		(void)inst_recv_status(in, IPC_STATUS, INST_STOP_TIMEOUT_MS, &st);
	if (in->fd >= 0)
		(void)close(in->fd);
	if (in->pid > 0)
		inst_reap(in);
	free(in);
}

/*
 * The instance's process id, 0 if it was never spawned.
 */
pid_t inst_pid(const struct inst *in)
{
	return in->pid;
}

/*
 * True when the instance's TPM has had TPM2_Startup: it loaded a volatile
 * state saved after Startup, or inst_startup() succeeded.
 */
bool inst_is_started(const struct inst *in)
{
	return in->started;
}

/*
 * The daemon's end of the instance's socket (-1 once broken), for poll
 * loops and for tests that send raw frames.  Still owned by in.
 */
int inst_fd(const struct inst *in)
{
	return in->fd;
}
