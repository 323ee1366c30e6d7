#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "meta.h"

/*
 * The daemon's handle on one instance process (vtpmd-instance), which runs
 * one libtpms TPM 2.0 and speaks framed messages over a socketpair.  All
 * calls on one struct inst must be serialised by the caller.
 */

struct inst;

/* Largest command or response, as for the kernel's TPM devices. */
#define INST_BUF_MAX 4096
/* Default time limit of one command in an instance. */
#define INST_COMMAND_TIMEOUT_MS 30000

struct inst_manufacture_params {
	bool ek_rsa;		/* RSA 2048 EK at 0x81010001, cert at 0x01c00002 */
	bool ek_ecc;		/* ECC P-256 EK at 0x81010002, cert at 0x01c0000a */
	enum meta_alg ak_alg;	/* META_ALG_NONE: no AK */
	uint32_t ak_handle;
	const char *ca_cert;	/* PEM files of the CA that signs EK certificates */
	const char *ca_key;
};

/* Where an instance process logs, as the daemon does: syslog or stderr. */
struct inst_log {
	bool to_syslog;
	int level;		/* lines above this syslog priority are dropped */
};

int inst_manufacture(const char *helper, const struct inst_log *log, const char *dir,
		     const char *id, const struct inst_manufacture_params *p);
int inst_start(const char *helper, const struct inst_log *log, const char *dir,
	       bool with_volatile, struct inst **ret);
int inst_transmit(struct inst *in, uint8_t locality, const uint8_t *cmd,
		  size_t len, uint8_t *rsp, size_t rsp_size, size_t *ret_len);
int inst_send(struct inst *in, uint8_t locality, const uint8_t *cmd, size_t len);
int inst_await(struct inst *in, int64_t limit_us, uint8_t *rsp, size_t rsp_size,
	       size_t *ret_len);
void inst_set_timeout(struct inst *in, uint64_t timeout_ms);
int inst_startup(struct inst *in);
int inst_drop_volatile(struct inst *in);
int inst_save_volatile(struct inst *in);
void inst_stop(struct inst *in);
pid_t inst_pid(const struct inst *in);
bool inst_is_started(const struct inst *in);
int inst_fd(const struct inst *in);
