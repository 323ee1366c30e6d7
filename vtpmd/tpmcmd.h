#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * TPM 2.0 command and response helpers for the daemon's own use: the
 * health probe, the command-attribute table, and what the rotation policy
 * needs to know about a client's command.  Marshalling goes through
 * tss2-mu; nothing here talks to an instance.
 */

#define TPMCMD_HEADER 10

struct tpmcmd_table;

struct tpmcmd_health {
	int64_t sessions_avail;		/* TPM_PT_HR_ACTIVE_AVAIL */
	int64_t loaded_avail;		/* TPM_PT_HR_LOADED_AVAIL */
	int64_t transient_avail;	/* TPM_PT_HR_TRANSIENT_AVAIL */
	int64_t lockout_counter;	/* TPM_PT_LOCKOUT_COUNTER */
	int64_t max_auth_fail;		/* TPM_PT_MAX_AUTH_FAIL */
};

uint32_t tpmcmd_code(const uint8_t *cmd, size_t len);
uint32_t tpmcmd_rc(const uint8_t *rsp, size_t len);
bool tpmcmd_rc_is_exhaustion(uint32_t rc);
bool tpmcmd_rc_is_auth_failure(uint32_t rc);
bool tpmcmd_may_allocate(uint32_t cc);
int tpmcmd_build_getcap(uint32_t cap, uint32_t property, uint32_t count,
			uint8_t *buf, size_t size, size_t *ret_len);
int tpmcmd_build_shutdown(bool state, uint8_t *buf, size_t size, size_t *ret_len);
int tpmcmd_build_readpublic(uint32_t handle, uint8_t *buf, size_t size, size_t *ret_len);
int tpmcmd_parse_health(const uint8_t *rsp, size_t len, struct tpmcmd_health *ret);
int tpmcmd_failure_response(uint32_t rc, uint8_t *buf, size_t size, size_t *ret_len);

int tpmcmd_table_new(struct tpmcmd_table **ret);
int tpmcmd_table_add(struct tpmcmd_table *t, const uint8_t *rsp, size_t len,
		     uint32_t *ret_next);
void tpmcmd_table_free(struct tpmcmd_table *t);
int tpmcmd_handle_count(const struct tpmcmd_table *t, uint32_t cc);
int tpmcmd_response_handles(const struct tpmcmd_table *t, uint32_t cc);
bool tpmcmd_is_replayable(const struct tpmcmd_table *t, const uint8_t *cmd, size_t len);
