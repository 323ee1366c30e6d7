#include "ilog.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static const char *ilog_tag = "instance";
static bool ilog_syslog;
static int ilog_level = LOG_INFO;

static const char *const ilog_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "err", [LOG_WARNING] = "warn", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/*
 * Log as tag ("worker[ID]"), which must outlive the process's logging, to
 * syslog or to stderr, lines above level dropped.  Before any other ilog().
 */
void ilog_open(const char *tag, bool to_syslog, int level)
{
	ilog_tag = tag;
	ilog_syslog = to_syslog;
	if (level >= LOG_EMERG && level <= LOG_DEBUG)
		ilog_level = level;
	if (to_syslog)
		openlog("vtpmd-instance", LOG_PID, LOG_DAEMON);
}

/* One line "tag: message"; errno is kept.  The process has one thread. */
void ilog(int prio, const char *fmt, ...)
{
	int saved_errno = errno;
	struct timespec ts;
	char line[1024];
	struct tm tm;
	va_list ap;

	if (prio < LOG_EMERG || prio > ilog_level)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (ilog_syslog) {
		syslog(prio, "%s: %s", ilog_tag, line);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		fprintf(stderr, "%02d:%02d:%02d.%03ld %s %s: %s\n", tm.tm_hour, tm.tm_min,
			tm.tm_sec, ts.tv_nsec / 1000000, ilog_names[prio], ilog_tag, line);
	}
	errno = saved_errno;
}
