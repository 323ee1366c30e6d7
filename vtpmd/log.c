#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static bool log_foreground = true;
static int log_mirror_fd = -1;
static int log_level = LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "err", [LOG_WARNING] = "warn", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/*
 * Start logging: to stderr when foreground, else to syslog under ident.
 * Called once from main() before any thread starts.
 */
void log_open(const char *ident, bool foreground, int level)
{
	log_foreground = foreground;
	log_level = level;
	if (!foreground)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

/*
 * Also copy syslog lines of warn and above to fd (the terminal that
 * started a daemon, until it is ready), or stop with -1, closing the old
 * one.  Main thread.
 */
void log_mirror(int fd)
{
	int old;

	pthread_mutex_lock(&log_lock);
	old = log_mirror_fd;
	log_mirror_fd = fd;
	pthread_mutex_unlock(&log_lock);
	if (old >= 0)
		(void)close(old);
}

void log_set_level(int level)
{
	__atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

int log_get_level(void)
{
	return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

/* Whether lines go to stderr (not syslog); fixed by log_open(). */
bool log_is_foreground(void)
{
	return log_foreground;
}

/* Map a level name ("err", "warn", "notice", "info", "debug") to its priority, or -1. */
int log_level_parse(const char *s)
{
	size_t i;

	for (i = LOG_ERR; i <= LOG_DEBUG; i++)
		if (strcmp(s, log_names[i]) == 0)
			return (int)i;
	if (strcmp(s, "warning") == 0)
		return LOG_WARNING;
	return -1;
}

void log_vmsg(int prio, const char *fmt, va_list ap)
{
	int saved_errno = errno;
	struct timespec ts;
	struct tm tm;
	char line[2048];

	if (prio > log_get_level())
		goto out;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (!log_foreground) {
		syslog(prio, "%s", line);
		pthread_mutex_lock(&log_lock);
		if (log_mirror_fd >= 0 && prio <= LOG_WARNING)
			dprintf(log_mirror_fd, "vtpmd: %s\n", line);
		pthread_mutex_unlock(&log_lock);
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "%02d:%02d:%02d.%03ld %s %s\n", tm.tm_hour, tm.tm_min,
		tm.tm_sec, ts.tv_nsec / 1000000, log_names[prio], line);
	pthread_mutex_unlock(&log_lock);
out:
	errno = saved_errno;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

/*
 * Log fmt with ' err="<strerror(-r)>"' appended and return r, which is a
 * negative errno.
 */
int log_msg_errno(int prio, int r, const char *fmt, ...)
{
	char buf[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_msg(prio, "%s err=\"%s\"", buf, strerror(r < 0 ? -r : r));

	return r;
}

/* Log at err and exit(1).  Only for start-up failures in main(). */
void log_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}
