#pragma once

#include <stdbool.h>
#include <syslog.h>

/*
 * Logging of an instance process.  The daemon tells it, on its command
 * line, where its own log goes: lines in the daemon's foreground format on
 * stderr, or syslog (a daemon in the background has no stderr).
 */
void ilog_open(const char *tag, bool to_syslog, int level);
void ilog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
