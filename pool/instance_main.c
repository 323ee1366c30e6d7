/*
 * vtpmd-instance: one libtpms TPM 2.0 per process (libtpms keeps global
 * state), started by the daemon.
 *
 *   vtpmd-instance manufacture --dir DIR --id ID [--ek rsa2048,ecc-p256]
 *       [--ak ecc-p256|rsa2048|none] [--ak-handle 0x81xxxxxx]
 *       --ca-cert PEM --ca-key PEM
 *   vtpmd-instance serve --dir DIR [--volatile]     (socket at fd 3)
 *
 * Both take --log stderr|syslog and --log-level 0-7 (a syslog priority),
 * from the daemon's own logging.  Exit status 0 on success, 1 on failure
 * (one log line says why).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ilog.h"
#include "manufacture.h"
#include "meta.h"
#include "worker.h"

#define INSTANCE_FD 3
#define INSTANCE_AK_HANDLE 0x81008000u

enum {
	OPT_DIR = 1,
	OPT_ID,
	OPT_EK,
	OPT_AK,
	OPT_AK_HANDLE,
	OPT_CA_CERT,
	OPT_CA_KEY,
	OPT_VOLATILE,
	OPT_LOG,
	OPT_LOG_LEVEL,
};

static const struct option instance_options[] = {
	{ "dir", required_argument, NULL, OPT_DIR },
	{ "id", required_argument, NULL, OPT_ID },
	{ "ek", required_argument, NULL, OPT_EK },
	{ "ak", required_argument, NULL, OPT_AK },
	{ "ak-handle", required_argument, NULL, OPT_AK_HANDLE },
	{ "ca-cert", required_argument, NULL, OPT_CA_CERT },
	{ "ca-key", required_argument, NULL, OPT_CA_KEY },
	{ "volatile", no_argument, NULL, OPT_VOLATILE },
	{ "log", required_argument, NULL, OPT_LOG },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ 0 },
};

struct instance_args {
	struct manufacture_opts mf;
	bool with_volatile;
	bool log_syslog;
	int log_level;
	char log_tag[96];	/* "worker[ID]" or "manufacture[ID]" */
};

/* The daemon's pid, for the parent-death signal handler. */
static pid_t instance_ppid;

/*
 * PR_SET_PDEATHSIG fires when the *thread* that spawned us ends, even while
 * the daemon lives on; only a changed parent pid means the daemon has gone.
 */
static void instance_on_pdeath(int sig)
{
	if (getppid() != instance_ppid)
		_exit(1);
}

static int instance_watch_parent(void)
{
	struct sigaction sa = { .sa_handler = instance_on_pdeath, .sa_flags = SA_RESTART };

	instance_ppid = getppid();
	if (sigaction(SIGHUP, &sa, NULL) < 0 || prctl(PR_SET_PDEATHSIG, SIGHUP) < 0)
		return -errno;

	/* The daemon may have gone before the prctl: then init adopted us. */
	return getppid() == 1 ? -ESRCH : 0;
}

static int instance_usage(const char *why)
{
	fprintf(stderr, "vtpmd-instance: %s\n"
		"usage: vtpmd-instance manufacture --dir DIR --id ID [--ek rsa2048,ecc-p256] "
		"[--ak ecc-p256|rsa2048|none] [--ak-handle 0x81xxxxxx] --ca-cert PEM --ca-key PEM\n"
		"       vtpmd-instance serve --dir DIR [--volatile]\n"
		"       both: [--log stderr|syslog] [--log-level 0-7]\n", why);

	return 1;
}

static int instance_parse_eks(const char *s, struct manufacture_opts *mf)
{
	char *copy = strdup(s);
	char *save = NULL;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	mf->ek_rsa = false;
	mf->ek_ecc = false;
	for (char *t = strtok_r(copy, ",", &save); t && r == 0; t = strtok_r(NULL, ",", &save)) {
		if (strcmp(t, "rsa2048") == 0)
			mf->ek_rsa = true;
		else if (strcmp(t, "ecc-p256") == 0)
			mf->ek_ecc = true;
		else if (strcmp(t, "none") != 0)
			r = -EINVAL;
	}
	free(copy);

	return r;
}

static int instance_parse_handle(const char *s, uint32_t *ret)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 16);
	if (errno || *end || strncmp(s, "0x", 2) != 0 || v < 0x81000000ul || v > 0x81fffffful ||
	    (v >= 0x81010000ul && v <= 0x8101fffful))
		return -EINVAL;
	*ret = (uint32_t)v;

	return 0;
}

