#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tss2/tss2_common.h>

#include "tpmcmd.h"

/*
 * The resource manager of one tpmrm0 open: its own handle space for
 * transient objects (virtual handles) and sessions (the TPM's handles,
 * checked for ownership), their saved contexts, and its limits.  Each
 * command goes prepare (load what it names, translate its handles) ->
 * the instance -> commit (translate the response, save and flush what is
 * loaded).  It talks to the instance only through the space_tpm it is
 * given, on the caller's thread, and never logs.
 */

#define SPACE_BUF_MAX 4096
/*
 * Resource-manager refusals carry this layer, as the kernel's tpmrm0 does
 * (11 << 16; tpm2-tss names that number TSS2_RESMGR_RC_LAYER).
 */
#define SPACE_RC_LAYER TSS2_RESMGR_RC_LAYER
/* A session saved more than this many context saves ago is saved again. */
#define SPACE_GAP_RESAVE 0x8000u

struct space;

struct space_limits {
	unsigned max_objects;
	unsigned max_sessions;
	size_t max_pending;	/* bytes: the command and the saved contexts */
};

/* The instance a space's commands go to, and what is known of it. */
struct space_tpm {
	void *userdata;
	/* One command to the instance; 0 or a negative errno. */
	int (*transmit)(void *userdata, const uint8_t *cmd, size_t len,
			uint8_t *rsp, size_t size, size_t *ret_len);
	uint64_t next_seq;		/* its session context counter, as last seen */
	uint8_t buf[SPACE_BUF_MAX];	/* answers to the space's own commands */
};

struct space *space_new(const struct space_limits *l);
void space_free(struct space *s);
int space_prepare(struct space *s, const struct tpmcmd_table *t, struct space_tpm *tpm,
		  uint8_t *cmd, size_t len, uint8_t *rsp, size_t size, size_t *ret_len);
int space_commit(struct space *s, struct space_tpm *tpm, uint8_t *rsp, size_t *len,
		 size_t size);
void space_reset(struct space *s);
void space_flush(struct space *s, struct space_tpm *tpm);
int space_refresh(struct space *s, struct space_tpm *tpm, uint64_t before);
unsigned space_count(const struct space *s, bool sessions);
