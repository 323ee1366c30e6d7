/*
 * vtpmd: TPM 2.0 devices that never wear out.  main() wires the parts:
 * configuration, the pool of manufactured instances, the multiplexer, the
 * rotator and the FUSE endpoint, then waits for signals.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "fsutil.h"
#include "fusedev.h"
#include "localca.h"
#include "log.h"
#include "mux.h"
#include "outbox.h"
#include "pool.h"
#include "rotate.h"

struct daemon {
	struct conf *conf;		/* the active configuration */
	struct conf **old_confs;	/* replaced by SIGHUP, freed at exit */
	size_t n_old;
	const char *conf_path;
	char helper[PATH_MAX];
	char ca_cert[PATH_MAX];
	char ca_key[PATH_MAX];
	int lock_fd;
	struct pool *pool;
	struct rotate *rot;
	struct outbox *outbox;
	struct mux *mux;
	struct fusedev *dev;
	atomic_bool mount_lost;		/* the mount went away under us */
};

static struct daemon d = { .lock_fd = -1 };

/* Write end of the pipe to the waiting parent until start-up is over. */
static int ready_fd = -1;

/* Modes that let others into what holds secrets. */
#define STATE_DIR_LOOSE 0077	/* the state directory: 0700 or tighter */
#define KEY_FILE_LOOSE 0177	/* a private key: 0600 or tighter */

/*
 * What the start requires of a directory or file that holds secrets: of
 * kind type (S_IFDIR or S_IFREG), and no bit of loose in its mode.
 * Returns 0, -ENOTDIR or -EINVAL for the wrong kind, -EPERM when it is
 * open to others (*ret_mode then says how), or -errno from stat(2).
 */
static int private_check(const char *path, mode_t type, mode_t loose, mode_t *ret_mode)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	if ((st.st_mode & S_IFMT) != type)
		return type == S_IFDIR ? -ENOTDIR : -EINVAL;
	*ret_mode = st.st_mode & 07777;

	return st.st_mode & loose ? -EPERM : 0;
}

