#pragma once

#include <stddef.h>
#include <stdint.h>

#include <tss2/tss2_tcti.h>

/*
 * A tpm2-tss TCTI that hands each command to a callback and returns what it
 * answers, so that ESYS can drive a TPM reached in any way: libtpms in the
 * same process, or an instance process through struct inst.
 */

struct tcti;

/* Run one command; 0 with the response in rsp, or a negative errno. */
typedef int (*tcti_transmit_fn)(void *userdata, uint8_t locality, const uint8_t *cmd,
				size_t len, uint8_t *rsp, size_t rsp_size, size_t *ret_len);

int tcti_new(tcti_transmit_fn fn, void *userdata, struct tcti **ret);
TSS2_TCTI_CONTEXT *tcti_context(struct tcti *t);
void tcti_free(struct tcti *t);
