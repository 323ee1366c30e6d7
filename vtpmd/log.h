#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

/*
 * Operator log: stderr in the foreground, syslog otherwise.  One line per
 * event, "<subsystem>: <event> key=value ...".  Every call preserves errno;
 * the _errno variants append "err=\"<text>\"" for the negative errno r and
 * return r, so that logging and returning is one statement.
 */

void log_open(const char *ident, bool foreground, int level);
void log_mirror(int fd);
void log_set_level(int level);
int log_get_level(void);
bool log_is_foreground(void);
void log_vmsg(int prio, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_msg_errno(int prio, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int log_level_parse(const char *s);

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_err_errno(r, ...) log_msg_errno(LOG_ERR, r, __VA_ARGS__)
#define log_warn_errno(r, ...) log_msg_errno(LOG_WARNING, r, __VA_ARGS__)
#define log_notice_errno(r, ...) log_msg_errno(LOG_NOTICE, r, __VA_ARGS__)
#define log_info_errno(r, ...) log_msg_errno(LOG_INFO, r, __VA_ARGS__)
#define log_debug_errno(r, ...) log_msg_errno(LOG_DEBUG, r, __VA_ARGS__)
