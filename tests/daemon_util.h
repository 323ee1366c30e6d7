#pragma once

/*
 * Helpers for tests that run the real daemon: a private state directory
 * and mount under a temporary directory, vtpmd started in the foreground,
 * readiness by bounded polling of the status file, a clean stop.
 * Header-only; include after harness.h.
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct vd {
	char dir[256];		/* temporary directory holding everything */
	char mnt[300];
	char state[300];
	char events[300];
	char conf[300];
	char log[300];
	char tpm0[320];
	pid_t pid;
};

static inline void vd_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Why the daemon tests cannot run here, or NULL. */
static inline const char *vd_unsupported(void)
{
	if (geteuid() != 0)
		return "needs root to mount FUSE";
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		return "no /dev/fuse";
	if (!getenv("VTPMD_BIN") || !getenv("VTPMD_INSTANCE_BIN"))
		return "VTPMD_BIN and VTPMD_INSTANCE_BIN not set (run through meson)";
	return NULL;
}

static inline int vd_init(struct vd *d)
{
	snprintf(d->dir, sizeof(d->dir), "/tmp/vtpmd-test.XXXXXX");
	if (!mkdtemp(d->dir))
		return -errno;
	snprintf(d->mnt, sizeof(d->mnt), "%s/mnt", d->dir);
	snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
	snprintf(d->events, sizeof(d->events), "%s/events", d->dir);
	snprintf(d->conf, sizeof(d->conf), "%s/vtpmd.conf", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/vtpmd.log", d->dir);
	snprintf(d->tpm0, sizeof(d->tpm0), "%s/tpm0", d->mnt);
	d->pid = -1;
	if (mkdir(d->mnt, 0755) < 0 || mkdir(d->events, 0700) < 0)
		return -errno;

	return 0;
}

/* Write the config: the base keys, a hook that keeps events, then extra. */
static inline int vd_write_conf(struct vd *d, const char *pool_extra, const char *extra)
{
	const char *src = getenv("VTPMD_SOURCE_ROOT");
	FILE *f = fopen(d->conf, "w");

	if (!f)
		return -errno;
	fprintf(f, "[vtpmd]\nstate_dir = %s\nmountpoint = %s\nlog_level = debug\n\n"
		   "[pool]\nsize = 2\n%s\n"
		   "[hook.keep]\nexec = %s/scripts/hook-save-event %s\n\n%s",
		d->state, d->mnt, pool_extra ? pool_extra : "", src ? src : ".", d->events,
		extra ? extra : "");

	return fclose(f) == 0 ? 0 : -errno;
}

static inline bool vd_mounted(const struct vd *d)
{
	char status[400];

	snprintf(status, sizeof(status), "%s/status", d->mnt);
	return access(status, R_OK) == 0;
}

/*
 * Start vtpmd -f on the written config, run by the programs in wrap (a
 * NULL-terminated argv prefix such as valgrind and its options, or NULL);
 * wait up to 20 s (times slow) for the mount.
 */
static inline int vd_start_wrapped(struct vd *d, const char *const *wrap, int slow)
{
	posix_spawn_file_actions_t fa;
	char *argv[32];
	int n = 0;
	int i;
	int r;

	for (i = 0; wrap && wrap[i] && n < 26; i++)
		argv[n++] = (char *)wrap[i];
	argv[n++] = getenv("VTPMD_BIN");
	argv[n++] = (char *)"-c";
	argv[n++] = d->conf;
	argv[n++] = (char *)"-f";
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 2, d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	r = posix_spawnp(&d->pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0) {
		d->pid = -1;
		return -r;
	}
	for (i = 0; i < 400 * slow; i++) {
		if (vd_mounted(d))
			return 0;
		if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
			d->pid = -1;
			return -ECHILD;
		}
		vd_sleep_ms(50);
	}

	return -ETIMEDOUT;
}

/* Start vtpmd -f on the written config; wait up to 20 s for the mount. */
static inline int vd_start(struct vd *d)
{
	return vd_start_wrapped(d, NULL, 1);
}

/* Send sig to the daemon; for SIGTERM/SIGKILL wait for it (10 s, then KILL). */
static inline int vd_stop(struct vd *d, int sig)
{
	int status = 0;
	int i;

	if (d->pid <= 0)
		return 0;
	kill(d->pid, sig);
	for (i = 0; i < 200; i++) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid)
			break;
		vd_sleep_ms(50);
	}
	if (i == 200) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, &status, 0);
	}
	d->pid = -1;
	if (umount2(d->mnt, MNT_DETACH) == 0)
		return 1;	/* the daemon left its mount behind */

	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static inline void vd_cleanup(struct vd *d)
{
	char cmd[400];

	if (d->pid > 0)
		vd_stop(d, SIGTERM);
	if (d->dir[0]) {
		(void)umount2(d->mnt, MNT_DETACH);
		if (getenv("VTPMD_TEST_KEEP")) {
			printf("# kept %s\n", d->dir);
			return;
		}
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
		(void)system(cmd);
	}
}