/* One problem found by vtpmd -n, at the line of the key it comes from. */
static int check_fail(const char *conf_path, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int check_fail(const char *conf_path, unsigned line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%u: ", conf_path, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);

	return -EINVAL;
}

/* A file the configuration names: a regular file that mode allows. */
static int check_file(const char *conf_path, unsigned line, const char *what, const char *path,
		      int mode)
{
	struct stat st;

	if (stat(path, &st) < 0 || access(path, mode) < 0)
		return check_fail(conf_path, line, "%s '%s': %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return check_fail(conf_path, line, "%s '%s' is not a regular file", what, path);

	return 0;
}

/*
 * vtpmd -n: beyond the syntax, what the start would refuse (a state
 * directory open to others, a CA key open to others) and the files the
 * configuration names (CA files readable, hook programs executable), so
 * that a broken setup fails the check rather than the start or the first
 * rotation.  Stops at the first problem, like the syntax check.
 */
static int check_files(const struct conf *c, const char *conf_path)
{
	mode_t mode = 0;
	size_t i;
	int r;

	/* a state directory that does not exist yet is made private at start */
	r = private_check(c->state_dir, S_IFDIR, STATE_DIR_LOOSE, &mode);
	if (r == -ENOTDIR)
		return check_fail(conf_path, c->state_dir_line, "state_dir '%s' is not a directory",
				  c->state_dir);
	if (r == -EPERM)
		return check_fail(conf_path, c->state_dir_line,
				  "state_dir '%s' is open to others (mode %04o, want 0700)",
				  c->state_dir, mode);
	if (c->ca_cert) {
		r = check_file(conf_path, c->ca_cert_line, "ca_cert", c->ca_cert, R_OK);
		if (r < 0)
			return r;
		r = check_file(conf_path, c->ca_key_line, "ca_key", c->ca_key, R_OK);
		if (r < 0)
			return r;
		if (private_check(c->ca_key, S_IFREG, KEY_FILE_LOOSE, &mode) == -EPERM)
			return check_fail(conf_path, c->ca_key_line,
					  "ca_key '%s' is open to others (mode %04o, want 0600)",
					  c->ca_key, mode);
	}
	for (i = 0; i < c->n_hooks; i++) {
		const struct conf_hook *h = &c->hooks[i];

		if (h->argv && h->argv[0]) {
			r = check_file(conf_path, h->exec_line, "exec", h->argv[0], X_OK);
			if (r < 0)
				return r;
		}
		if (h->restart_argv && h->restart_argv[0]) {
			r = check_file(conf_path, h->restart_line, "agent_restart",
				       h->restart_argv[0], X_OK);
			if (r < 0)
				return r;
		}
	}

	return 0;
}

static const struct option main_options[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "foreground", no_argument, NULL, 'f' },
	{ "debug", no_argument, NULL, 'd' },
	{ "check", no_argument, NULL, 'n' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vtpmd -c FILE [-f] [-d] [-n]\n"
		"  -c, --config FILE  configuration file (required)\n"
		"  -f, --foreground   stay in the foreground, log to stderr\n"
		"  -d, --debug        debug: foreground and log level debug\n"
		"  -n, --check        check the configuration, print it, and exit 0 or 1\n"
		"  -h, --help         this help\n");
}

static void pool_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void pool_log(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

static int dev_open(void *userdata, struct fusedev_file *f)
{
	log_debug("fuse: open kind=%s fd=%llu",
		  fusedev_file_kind(f) == FUSEDEV_TPM0 ? "tpm0" : "tpmrm0",
		  (unsigned long long)fusedev_file_id(f));
	/* a tpmrm0 open gets its own handle space from the multiplexer */
	return mux_client_open(d.mux, f);
}

static int dev_submit(void *userdata, struct fusedev_file *f, const uint8_t *cmd, size_t len)
{
	return mux_submit(d.mux, f, cmd, len);
}

static void dev_release(void *userdata, struct fusedev_file *f)
{
	log_debug("fuse: release fd=%llu", (unsigned long long)fusedev_file_id(f));
	/* the mux thread flushes what the open left in the instance */
	mux_client_close(d.mux, f);
}

static int dev_status(void *userdata, char **ret_buf, size_t *ret_len)
{
	int r;

	r = rotate_status(d.rot, ret_buf);
	if (r == 0)
		*ret_len = strlen(*ret_buf);

	return r;
}

static void dev_log(void *userdata, int prio, const char *msg)
{
	log_msg(prio, "%s", msg);
}

/*
 * The mount went away under us (umount from outside): clients cannot
 * reach the TPM any more, so stop cleanly, saving the active instance,
 * and exit with a failure for the supervisor to restart vtpmd, which
 * mounts again on the same state.
 */
static void dev_ended(void *userdata)
{
	atomic_store(&d.mount_lost, true);
	(void)kill(getpid(), SIGTERM);
}

static const struct fusedev_ops dev_ops = {
	.open = dev_open,
	.submit = dev_submit,
	.release = dev_release,
	.status = dev_status,
	.log = dev_log,
	.ended = dev_ended,
};

/* The instance helper: $VTPMD_INSTANCE_BIN, beside our binary, or libexecdir. */
static int find_helper(char *buf, size_t size)
{
	const char *env = getenv("VTPMD_INSTANCE_BIN");
	char self[PATH_MAX];
	ssize_t n;

	if (env && env[0] == '/') {
		snprintf(buf, size, "%s", env);
		return access(buf, X_OK) == 0 ? 0 : -errno;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		snprintf(buf, size, "%s/vtpmd-instance", dirname(self));
		if (access(buf, X_OK) == 0)
			return 0;
	}
	snprintf(buf, size, "%s/vtpmd-instance", VTPMD_LIBEXECDIR);

	return access(buf, X_OK) == 0 ? 0 : -errno;
}

/* Create the state directory (0700) or check that an existing one is private. */
static int state_dir_open(const char *dir)
{
	char path[PATH_MAX];
	mode_t mode = 0;
	int r;

	r = fsutil_mkdir(dir, 0700);
	if (r < 0)
		return log_err_errno(r, "vtpmd: cannot create the state directory path=%s", dir);
	r = private_check(dir, S_IFDIR, STATE_DIR_LOOSE, &mode);
	if (r == -EPERM) {
		log_err("vtpmd: state directory is readable by others, refusing to start path=%s mode=%04o",
			dir, mode);
		return r;
	}
	if (r < 0)
		return log_err_errno(r, "vtpmd: cannot use the state directory path=%s", dir);
	snprintf(path, sizeof(path), "%s/lock", dir);
	d.lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d.lock_fd < 0)
		return log_err_errno(-errno, "vtpmd: cannot open the lock file path=%s", path);
	if (flock(d.lock_fd, LOCK_EX | LOCK_NB) < 0) {
		log_err("vtpmd: another vtpmd is running on this state directory path=%s", dir);
		return -EBUSY;
	}

	return 0;
}

/*
 * A private key must be a regular file that only its owner can read or
 * write (0600 or tighter); anything looser refuses the start.
 */
static int key_file_check(const char *path)
{
	mode_t mode = 0;
	int r;

	r = private_check(path, S_IFREG, KEY_FILE_LOOSE, &mode);
	if (r == -EINVAL)
		log_err("vtpmd: the key file is not a regular file path=%s", path);
	else if (r == -EPERM)
		log_err("vtpmd: the key file is open to others, refusing to start path=%s mode=%04o (want 0600)",
			path, mode);
	else if (r < 0)
		log_err_errno(r, "vtpmd: cannot read the key file path=%s", path);

	return r;
}

/* The configured CA: both files must be there, the key private. */
static int ca_configured_open(const struct conf *c)
{
	snprintf(d.ca_cert, sizeof(d.ca_cert), "%s", c->ca_cert);
	snprintf(d.ca_key, sizeof(d.ca_key), "%s", c->ca_key);
	if (access(d.ca_cert, R_OK) < 0)
		return log_err_errno(-errno, "vtpmd: cannot read the configured CA certificate path=%s",
				     d.ca_cert);

	return key_file_check(d.ca_key);
}

static int ca_open(const struct conf *c)
{
	char dir[PATH_MAX];
	int r;

	if (c->ca_cert)
		return ca_configured_open(c);
	snprintf(dir, sizeof(dir), "%s/ca", c->state_dir);
	snprintf(d.ca_cert, sizeof(d.ca_cert), "%s/ca.pem", dir);
	snprintf(d.ca_key, sizeof(d.ca_key), "%s/ca.key", dir);
	if (access(d.ca_cert, F_OK) == 0 && access(d.ca_key, F_OK) == 0)
		return key_file_check(d.ca_key);
	r = fsutil_mkdir(dir, 0700);
	if (r == 0)
		r = localca_create(d.ca_cert, d.ca_key);
	if (r < 0)
		return log_err_errno(r, "vtpmd: cannot create the local CA path=%s", dir);
	log_notice("vtpmd: created the local EK CA path=%s", d.ca_cert);

	return 0;
}

/*
 * The mountpoint must be an existing directory with nothing mounted on it.
 * A dead FUSE mount that a killed vtpmd left behind is detached first.
 */
static bool mount_is_dead(const char *path)
{
	char status[PATH_MAX];
	struct stat st;

	snprintf(status, sizeof(status), "%s/status", path);
	if (stat(path, &st) == 0 && stat(status, &st) == 0)
		return false;

	return errno == ENOTCONN || errno == ECONNABORTED;
}

static int mountpoint_check(const char *path)
{
	struct stat st;
	struct stat up;
	char parent[PATH_MAX];

	if (mount_is_dead(path)) {
		if (umount2(path, MNT_DETACH) < 0)
			return log_err_errno(-errno, "vtpmd: cannot detach a dead mount path=%s", path);
		log_notice("vtpmd: detached a dead mount left by an earlier run path=%s", path);
	}
	if (stat(path, &st) < 0)
		return log_err_errno(-errno, "vtpmd: mountpoint unusable path=%s", path);
	if (!S_ISDIR(st.st_mode)) {
		log_err("vtpmd: mountpoint is not a directory path=%s", path);
		return -ENOTDIR;
	}
	snprintf(parent, sizeof(parent), "%s/..", path);
	if (stat(parent, &up) < 0)
		return log_err_errno(-errno, "vtpmd: mountpoint unusable path=%s", parent);
	if (st.st_dev != up.st_dev) {
		log_err("vtpmd: something is already mounted on the mountpoint path=%s", path);
		return -EBUSY;
	}

	return 0;
}

/* The parent of a daemon that did not say it is ready learns it failed. */
static void ready_fail(void)
{
	uint8_t status = 1;

	if (ready_fd >= 0)
		(void)!write(ready_fd, &status, 1);
}

static void null_stdio(void)
{
	int fd;

	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)dup2(fd, STDIN_FILENO);
	(void)dup2(fd, STDOUT_FILENO);
	(void)dup2(fd, STDERR_FILENO);
	(void)close(fd);
}

