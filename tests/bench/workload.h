#pragma once

#include <stddef.h>
#include <stdint.h>

#include <tss2/tss2_esys.h>

/*
 * The benchmark's workload, the same on every target: ESYS calls timed one
 * by one over whatever TCTI the target is reached through.
 */

struct workload;

enum workload_op {
	WORKLOAD_GETRANDOM,	/* TPM2_GetRandom(16) */
	WORKLOAD_QUOTE_ECC,	/* TPM2_Quote, ECC P-256 AK, sha256:0-7 */
	WORKLOAD_QUOTE_RSA,	/* TPM2_Quote, RSA 2048 AK, sha256:0-7 */
	WORKLOAD_CLF,		/* TPM2_Create (ECC key), TPM2_Load, TPM2_FlushContext */
	WORKLOAD_OPS,
};

const char *workload_op_name(enum workload_op op);
int workload_op_parse(const char *s, enum workload_op *ret);
int workload_open(const char *conf, struct workload **ret);
void workload_close(struct workload *w);
int workload_startup(struct workload *w);
int workload_prepare(struct workload *w, enum workload_op op);
int workload_run(struct workload *w, enum workload_op op);
void workload_finish(struct workload *w, enum workload_op op);
uint64_t workload_now_ns(void);