static int instance_parse_opt(int c, const char *v, struct instance_args *a)
{
	switch (c) {
	case OPT_DIR:
		a->mf.dir = v;
		return 0;
	case OPT_ID:
		a->mf.id = v;
		return 0;
	case OPT_EK:
		return instance_parse_eks(v, &a->mf);
	case OPT_AK:
		return meta_alg_parse(v, &a->mf.ak_alg);
	case OPT_AK_HANDLE:
		return instance_parse_handle(v, &a->mf.ak_handle);
	case OPT_CA_CERT:
		a->mf.ca_cert = v;
		return 0;
	case OPT_CA_KEY:
		a->mf.ca_key = v;
		return 0;
	case OPT_VOLATILE:
		a->with_volatile = true;
		return 0;
	case OPT_LOG:
		if (strcmp(v, "syslog") != 0 && strcmp(v, "stderr") != 0)
			return -EINVAL;
		a->log_syslog = strcmp(v, "syslog") == 0;
		return 0;
	case OPT_LOG_LEVEL:
		if (v[0] < '0' || v[0] > '7' || v[1])
			return -EINVAL;
		a->log_level = v[0] - '0';
		return 0;
	default:
		return -EINVAL;
	}
}

static int instance_manufacture(struct instance_args *a)
{
	if (!a->mf.dir || !a->mf.id || !a->mf.ca_cert || !a->mf.ca_key || a->with_volatile)
		return instance_usage("manufacture needs --dir, --id, --ca-cert and --ca-key");
	if (!meta_id_is_valid(a->mf.id))
		return instance_usage("--id takes 1 to 63 characters from A-Z a-z 0-9 . _ -");
	(void)snprintf(a->log_tag, sizeof(a->log_tag), "manufacture[%s]", a->mf.id);
	ilog_open(a->log_tag, a->log_syslog, a->log_level);
	/* a refill must not slow the instance that serves clients meanwhile */
	(void)setpriority(PRIO_PROCESS, 0, 10);
	/*
	 * Die with the daemon: an orphan would go on writing into its .tmp
	 * directory while the next start deletes it as half-made.
	 */
	if (instance_watch_parent() < 0)
		return 1;

	return manufacture_run(&a->mf) < 0 ? 1 : 0;
}

static int instance_serve(struct instance_args *a)
{
	const char *base;
	struct stat st;

	if (!a->mf.dir || a->mf.id || a->mf.ca_cert || a->mf.ca_key)
		return instance_usage("serve takes --dir and --volatile only");
	if (fstat(INSTANCE_FD, &st) < 0 || !S_ISSOCK(st.st_mode))
		return instance_usage("serve needs the daemon's socket at fd 3");
	base = strrchr(a->mf.dir, '/');
	(void)snprintf(a->log_tag, sizeof(a->log_tag), "worker[%.63s]",
		       base && base[1] ? base + 1 : a->mf.dir);
	ilog_open(a->log_tag, a->log_syslog, a->log_level);

	/* Die with the daemon; its end of the socket closing also ends us. */
	if (instance_watch_parent() < 0)
		return 1;
	(void)signal(SIGPIPE, SIG_IGN);

	return worker_serve(a->mf.dir, a->with_volatile, INSTANCE_FD) < 0 ? 1 : 0;
}

/*
 * Parse the mode and options, then manufacture or serve.  Exit status 0 on
 * success, 1 on any failure (after one line on stderr).
 */
int main(int argc, char **argv)
{
	struct instance_args a = {
		.mf = {
			.ek_rsa = true,
			.ek_ecc = true,
			.ak_alg = META_ALG_ECC_P256,
			.ak_handle = INSTANCE_AK_HANDLE,
		},
		.log_level = LOG_INFO,
	};
	const char *mode;
	int c;

	if (argc < 2)
		return instance_usage("no mode given");
	mode = argv[1];

	/* ESYS logs through its own logger: keep stderr to our one line. */
	(void)setenv("TSS2_LOG", "all+none", 0);

	optind = 2;
	while ((c = getopt_long(argc, argv, "", instance_options, NULL)) != -1)
		if (instance_parse_opt(c, optarg, &a) < 0)
			return instance_usage("bad option");
	if (optind != argc)
		return instance_usage("unexpected argument");

	if (strcmp(mode, "manufacture") == 0)
		return instance_manufacture(&a);
	if (strcmp(mode, "serve") == 0)
		return instance_serve(&a);

	return instance_usage("unknown mode");
}