/* Start-up is over: the parent exits 0, and so does the terminal mirror. */
static void ready_done(void)
{
	uint8_t status = 0;

	if (ready_fd < 0)
		return;
	(void)!write(ready_fd, &status, 1);
	(void)close(ready_fd);
	ready_fd = -1;
	log_mirror(-1);
}

/*
 * Go to the background, but keep the caller until start-up is over: the
 * parent exits with 0 once the mount is ready, or 1 when start-up failed,
 * so "vtpmd -c FILE" in a script fails as it should.  Before any thread.
 */
static void daemonize(void)
{
	uint8_t status = 1;
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		log_fatal("vtpmd: cannot daemonize err=\"%s\"", strerror(errno));
	pid = fork();
	if (pid < 0)
		log_fatal("vtpmd: cannot daemonize err=\"%s\"", strerror(errno));
	if (pid > 0) {
		(void)close(fds[1]);
		if (read(fds[0], &status, 1) != 1)
			status = 1;
		_exit(status);
	}
	(void)close(fds[0]);
	ready_fd = fds[1];
	atexit(ready_fail);
	null_stdio();
	if (setsid() < 0 || chdir("/") < 0)
		log_fatal("vtpmd: cannot daemonize err=\"%s\"", strerror(errno));
}

static int pool_open(const struct conf *c)
{
	struct pool_config pc = {
		.state_dir = c->state_dir,
		.helper = d.helper,
		.size = c->pool_size,
		.workers = c->workers ? c->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN),
		.grace_ms = c->grace_ms,
		.params = {
			.ek_rsa = c->ek_rsa,
			.ek_ecc = c->ek_ecc,
			.ak_alg = (enum meta_alg)c->ak_alg,
			.ak_handle = c->ak_handle,
			.ca_cert = d.ca_cert,
			.ca_key = d.ca_key,
		},
		/* where the daemon logs: in the background it holds no stderr */
		.inst_log = { !log_is_foreground(), log_get_level() },
		.log = pool_log,
	};

	return pool_new(&pc, &d.pool);
}

