#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Re-enrollment hooks run as programs: posix_spawn (never a shell), the
 * event on standard input, bounded by a timeout after which the program
 * and its process group are killed.
 */

#define HOOK_PATH "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
#define HOOK_ENV_MAX 8			/* entries in hook_exec()'s envp */
#define HOOK_ERR_TAIL 512		/* bytes of standard error kept, NUL included */
#define HOOK_TIMEOUT_MAX_MS (24ull * 3600 * 1000)

struct hook_result {
	int exit_status;	/* valid when !signaled && !timed_out; -1 if it did not exit */
	int term_signal;	/* valid when signaled */
	int signaled;
	int timed_out;		/* killed, with its process group, at the deadline */
	uint64_t elapsed_ms;
	size_t input_written;	/* bytes of input the program took before closing stdin */
	char err_tail[HOOK_ERR_TAIL];	/* end of its stderr, made one printable line */
};

int hook_exec(char *const argv[], char *const envp[], const char *input, size_t len,
	      uint64_t timeout_ms, struct hook_result *ret);

/* Who a hook program runs as, when not as the daemon's own user. */
struct hook_cred {
	uid_t uid;
	gid_t gid;		/* its only group: supplementary groups are cleared */
};

/* setpriv(1) switches to a hook's user between posix_spawn and the program. */
#define HOOK_SETPRIV "/usr/bin/setpriv"
#define HOOK_ARGS_MAX 64		/* words of a program's argv, setpriv's included */

int hook_exec_as(char *const argv[], char *const envp[], const char *input, size_t len,
		 uint64_t timeout_ms, const struct hook_cred *cred, struct hook_result *ret);
void hook_result_describe(const struct hook_result *res, char *buf, size_t n);
