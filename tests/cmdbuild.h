#pragma once

/*
 * Raw TPM 2.0 commands for tests, marshalled with tss2-mu: a header, the
 * handle area, and optionally one empty password authorization.
 * Header-only; include after harness.h.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

struct cmd {
	uint8_t b[2048];
	size_t off;
};

/* Start command cc with handles h[0..n); pw adds one empty password session. */
static inline void cmd_begin(struct cmd *c, bool pw, uint32_t cc, const uint32_t *h, size_t n)
{
	size_t i;

	c->off = 0;
	Tss2_MU_UINT16_Marshal(pw ? TPM2_ST_SESSIONS : TPM2_ST_NO_SESSIONS, c->b, sizeof(c->b),
			       &c->off);
	Tss2_MU_UINT32_Marshal(0, c->b, sizeof(c->b), &c->off);
	Tss2_MU_UINT32_Marshal(cc, c->b, sizeof(c->b), &c->off);
	for (i = 0; i < n; i++)
		Tss2_MU_UINT32_Marshal(h[i], c->b, sizeof(c->b), &c->off);
	if (pw) {
		/* authorization size, then handle, nonce, attributes, hmac */
		Tss2_MU_UINT32_Marshal(9, c->b, sizeof(c->b), &c->off);
		Tss2_MU_UINT32_Marshal(TPM2_RS_PW, c->b, sizeof(c->b), &c->off);
		Tss2_MU_UINT16_Marshal(0, c->b, sizeof(c->b), &c->off);
		Tss2_MU_UINT8_Marshal(0, c->b, sizeof(c->b), &c->off);
		Tss2_MU_UINT16_Marshal(0, c->b, sizeof(c->b), &c->off);
	}
}

/* Write the size field; returns the command's length. */
static inline size_t cmd_end(struct cmd *c)
{
	size_t pos = 2;

	Tss2_MU_UINT32_Marshal((uint32_t)c->off, c->b, sizeof(c->b), &pos);
	return c->off;
}
