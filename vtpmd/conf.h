#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/*
 * The configuration file: INI, read with inih, mapped through a table of
 * keys with types, defaults and bounds.  Strict: unknown sections and keys
 * and duplicate keys are errors, "x-" keys are ignored.
 */

#define CONF_MAX_HOOKS 16
#define CONF_MAX_ARGS 32
#define CONF_ERR_MAX 512
#define CONF_TOKEN_MAX 4096	/* bytes of a bearer token */

enum conf_phase {
	CONF_PHASE_PREPARE = 1 << 0,
	CONF_PHASE_COMMIT = 1 << 1,
	CONF_PHASE_BOTH = CONF_PHASE_PREPARE | CONF_PHASE_COMMIT,
};

enum conf_hook_type {
	CONF_HOOK_AUTO,		/* not set: exec if exec is set, else webhook */
	CONF_HOOK_EXEC,
	CONF_HOOK_WEBHOOK,
	CONF_HOOK_KEYLIME,
};

struct conf_hook {
	char *name;		/* from [hook.NAME] */
	char **argv;		/* exec, split into words; NULL-terminated */
	unsigned phases;	/* enum conf_phase bits */
	uint64_t timeout_ms;	/* one attempt (for keylime: one step) */
	bool has_user;		/* user = NAME: run programs as that user */
	uid_t user_uid;
	gid_t user_gid;		/* the user's primary group, its only group */
	int type;		/* enum conf_hook_type, never AUTO after loading */
	char *url;		/* webhook: https URL */
	char *tls_ca;		/* PEM bundle; NULL: the system's CAs */
	char *tls_cert;		/* client certificate for mutual TLS */
	char *tls_key;
	bool tls_verify;	/* no: accept any server certificate (warned at start) */
	char *token_file;
	char *token;		/* secret read from token_file; never printed or logged */
	unsigned retries;	/* attempts after the first before "failed" */
	uint64_t retry_min_ms;	/* first back-off, doubled per attempt, with jitter */
	uint64_t retry_max_ms;
	/* type = keylime */
	char *verifier;		/* base URLs, no trailing slash */
	char *registrar;
	char *api_version;	/* of the verifier and registrar REST API, "2.6" */
	char *agent_uuid;
	char **restart_argv;	/* agent_restart, NULL-terminated */
	unsigned exec_line;	/* where exec and agent_restart were set (0: not), */
	unsigned restart_line;	/* for vtpmd -n's file checks */
	char *agent_ip;		/* when the registrar record has none */
	unsigned agent_port;
	char *supported_version; /* the agent's API version sent on re-add */
	char *tpm_policy;	/* JSON text */
	char *hash_algs;	/* comma-separated lists */
	char *enc_algs;
	char *sign_algs;
	char *runtime_policy_name;
	char *mb_policy_name;
};

struct conf {
	/* [vtpmd] */
	char *state_dir;
	unsigned state_dir_line;	/* for vtpmd -n's file checks */
	char *mountpoint;
	int log_level;		/* syslog priority: LOG_ERR .. LOG_DEBUG */
	bool allow_other;
	uid_t dev_uid;
	gid_t dev_gid;
	mode_t dev_mode;

	/* [pool] */
	unsigned pool_size;
	bool ek_rsa;
	bool ek_ecc;
	int ak_alg;		/* enum meta_alg */
	uint32_t ak_handle;
	unsigned workers;	/* parallel manufacturing jobs; 0 = cores */
	char *ca_cert;		/* NULL: vtpmd's own CA under state_dir */
	char *ca_key;
	unsigned ca_cert_line;	/* where ca_cert and ca_key were set (0: not), */
	unsigned ca_key_line;	/* for vtpmd -n's file checks */
	uint64_t command_timeout_ms;	/* an instance that takes longer is hung */

	/* [rotate] */
	unsigned session_watermark;
	unsigned object_watermark;
	unsigned lockout_margin;
	uint64_t max_quotes;
	uint64_t max_commands;
	uint64_t max_age_ms;
	bool on_exhaustion;
	uint64_t grace_ms;

	/* [rm]: limits of each tpmrm0 open */
	unsigned rm_max_objects;
	unsigned rm_max_sessions;
	uint64_t rm_max_pending;	/* bytes: queued command and saved contexts */
	unsigned rm_max_opens;		/* tpmrm0 opens at a time */

	/* [hook.NAME] */
	struct conf_hook hooks[CONF_MAX_HOOKS];
	size_t n_hooks;
};

int conf_load_file(const char *path, struct conf **ret, char *err, size_t err_size);
int conf_load_buffer(const char *name, const char *buf, size_t len,
		     struct conf **ret, char *err, size_t err_size);
int conf_dump(const struct conf *c, FILE *f);
void conf_free(struct conf *c);

/* "30s", "5m", "100ms", "2h", "1d"; a bare number is seconds. */
int conf_parse_duration(const char *s, uint64_t *ret_ms);
/* "4096", "4k", "1M", "2G" (powers of 1024). */
int conf_parse_size(const char *s, uint64_t *ret_bytes);