static int serve_start(void)
{
	const struct conf *c = d.conf;
	struct fusedev_config fc = {
		.mountpoint = c->mountpoint,
		.allow_other = c->allow_other,
		.uid = c->dev_uid,
		.gid = c->dev_gid,
		.mode = c->dev_mode,
		.debug = false,
	};
	struct mux_rotator ops;
	struct inst *first;
	struct meta meta;
	int r;

	r = outbox_new(c->state_dir, c, &d.outbox);
	if (r < 0)
		return log_err_errno(r, "vtpmd: cannot open the outbox path=%s/outbox", c->state_dir);
	r = outbox_start(d.outbox);
	if (r < 0)
		return log_err_errno(r, "vtpmd: cannot start the outbox");
	r = rotate_new(c, d.pool, d.outbox, &d.rot);
	if (r < 0)
		return log_err_errno(r, "vtpmd: cannot create the rotator");
	rotate_mux_ops(d.rot, &ops);
	r = mux_new(c, &ops, &d.mux);
	if (r < 0)
		return r;
	r = rotate_first(d.rot, d.mux, &first, &meta);
	if (r < 0)
		return r;
	r = mux_start(d.mux, first, &meta);
	if (r < 0)
		return r;
	r = rotate_start(d.rot);
	if (r < 0)
		return r;
	r = fusedev_start(&fc, &dev_ops, NULL, &d.dev);
	if (r < 0)
		return log_err_errno(r, "vtpmd: cannot mount path=%s", c->mountpoint);

	return 0;
}

/* Hooks that accept any server certificate: said at every start and reload. */
static void warn_tls(const struct conf *c)
{
	size_t i;

	for (i = 0; i < c->n_hooks; i++) {
		if (c->hooks[i].type != CONF_HOOK_EXEC && !c->hooks[i].tls_verify)
			log_warn("vtpmd: TLS verification is off, any server can take the events hook=%s",
				 c->hooks[i].name);
	}
}

static void reload(void)
{
	char err[CONF_ERR_MAX] = "";
	struct conf *c;
	struct conf **n;
	int r;

	r = conf_load_file(d.conf_path, &c, err, sizeof(err));
	if (r < 0) {
		log_err("vtpmd: reload failed, keeping the running configuration err=\"%s\"", err);
		return;
	}
	if (strcmp(c->state_dir, d.conf->state_dir) != 0 ||
	    strcmp(c->mountpoint, d.conf->mountpoint) != 0)
		log_warn("vtpmd: state_dir and mountpoint changes take effect at the next start");
	n = realloc(d.old_confs, (d.n_old + 1) * sizeof(*n));
	if (!n) {
		conf_free(c);
		return;
	}
	d.old_confs = n;
	d.old_confs[d.n_old++] = d.conf;
	d.conf = c;
	log_set_level(c->log_level);
	pool_set_inst_log(d.pool, &(struct inst_log){ !log_is_foreground(), c->log_level });
	pool_set_size(d.pool, c->pool_size);
	mux_set_policy(d.mux, c);
	rotate_set_conf(d.rot, c);
	warn_tls(c);
	log_notice("vtpmd: configuration reloaded path=%s pool_size=%u", d.conf_path, c->pool_size);
}

