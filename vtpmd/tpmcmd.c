#include "tpmcmd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "util.h"

#define TPMCMD_TABLE_MAX 512

struct tpmcmd_entry {
	uint32_t cc;
	uint8_t handles;
	bool rhandle;		/* the response has a handle area */
};

struct tpmcmd_table {
	struct tpmcmd_entry e[TPMCMD_TABLE_MAX];	/* sorted by cc */
	size_t n;
};

/* Command code of a framed command, 0 when it is too short. */
uint32_t tpmcmd_code(const uint8_t *cmd, size_t len)
{
	return len >= TPMCMD_HEADER ? util_be32(cmd + 6) : 0;
}

/* Response code of a framed response, TPM_RC_FAILURE when it is too short. */
uint32_t tpmcmd_rc(const uint8_t *rsp, size_t len)
{
	return len >= TPMCMD_HEADER ? util_be32(rsp + 6) : TPM2_RC_FAILURE;
}

/*
 * Response codes that mean the instance ran out of something a fresh one
 * has: slots, the context counter's gap, NV space, or DA lockout.  All are
 * format-zero codes, so they compare exactly (Part 2, 6.6).
 */
bool tpmcmd_rc_is_exhaustion(uint32_t rc)
{
	switch (rc) {
	case TPM2_RC_CONTEXT_GAP:
	case TPM2_RC_OBJECT_MEMORY:
	case TPM2_RC_SESSION_MEMORY:
	case TPM2_RC_SESSION_HANDLES:
	case TPM2_RC_OBJECT_HANDLES:
	case TPM2_RC_LOCKOUT:
	case TPM2_RC_NV_SPACE:
		return true;
	default:
		return false;
	}
}

/* A format-one TPM_RC_AUTH_FAIL or TPM_RC_BAD_AUTH, whatever its session number. */
bool tpmcmd_rc_is_auth_failure(uint32_t rc)
{
	if (!(rc & TPM2_RC_FMT1))
		return false;
	rc &= 0xbf;

	return rc == TPM2_RC_AUTH_FAIL || rc == TPM2_RC_BAD_AUTH;
}

/* Commands after which the number of free session or object slots can have fallen. */
bool tpmcmd_may_allocate(uint32_t cc)
{
	switch (cc) {
	case TPM2_CC_StartAuthSession:
	case TPM2_CC_ContextLoad:
	case TPM2_CC_CreatePrimary:
	case TPM2_CC_Load:
	case TPM2_CC_LoadExternal:
	case TPM2_CC_CreateLoaded:
	case TPM2_CC_HMAC_Start:
	case TPM2_CC_HashSequenceStart:
	case TPM2_CC_EvictControl:
	case TPM2_CC_NV_DefineSpace:
		return true;
	default:
		return false;
	}
}

static int build_header(uint8_t *buf, size_t size, size_t *off, uint32_t cc)
{
	TSS2_RC rc;

	rc = Tss2_MU_TPM2_ST_Marshal(TPM2_ST_NO_SESSIONS, buf, size, off);
	if (rc == TSS2_RC_SUCCESS)
		rc = Tss2_MU_UINT32_Marshal(0, buf, size, off);
	if (rc == TSS2_RC_SUCCESS)
		rc = Tss2_MU_TPM2_CC_Marshal(cc, buf, size, off);

	return rc == TSS2_RC_SUCCESS ? 0 : -ENOBUFS;
}

static int finish(uint8_t *buf, size_t size, size_t off, size_t *ret_len)
{
	size_t pos = 2;

	if (Tss2_MU_UINT32_Marshal((uint32_t)off, buf, size, &pos) != TSS2_RC_SUCCESS)
		return -ENOBUFS;
	*ret_len = off;

	return 0;
}

/* TPM2_GetCapability(cap, property, count) into buf.  Returns 0 or -ENOBUFS. */
int tpmcmd_build_getcap(uint32_t cap, uint32_t property, uint32_t count,
			uint8_t *buf, size_t size, size_t *ret_len)
{
	size_t off = 0;
	int r;

	r = build_header(buf, size, &off, TPM2_CC_GetCapability);
	if (r < 0)
		return r;
	if (Tss2_MU_UINT32_Marshal(cap, buf, size, &off) != TSS2_RC_SUCCESS ||
	    Tss2_MU_UINT32_Marshal(property, buf, size, &off) != TSS2_RC_SUCCESS ||
	    Tss2_MU_UINT32_Marshal(count, buf, size, &off) != TSS2_RC_SUCCESS)
		return -ENOBUFS;

	return finish(buf, size, off, ret_len);
}