/* Run a shell command line; its output goes to the TAP stream as "# " lines. */
static inline int vd_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int vd_sh(const char *fmt, ...)
{
	char cmd[4096];
	char full[4200];
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "( %s ) 2>&1 | sed 's/^/# /'; exit ${PIPESTATUS[0]}", cmd);
	fflush(stdout);
	{
		char *argv[] = { (char *)"/bin/bash", (char *)"-c", full, NULL };
		pid_t pid;

		if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
			return -1;
		if (waitpid(pid, &status, 0) < 0)
			return -1;
	}

	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Read a file into buf (NUL-terminated); returns its length or -errno. */
static inline ssize_t vd_read(const char *path, char *buf, size_t size)
{
	ssize_t n;
	size_t len = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -errno;
	while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';

	return (ssize_t)len;
}

/* An integer field of the status JSON ("key": N), or -1. */
static inline long long vd_status_num(struct vd *d, const char *key)
{
	char path[400];
	char buf[8192];
	char pat[80];
	char *p;

	snprintf(path, sizeof(path), "%s/status", d->mnt);
	if (vd_read(path, buf, sizeof(buf)) < 0)
		return -1;
	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	p = strstr(buf, pat);

	return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* The "instance" of the status file's active identity into buf, or "". */
static inline void vd_status_active(struct vd *d, char *buf, size_t size)
{
	char path[400];
	char st[8192];
	char *p;
	char *e;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/status", d->mnt);
	if (vd_read(path, st, sizeof(st)) < 0)
		return;
	p = strstr(st, "\"instance\": \"");
	if (!p)
		return;
	p += strlen("\"instance\": \"");
	e = strchr(p, '"');
	if (e && (size_t)(e - p) < size) {
		memcpy(buf, p, (size_t)(e - p));
		buf[e - p] = '\0';
	}
}

/* Wait until the status number key is at least want (bounded, 30 s). */
static inline long long vd_wait_num(struct vd *d, const char *key, long long want)
{
	long long v = -1;
	int i;

	for (i = 0; i < 600; i++) {
		v = vd_status_num(d, key);
		if (v >= want)
			break;
		vd_sleep_ms(50);
	}

	return v;
}

/* Count the files in the events directory whose name ends in suffix. */
static inline int vd_count_events(struct vd *d, const char *suffix)
{
	char cmd[512];
	char buf[64];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c -- '%s$'", d->events, suffix);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (fgets(buf, sizeof(buf), p))
		n = atoi(buf);
	pclose(p);

	return n;
}

/* TPM2_GetRandom(8), TPM_ST_NO_SESSIONS */
static const uint8_t vd_getrandom8[] = {
	0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x08,
};

/*
 * One command on an open device file: write, poll up to timeout_ms, read.
 * Returns the response length or -errno (-ETIMEDOUT when poll gave up).
 */
static inline ssize_t vd_xfer(int fd, const uint8_t *cmd, size_t len, uint8_t *rsp,
			      size_t size, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (write(fd, cmd, len) != (ssize_t)len)
		return -errno;
	if (poll(&p, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	n = read(fd, rsp, size);

	return n < 0 ? -errno : n;
}

/* The response code of a response of n bytes, or 0xffffffff if n < 10. */
static inline uint32_t vd_rc(const uint8_t *rsp, ssize_t n)
{
	if (n < 10)
		return 0xffffffffu;
	return (uint32_t)rsp[6] << 24 | (uint32_t)rsp[7] << 16 | (uint32_t)rsp[8] << 8 | rsp[9];
}

/* GetRandom(8) on a fresh open of tpm0: its response code, or 0xffffffff. */
static inline uint32_t vd_getrandom_rc(struct vd *d)
{
	uint8_t rsp[64];
	ssize_t n;
	int fd;

	fd = open(d->tpm0, O_RDWR | O_NONBLOCK);
	if (fd < 0)
		return 0xffffffffu;
	n = vd_xfer(fd, vd_getrandom8, sizeof(vd_getrandom8), rsp, sizeof(rsp), 60000);
	close(fd);

	return vd_rc(rsp, n);
}

/* The pid of the process serving the active instance, or -1. */
static inline pid_t vd_active_pid(struct vd *d)
{
	char cmd[600];
	char id[128];
	char buf[64];
	FILE *p;
	pid_t pid = -1;

	vd_status_active(d, id, sizeof(id));
	if (!id[0])
		return -1;
	snprintf(cmd, sizeof(cmd), "pgrep -f -- 'serve --dir %s/instances/%s( |$)'", d->state, id);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (fgets(buf, sizeof(buf), p))
		pid = (pid_t)atoi(buf);
	pclose(p);

	return pid;
}

/*
 * True when the daemon's log (its stderr, and its instances') holds no
 * AddressSanitizer, LeakSanitizer or UBSan report; prints any it finds.
 * Call after vd_stop(), so that the exit-time leak check has run.
 */
static inline bool vd_sanitizer_clean(const struct vd *d)
{
	return vd_sh("grep -s -n -A40 -E '(ERROR: (Address|Leak)Sanitizer|runtime error:)' '%s' "
		     "| head -n 120; exit $((PIPESTATUS[0] == 0))", d->log) == 0;
}