static int signal_loop(const sigset_t *set)
{
	siginfo_t si;

	for (;;) {
		if (sigwaitinfo(set, &si) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		switch (si.si_signo) {
		case SIGHUP:
			reload();
			break;
		case SIGUSR1:
			log_notice("vtpmd: rotation requested by signal pid=%d", (int)si.si_pid);
			rotate_request(d.rot, "operator");
			break;
		default:
			if (atomic_load(&d.mount_lost)) {
				log_err("vtpmd: the mount went away, stopping path=%s",
					d.conf->mountpoint);
				return -ENODEV;
			}
			log_notice("vtpmd: stopping signal=%d", si.si_signo);
			return 0;
		}
	}
}

/* A clean stop keeps the active instance's volatile state for the next start. */
static void save_active(struct inst *active, const char *id)
{
	int r;

	if (!active)
		return;
	r = inst_save_volatile(active);
	if (r < 0)
		log_err_errno(r, "vtpmd: cannot save the volatile state inst=%s", id);
	else
		log_info("vtpmd: saved the volatile state inst=%s", id);
}

static void teardown(void)
{
	struct inst *active = NULL;
	struct meta meta = {0};
	size_t i;

	fusedev_stop(d.dev);
	/* the mux thread calls the rotator: stop it first */
	mux_stop(d.mux);
	rotate_free(d.rot);
	outbox_free(d.outbox);
	if (d.mux) {
		mux_free(d.mux, &active, &meta);
		save_active(active, meta.id);
		inst_stop(active);
		meta_clear(&meta);
	}
	pool_free(d.pool);
	for (i = 0; i < d.n_old; i++)
		conf_free(d.old_confs[i]);
	free(d.old_confs);
	conf_free(d.conf);
	if (d.lock_fd >= 0)
		(void)close(d.lock_fd);
}

int main(int argc, char **argv)
{
	char err[CONF_ERR_MAX] = "";
	bool foreground = false;
	bool check = false;
	bool debug = false;
	sigset_t set;
	int opt;
	int r;

	while ((opt = getopt_long(argc, argv, "c:fdnh", main_options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			d.conf_path = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'd':
			foreground = debug = true;
			break;
		case 'n':
			check = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!d.conf_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	r = conf_load_file(d.conf_path, &d.conf, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s\n", err[0] ? err : strerror(-r));
		return 1;
	}
	if (check) {
		r = check_files(d.conf, d.conf_path);
		if (r == 0)
			conf_dump(d.conf, stdout);
		conf_free(d.conf);
		return r < 0 ? 1 : 0;
	}
	log_open("vtpmd", foreground, debug ? LOG_DEBUG : d.conf->log_level);
	/* errors reach the caller's terminal until ready; no child inherits it */
	if (!foreground)
		log_mirror(fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3));
	if (find_helper(d.helper, sizeof(d.helper)) < 0)
		log_fatal("vtpmd: cannot find the instance helper vtpmd-instance path=%s", d.helper);

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (state_dir_open(d.conf->state_dir) < 0 || mountpoint_check(d.conf->mountpoint) < 0 ||
	    ca_open(d.conf) < 0)
		log_fatal("vtpmd: cannot start");
	if (!foreground)
		daemonize();
	r = pool_open(d.conf);
	if (r < 0)
		log_fatal("vtpmd: cannot open the pool path=%s err=\"%s\"", d.conf->state_dir,
			  strerror(-r));
	warn_tls(d.conf);
	r = serve_start();
	if (r < 0) {
		teardown();
		log_fatal("vtpmd: cannot start serving");
	}
	log_notice("vtpmd: ready path=%s pool_size=%u", d.conf->mountpoint, d.conf->pool_size);
	ready_done();
	r = signal_loop(&set);
	teardown();
	log_notice("vtpmd: stopped");

	return r < 0 ? 1 : 0;
}