/* TPM2_ReadPublic(handle) into buf.  Returns 0 or -ENOBUFS. */
int tpmcmd_build_readpublic(uint32_t handle, uint8_t *buf, size_t size, size_t *ret_len)
{
	size_t off = 0;
	int r;

	r = build_header(buf, size, &off, TPM2_CC_ReadPublic);
	if (r < 0)
		return r;
	if (Tss2_MU_UINT32_Marshal(handle, buf, size, &off) != TSS2_RC_SUCCESS)
		return -ENOBUFS;

	return finish(buf, size, off, ret_len);
}

/* TPM2_Shutdown(TPM_SU_STATE or TPM_SU_CLEAR) into buf.  Returns 0 or -ENOBUFS. */
int tpmcmd_build_shutdown(bool state, uint8_t *buf, size_t size, size_t *ret_len)
{
	size_t off = 0;
	int r;

	r = build_header(buf, size, &off, TPM2_CC_Shutdown);
	if (r < 0)
		return r;
	if (Tss2_MU_UINT16_Marshal(state ? TPM2_SU_STATE : TPM2_SU_CLEAR, buf, size,
				    &off) != TSS2_RC_SUCCESS)
		return -ENOBUFS;

	return finish(buf, size, off, ret_len);
}

static int parse_getcap(const uint8_t *rsp, size_t len, TPMI_YES_NO *ret_more,
			TPMS_CAPABILITY_DATA *ret)
{
	size_t off = TPMCMD_HEADER;

	if (len < TPMCMD_HEADER || util_be32(rsp + 2) != len)
		return -EBADMSG;
	if (tpmcmd_rc(rsp, len) != TPM2_RC_SUCCESS)
		return -EIO;
	if (Tss2_MU_BYTE_Unmarshal(rsp, len, &off, ret_more) != TSS2_RC_SUCCESS ||
	    Tss2_MU_TPMS_CAPABILITY_DATA_Unmarshal(rsp, len, &off, ret) != TSS2_RC_SUCCESS)
		return -EBADMSG;

	return off == len ? 0 : -EBADMSG;
}

/*
 * Read the slot and lockout figures from a GetCapability(TPM_PROPERTIES)
 * response.  Properties the response lacks stay -1.  Returns 0, -EIO for
 * a TPM error, or -EBADMSG for a malformed response.
 */
int tpmcmd_parse_health(const uint8_t *rsp, size_t len, struct tpmcmd_health *ret)
{
	TPMS_CAPABILITY_DATA cap;
	TPMS_TAGGED_PROPERTY *tp;
	struct tpmcmd_health h = { -1, -1, -1, -1, -1 };
	TPMI_YES_NO more;
	uint32_t i;
	int r;

	r = parse_getcap(rsp, len, &more, &cap);
	if (r < 0)
		return r;
	if (cap.capability != TPM2_CAP_TPM_PROPERTIES)
		return -EBADMSG;
	for (i = 0; i < cap.data.tpmProperties.count; i++) {
		tp = &cap.data.tpmProperties.tpmProperty[i];
		if (tp->property == TPM2_PT_HR_ACTIVE_AVAIL)
			h.sessions_avail = tp->value;
		else if (tp->property == TPM2_PT_HR_LOADED_AVAIL)
			h.loaded_avail = tp->value;
		else if (tp->property == TPM2_PT_HR_TRANSIENT_AVAIL)
			h.transient_avail = tp->value;
		else if (tp->property == TPM2_PT_LOCKOUT_COUNTER)
			h.lockout_counter = tp->value;
		else if (tp->property == TPM2_PT_MAX_AUTH_FAIL)
			h.max_auth_fail = tp->value;
	}
	*ret = h;

	return 0;
}

/* A bare error response carrying rc, as a TPM sends one.  Returns 0 or -ENOBUFS. */
int tpmcmd_failure_response(uint32_t rc, uint8_t *buf, size_t size, size_t *ret_len)
{
	if (size < TPMCMD_HEADER)
		return -ENOBUFS;
	util_put_be16(buf, TPM2_ST_NO_SESSIONS);
	util_put_be32(buf + 2, TPMCMD_HEADER);
	util_put_be32(buf + 6, rc);
	*ret_len = TPMCMD_HEADER;

	return 0;
}

int tpmcmd_table_new(struct tpmcmd_table **ret)
{
	struct tpmcmd_table *t;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	*ret = t;

	return 0;
}

void tpmcmd_table_free(struct tpmcmd_table *t)
{
	free(t);
}

static int entry_cmp(const void *a, const void *b)
{
	const struct tpmcmd_entry *x = a;
	const struct tpmcmd_entry *y = b;

	return x->cc < y->cc ? -1 : x->cc > y->cc;
}

/*
 * Add the commands of one GetCapability(TPM_CAP_COMMANDS) response to the
 * table.  *ret_next is the command code to ask for next, or 0 when the TPM
 * said there is no more data.  Returns 0, -EIO, -EBADMSG or -ENOSPC.
 */
int tpmcmd_table_add(struct tpmcmd_table *t, const uint8_t *rsp, size_t len,
		     uint32_t *ret_next)
{
	TPMS_CAPABILITY_DATA cap;
	TPMI_YES_NO more;
	uint32_t i;
	uint32_t last = 0;
	int r;

	r = parse_getcap(rsp, len, &more, &cap);
	if (r < 0)
		return r;
	if (cap.capability != TPM2_CAP_COMMANDS)
		return -EBADMSG;
	for (i = 0; i < cap.data.command.count; i++) {
		TPMA_CC a = cap.data.command.commandAttributes[i];

		if (t->n >= TPMCMD_TABLE_MAX)
			return -ENOSPC;
		t->e[t->n].cc = a & TPMA_CC_COMMANDINDEX_MASK;
		if (a & TPMA_CC_V)
			t->e[t->n].cc |= 0x20000000;
		t->e[t->n].handles = (a & TPMA_CC_CHANDLES_MASK) >> TPMA_CC_CHANDLES_SHIFT;
		t->e[t->n].rhandle = a & TPMA_CC_RHANDLE;
		last = t->e[t->n].cc;
		t->n++;
	}
	qsort(t->e, t->n, sizeof(t->e[0]), entry_cmp);
	*ret_next = more && cap.data.command.count > 0 ? last + 1 : 0;

	return 0;
}

/* Handles in the handle area of command cc, or -ENOENT for an unknown command. */
int tpmcmd_handle_count(const struct tpmcmd_table *t, uint32_t cc)
{
	struct tpmcmd_entry key = { .cc = cc };
	const struct tpmcmd_entry *e;

	e = bsearch(&key, t->e, t->n, sizeof(t->e[0]), entry_cmp);

	return e ? e->handles : -ENOENT;
}

/*
 * Whether the response of command cc carries a handle (TPMA_CC rHandle):
 * 1 or 0, or -ENOENT for an unknown command.
 */
int tpmcmd_response_handles(const struct tpmcmd_table *t, uint32_t cc)
{
	struct tpmcmd_entry key = { .cc = cc };
	const struct tpmcmd_entry *e;

	e = bsearch(&key, t->e, t->n, sizeof(t->e[0]), entry_cmp);

	return e ? e->rhandle : -ENOENT;
}

static bool handle_is_volatile(uint32_t h)
{
	uint8_t type = h >> 24;

	return type == TPM2_HT_TRANSIENT || type == TPM2_HT_HMAC_SESSION ||
	       type == TPM2_HT_POLICY_SESSION;
}

static bool auth_area_is_password_only(const uint8_t *cmd, size_t len, size_t off)
{
	uint32_t size;
	size_t end;

	if (off + 4 > len)
		return false;
	size = util_be32(cmd + off);
	off += 4;
	end = off + size;
	if (end > len || end < off)
		return false;
	while (off < end) {
		uint16_t n;

		if (off + 4 + 2 > end || util_be32(cmd + off) != TPM2_RH_PW)
			return false;
		off += 4;
		/* nonce, attributes byte, hmac */
		n = util_be16(cmd + off);
		off += 2 + n + 1;
		if (off + 2 > end)
			return false;
		n = util_be16(cmd + off);
		off += 2 + n;
	}

	return off == end;
}

/*
 * Whether a command that failed with an exhaustion code can be sent again,
 * unchanged, to a fresh instance: it must name no transient object and no
 * session (in its handle or authorization area), and not carry a context
 * blob or a handle among its parameters.
 */
bool tpmcmd_is_replayable(const struct tpmcmd_table *t, const uint8_t *cmd, size_t len)
{
	uint32_t cc = tpmcmd_code(cmd, len);
	size_t off = TPMCMD_HEADER;
	int n;
	int i;

	if (cc == TPM2_CC_ContextLoad || cc == TPM2_CC_ContextSave ||
	    cc == TPM2_CC_FlushContext || cc == TPM2_CC_PolicyRestart)
		return false;
	n = tpmcmd_handle_count(t, cc);
	if (n < 0 || off + (size_t)n * 4 > len)
		return false;
	for (i = 0; i < n; i++, off += 4)
		if (handle_is_volatile(util_be32(cmd + off)))
			return false;
	if (util_be16(cmd) == TPM2_ST_SESSIONS)
		return auth_area_is_password_only(cmd, len, off);

	return util_be16(cmd) == TPM2_ST_NO_SESSIONS;
}
