#include "space.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "util.h"

/* Virtual handles of transient objects: 0x80800000 .. 0x80ffffff, in turn. */
#define SPACE_VOBJ_FIRST 0x80800000u
#define SPACE_VOBJ_LAST 0x80ffffffu
/* A handle area (up to 7 by TPMA_CC) plus an authorization area (up to 3). */
#define SPACE_MAX_REFS 10
#define SPACE_MAX_AUTHS 3

struct space_entry {
	uint32_t handle;	/* the client's; 0: a free slot */
	uint32_t real;		/* the instance's, while loaded */
	bool loaded;		/* between prepare and commit */
	bool client_held;	/* a session whose context the client saved */
	uint64_t seq;		/* sessions: sequence of our saved context */
	uint8_t *blob;		/* marshalled TPMS_CONTEXT, or NULL */
	size_t len;
	uint8_t *cblob;		/* client_held: the context as the client has it */
	size_t clen;
};

/* One handle of a command that names an entry: where, and which. */
struct space_ref {
	size_t off;
	struct space_entry *e;
};

struct space {
	struct space_limits lim;
	struct space_entry *obj;	/* lim.max_objects slots */
	struct space_entry *ses;	/* lim.max_sessions slots */
	uint32_t next_vhandle;
	size_t held;			/* bytes of blobs */
	/* the command between prepare and commit */
	bool pending;
	uint32_t cc;
	bool rhandle;
	struct space_entry *dropped;	/* flushed or saved by the client on success */
};

static uint8_t handle_type(uint32_t h)
{
	return h >> 24;
}

static bool is_session(uint32_t h)
{
	return handle_type(h) == TPM2_HT_HMAC_SESSION || handle_type(h) == TPM2_HT_POLICY_SESSION;
}

static bool is_object(uint32_t h)
{
	return handle_type(h) == TPM2_HT_TRANSIENT;
}

/* Response codes that say a context or handle no longer exists. */
static bool rc_is_gone(uint32_t rc)
{
	if (rc & TPM2_RC_FMT1)
		return (rc & 0x3f) == (TPM2_RC_HANDLE & 0x3f) ||
		       (rc & 0x3f) == (TPM2_RC_VALUE & 0x3f);
	return (rc & ~0x7u) == TPM2_RC_REFERENCE_H0;
}

/*
 * A new, empty space with limits l (copied).  NULL: out of memory.  Any
 * thread.
 */
struct space *space_new(const struct space_limits *l)
{
	struct space *s;

	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->lim = *l;
	s->obj = calloc(l->max_objects ? l->max_objects : 1, sizeof(*s->obj));
	s->ses = calloc(l->max_sessions ? l->max_sessions : 1, sizeof(*s->ses));
	if (!s->obj || !s->ses) {
		space_free(s);
		return NULL;
	}
	s->next_vhandle = SPACE_VOBJ_FIRST;

	return s;
}

static void entry_clear(struct space *s, struct space_entry *e)
{
	s->held -= e->len + e->clen;
	free(e->blob);
	free(e->cblob);
	memset(e, 0, sizeof(*e));
}

static void entry_drop_client_copy(struct space *s, struct space_entry *e)
{
	s->held -= e->clen;
	free(e->cblob);
	e->cblob = NULL;
	e->clen = 0;
	e->client_held = false;
}

/*
 * Forget every context the space holds without telling the instance: after
 * a swap they belong to an instance that is gone, so their handles answer
 * TPM_RC_HANDLE from now on.  Mux thread.
 */
void space_reset(struct space *s)
{
	unsigned i;

	for (i = 0; i < s->lim.max_objects; i++)
		entry_clear(s, &s->obj[i]);
	for (i = 0; i < s->lim.max_sessions; i++)
		entry_clear(s, &s->ses[i]);
	s->pending = false;
}

/* Free s and its saved contexts (see space_flush() for the instance's side).  NULL: no-op. */
void space_free(struct space *s)
{
	if (!s)
		return;
	if (s->obj && s->ses)
		space_reset(s);
	free(s->obj);
	free(s->ses);
	free(s);
}

/* Objects (sessions false) or sessions the space holds.  Any thread that owns s. */
unsigned space_count(const struct space *s, bool sessions)
{
	const struct space_entry *tab = sessions ? s->ses : s->obj;
	unsigned n = sessions ? s->lim.max_sessions : s->lim.max_objects;
	unsigned count = 0;
	unsigned i;

	for (i = 0; i < n; i++)
		count += tab[i].handle != 0;

	return count;
}

static struct space_entry *entry_find(struct space *s, uint32_t handle)
{
	struct space_entry *tab;
	unsigned n;
	unsigned i;

	if (is_object(handle)) {
		tab = s->obj;
		n = s->lim.max_objects;
	} else if (is_session(handle)) {
		tab = s->ses;
		n = s->lim.max_sessions;
	} else {
		return NULL;
	}
	for (i = 0; i < n; i++)
		if (tab[i].handle == handle)
			return &tab[i];

	return NULL;
}

static struct space_entry *entry_free_slot(struct space_entry *tab, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (!tab[i].handle)
			return &tab[i];

	return NULL;
}

/* The next virtual object handle that no entry uses. */
static uint32_t vhandle_next(struct space *s)
{
	uint32_t h;

	do {
		h = s->next_vhandle;
		s->next_vhandle = h == SPACE_VOBJ_LAST ? SPACE_VOBJ_FIRST : h + 1;
	} while (entry_find(s, h));

	return h;
}

/* ---- the space's own commands to the instance ---- */

/*
 * Send cc with param (already marshalled) and no sessions; the answer is
 * in tpm->buf.  Returns 0 with its response code, or a negative errno.
 */
static int tpm_call(struct space_tpm *tpm, uint32_t cc, const uint8_t *param, size_t plen,
		    size_t *ret_len, uint32_t *ret_rc)
{
	uint8_t cmd[SPACE_BUF_MAX];
	size_t off = 0;
	size_t rlen;
	int r;

	if (TPMCMD_HEADER + plen > sizeof(cmd))
		return -E2BIG;
	if (Tss2_MU_TPM2_ST_Marshal(TPM2_ST_NO_SESSIONS, cmd, sizeof(cmd), &off) ||
	    Tss2_MU_UINT32_Marshal((uint32_t)(TPMCMD_HEADER + plen), cmd, sizeof(cmd), &off) ||
	    Tss2_MU_TPM2_CC_Marshal(cc, cmd, sizeof(cmd), &off))
		return -ENOBUFS;
	memcpy(cmd + off, param, plen);
	r = tpm->transmit(tpm->userdata, cmd, off + plen, tpm->buf, sizeof(tpm->buf), &rlen);
	if (r < 0)
		return r;
	if (rlen < TPMCMD_HEADER || util_be32(tpm->buf + 2) != rlen)
		return -EBADMSG;
	*ret_len = rlen;
	*ret_rc = tpmcmd_rc(tpm->buf, rlen);

	return 0;
}

static int tpm_flush(struct space_tpm *tpm, uint32_t handle, uint32_t *ret_rc)
{
	uint8_t p[4];
	size_t len;

	util_put_be32(p, handle);
	return tpm_call(tpm, TPM2_CC_FlushContext, p, sizeof(p), &len, ret_rc);
}

static int tpm_load(struct space_tpm *tpm, const struct space_entry *e, uint32_t *ret_handle,
		    uint32_t *ret_rc)
{
	size_t len;
	int r;

	r = tpm_call(tpm, TPM2_CC_ContextLoad, e->blob, e->len, &len, ret_rc);
	if (r < 0 || *ret_rc != TPM2_RC_SUCCESS)
		return r;
	if (len < TPMCMD_HEADER + 4)
		return -EBADMSG;
	*ret_handle = util_be32(tpm->buf + TPMCMD_HEADER);

	return 0;
}

/*
 * ContextSave the loaded entry e into a fresh blob of its own.  Returns 0
 * with the response code (e unchanged unless it is TPM_RC_SUCCESS), or a
 * negative errno.
 */
static int tpm_save(struct space *s, struct space_tpm *tpm, struct space_entry *e,
		    uint32_t *ret_rc)
{
	TPMS_CONTEXT ctx;
	uint8_t p[4];
	size_t len;
	size_t off = TPMCMD_HEADER;
	uint8_t *blob;
	int r;

	util_put_be32(p, e->real);
	r = tpm_call(tpm, TPM2_CC_ContextSave, p, sizeof(p), &len, ret_rc);
	if (r < 0 || *ret_rc != TPM2_RC_SUCCESS)
		return r;
	if (Tss2_MU_TPMS_CONTEXT_Unmarshal(tpm->buf, len, &off, &ctx) || off != len)
		return -EBADMSG;
	blob = malloc(len - TPMCMD_HEADER);
	if (!blob)
		return -ENOMEM;
	memcpy(blob, tpm->buf + TPMCMD_HEADER, len - TPMCMD_HEADER);
	s->held += len - TPMCMD_HEADER - e->len;
	free(e->blob);
	e->blob = blob;
	e->len = len - TPMCMD_HEADER;
	e->seq = ctx.sequence;
	if (is_session(e->handle) && ctx.sequence >= tpm->next_seq)
		tpm->next_seq = ctx.sequence + 1;

	return 0;
}

/*
 * Put a loaded entry back: save its context, and flush an object (a saved
 * session leaves the instance's memory by itself).  An entry whose handle
 * is gone (flushed by the command, or a session that ended) is forgotten.
 * Returns 0, -EAGAIN for TPM_RC_CONTEXT_GAP (the entry stays loaded), or a
 * negative errno.
 */
static int entry_unload(struct space *s, struct space_tpm *tpm, struct space_entry *e)
{
	uint32_t rc;
	uint32_t frc;
	int r;

	r = tpm_save(s, tpm, e, &rc);
	if (r < 0)
		return r;
	if (rc == TPM2_RC_CONTEXT_GAP)
		return -EAGAIN;
	if (is_object(e->handle))
		(void)tpm_flush(tpm, e->real, &frc);
	if (rc != TPM2_RC_SUCCESS && !rc_is_gone(rc) && is_session(e->handle))
		(void)tpm_flush(tpm, e->real, &frc);
	if (rc != TPM2_RC_SUCCESS) {
		entry_clear(s, e);
		return 0;
	}
	e->loaded = false;

	return 0;
}

static int unload_all(struct space *s, struct space_tpm *tpm)
{
	unsigned i;
	int r;

	for (i = 0; i < s->lim.max_objects; i++) {
		if (!s->obj[i].loaded)
			continue;
		r = entry_unload(s, tpm, &s->obj[i]);
		if (r < 0)
			return r;
	}
	for (i = 0; i < s->lim.max_sessions; i++) {
		if (!s->ses[i].loaded)
			continue;
		r = entry_unload(s, tpm, &s->ses[i]);
		if (r < 0)
			return r;
	}

	return 0;
}

/* ---- prepare ---- */

/* A bare response with rc in rsp.  Returns 1: the answer is ready. */
static int answer(uint32_t rc, uint8_t *rsp, size_t size, size_t *ret_len)
{
	int r;

	r = tpmcmd_failure_response(rc, rsp, size, ret_len);

	return r < 0 ? r : 1;
}

static int refuse(uint32_t code, uint8_t *rsp, size_t size, size_t *ret_len)
{
	return answer(SPACE_RC_LAYER | code, rsp, size, ret_len);
}

/* TPM_RC_HANDLE for the n-th (0-based) handle, session or parameter (Part 2, 6.6.3). */
static uint32_t rc_handle(uint32_t where, unsigned n)
{
	return TPM2_RC_HANDLE | where | ((n + 1) << 8);
}

/*
 * Length of the TPMS_AUTH_COMMAND at off (handle, nonce, attributes, hmac;
 * Part 2, 10.13.2) if it ends by end, else 0.
 */
static size_t auth_len(const uint8_t *cmd, size_t off, size_t end)
{
	size_t nonce;
	size_t hmac;

	if (end - off < 9)
		return 0;
	nonce = util_be16(cmd + off + 4);
	if (end - off - 9 < nonce)
		return 0;
	hmac = util_be16(cmd + off + 7 + nonce);
	if (end - off - 9 - nonce < hmac)
		return 0;

	return 9 + nonce + hmac;
}

/*
 * The sessions of the authorization area at off (Part 1, 18.7): each must
 * be the password session or one of ours that we hold.  Returns 0 with
 * the offset of the parameters, or a response code for the client.
 */
static uint32_t collect_auths(struct space *s, const uint8_t *cmd, size_t len, size_t off,
			      struct space_ref *refs, size_t *n, size_t *ret_param)
{
	struct space_entry *e;
	size_t end;
	uint32_t h;
	unsigned i;

	if (len < off + 4 || util_be32(cmd + off) > len - off - 4)
		return SPACE_RC_LAYER | TPM2_RC_AUTHSIZE;
	end = off + 4 + util_be32(cmd + off);
	off += 4;
	for (i = 0; off < end; i++) {
		if (i == SPACE_MAX_AUTHS || auth_len(cmd, off, end) == 0)
			return SPACE_RC_LAYER | TPM2_RC_AUTHSIZE;
		h = util_be32(cmd + off);
		e = is_session(h) ? entry_find(s, h) : NULL;
		if (h != TPM2_RH_PW && (!e || e->client_held))
			return rc_handle(TPM2_RC_S, i);
		if (e) {
			refs[*n].off = off;
			refs[(*n)++].e = e;
		}
		off += auth_len(cmd, off, end);
	}
	*ret_param = end;

	return 0;
}

/*
 * Find the entries named in the handle area and the authorization area.
 * Returns 0 with *ret_n refs and *ret_param (offset of the parameters),
 * or a TPM response code for the client.
 */
static uint32_t collect_refs(struct space *s, const uint8_t *cmd, size_t len, int nh,
			     struct space_ref *refs, size_t *ret_n, size_t *ret_param)
{
	size_t off = TPMCMD_HEADER;
	size_t n = 0;
	uint32_t rc;
	uint32_t h;
	int i;

	if (len < off + (size_t)nh * 4)
		return SPACE_RC_LAYER | TPM2_RC_COMMAND_SIZE;
	for (i = 0; i < nh; i++, off += 4) {
		h = util_be32(cmd + off);
		if (!is_object(h) && !is_session(h))
			continue;
		refs[n].off = off;
		refs[n].e = entry_find(s, h);
		if (!refs[n++].e)
			return rc_handle(TPM2_RC_H, (unsigned)i);
	}
	*ret_param = off;
	if (util_be16(cmd) == TPM2_ST_SESSIONS) {
		rc = collect_auths(s, cmd, len, off, refs, &n, ret_param);
		if (rc)
			return rc;
	}
	*ret_n = n;

	return 0;
}

/* Load each entry refs name (once) and put the instance's handles in cmd. */
static int load_refs(struct space *s, struct space_tpm *tpm, uint8_t *cmd,
		     const struct space_ref *refs, size_t n, uint32_t *ret_rc)
{
	struct space_entry *e;
	size_t i;
	int r;

	*ret_rc = TPM2_RC_SUCCESS;
	for (i = 0; i < n; i++) {
		e = refs[i].e;
		if (!e->loaded && e->blob && !e->client_held) {
			r = tpm_load(tpm, e, &e->real, ret_rc);
			if (r < 0 || *ret_rc != TPM2_RC_SUCCESS)
				return r;
			e->loaded = true;
		}
		if (e->loaded)
			util_put_be32(cmd + refs[i].off, e->real);
	}

	return 0;
}

/*
 * Our handle of the kind of first (objects; sessions we hold; sessions the
 * client holds) with the lowest index at or above from, or 0.
 */
static uint32_t handle_at_or_above(const struct space *s, uint32_t first, uint32_t from)
{
	bool sessions = !is_object(first);
	const struct space_entry *tab = sessions ? s->ses : s->obj;
	unsigned n = sessions ? s->lim.max_sessions : s->lim.max_objects;
	bool held = handle_type(first) == TPM2_HT_SAVED_SESSION;
	uint32_t best = 0;
	uint32_t low;
	unsigned i;

	for (i = 0; i < n; i++) {
		low = tab[i].handle & 0xffffff;
		if (!tab[i].handle || (sessions && tab[i].client_held != held))
			continue;
		if (low >= from && (!best || low < (best & 0xffffff)))
			best = tab[i].handle;
	}

	return best;
}

/* Own handles of the kind of first, from first up, sorted, into list. */
static unsigned list_handles(struct space *s, uint32_t first, uint32_t *list, unsigned max,
			     bool *ret_more)
{
	uint32_t from = first & 0xffffff;
	unsigned count = 0;
	uint32_t h;

	*ret_more = false;
	while ((h = handle_at_or_above(s, first, from))) {
		if (count == max) {
			*ret_more = true;
			break;
		}
		list[count++] = h;
		from = (h & 0xffffff) + 1;
	}

	return count;
}

/*
 * GetCapability(TPM_CAP_HANDLES) for transient objects or sessions: the
 * space's own handles only, answered here (Part 3, 30.2).  0: not such a
 * command; 1: rsp holds the answer.
 */
static int answer_getcap(struct space *s, const uint8_t *cmd, size_t len, size_t param,
			 uint8_t *rsp, size_t size, size_t *ret_len)
{
	TPMS_CAPABILITY_DATA cap = { .capability = TPM2_CAP_HANDLES };
	uint32_t first;
	uint32_t count;
	bool more;
	size_t off = TPMCMD_HEADER;

	if (len < param + 12 || util_be32(cmd + param) != TPM2_CAP_HANDLES)
		return 0;
	first = util_be32(cmd + param + 4);
	count = util_be32(cmd + param + 8);
	if (!is_object(first) && handle_type(first) != TPM2_HT_LOADED_SESSION &&
	    handle_type(first) != TPM2_HT_SAVED_SESSION)
		return 0;
	/*
	 * XXX: with an audit or encryption session the answer would need the
	 * session's response HMAC, which the space cannot make: such a
	 * GetCapability(HANDLES) is refused (README, Known gaps).
	 */
	if (util_be16(cmd) == TPM2_ST_SESSIONS)
		return refuse(TPM2_RC_TAG, rsp, size, ret_len);
	if (count > TPM2_MAX_CAP_HANDLES)
		count = TPM2_MAX_CAP_HANDLES;
	cap.data.handles.count = list_handles(s, first, cap.data.handles.handle, count, &more);
	if (Tss2_MU_BYTE_Marshal(more ? TPM2_YES : TPM2_NO, rsp, size, &off) ||
	    Tss2_MU_TPMS_CAPABILITY_DATA_Marshal(&cap, rsp, size, &off))
		return -ENOBUFS;
	util_put_be16(rsp, TPM2_ST_NO_SESSIONS);
	util_put_be32(rsp + 2, (uint32_t)off);
	util_put_be32(rsp + 6, TPM2_RC_SUCCESS);
	*ret_len = off;

	return 1;
}

/*
 * FlushContext names its handle among the parameters (Part 3, 28.4).  An
 * object is only a saved context here, so it is forgotten without the
 * instance; a session is flushed there, and forgotten on success.
 */
static int prepare_flush(struct space *s, const uint8_t *cmd, size_t len, size_t param,
			 uint8_t *rsp, size_t size, size_t *ret_len)
{
	struct space_entry *e;
	uint32_t h;

	if (len != param + 4)
		return refuse(TPM2_RC_COMMAND_SIZE, rsp, size, ret_len);
	h = util_be32(cmd + param);
	if (!is_object(h) && !is_session(h))
		return 0;
	e = entry_find(s, h);
	if (!e)
		return answer(rc_handle(TPM2_RC_P, 0), rsp, size, ret_len);
	if (is_session(h)) {
		s->dropped = e;
		return 0;
	}
	entry_clear(s, e);

	return answer(TPM2_RC_SUCCESS, rsp, size, ret_len);
}

/*
 * Limits for a command that creates a handle: a slot for what it makes,
 * and room for its context.  ContextLoad of a session is only allowed for
 * one of ours whose context the client saved; if we saved that session
 * again meanwhile, our newer context replaces the client's in cmd.
 */
static int check_room(struct space *s, uint8_t *cmd, size_t len, size_t param,
		      uint8_t *rsp, size_t size, size_t *ret_len)
{
	uint32_t saved = 0;
	struct space_entry *e;

	if (s->held + len > s->lim.max_pending)
		return refuse(TPM2_RC_MEMORY, rsp, size, ret_len);
	if (s->cc == TPM2_CC_ContextLoad && len >= param + 12)
		saved = util_be32(cmd + param + 8);	/* TPMS_CONTEXT.savedHandle */
	if (s->cc == TPM2_CC_ContextLoad && is_session(saved)) {
		e = entry_find(s, saved);
		if (!e || !e->client_held)
			return answer(TPM2_RC_HANDLE | TPM2_RC_P | TPM2_RC_1, rsp, size, ret_len);
		/* we may have saved it again since (space_refresh()): load ours */
		if (e->cblob && e->blob && len - param == e->clen && e->len == e->clen &&
		    memcmp(cmd + param, e->cblob, e->clen) == 0)
			memcpy(cmd + param, e->blob, e->len);
		return 0;
	}
	if (s->cc == TPM2_CC_StartAuthSession) {
		if (!entry_free_slot(s->ses, s->lim.max_sessions))
			return refuse(TPM2_RC_SESSION_MEMORY, rsp, size, ret_len);
		return 0;
	}
	if (!entry_free_slot(s->obj, s->lim.max_objects))
		return refuse(TPM2_RC_OBJECT_MEMORY, rsp, size, ret_len);

	return 0;
}

/*
 * What the command does to the space besides its handles: answered here
 * (1), refused (1, with the answer in rsp), or to be sent (0).
 */
static int prepare_special(struct space *s, uint8_t *cmd, size_t len, size_t param,
			   struct space_ref *refs, size_t n, uint8_t *rsp, size_t size,
			   size_t *ret_len)
{
	if (s->cc == TPM2_CC_GetCapability)
		return answer_getcap(s, cmd, len, param, rsp, size, ret_len);
	if (s->cc == TPM2_CC_FlushContext)
		return prepare_flush(s, cmd, len, param, rsp, size, ret_len);
	/* the client takes a session's context: it becomes the client's */
	if (s->cc == TPM2_CC_ContextSave && n > 0 && refs[0].off == TPMCMD_HEADER &&
	    is_session(refs[0].e->handle))
		s->dropped = refs[0].e;
	if (s->rhandle)
		return check_room(s, cmd, len, param, rsp, size, ret_len);

	return 0;
}

/*
 * Get the client's command cmd (len bytes, framing checked) ready for the
 * instance: check its handles belong to this space, load their contexts
 * through tpm, and put the instance's handles in cmd (in place).  Returns
 * 0 when cmd is to be sent (then space_commit() must follow), 1 when rsp
 * holds the answer already (a refusal with the resource-manager layer, a
 * TPM_RC_HANDLE for a handle the space does not hold, a load that failed,
 * or what the space answers itself), or a negative errno when the instance
 * failed.  Mux thread.
 */
int space_prepare(struct space *s, const struct tpmcmd_table *t, struct space_tpm *tpm,
		  uint8_t *cmd, size_t len, uint8_t *rsp, size_t size, size_t *ret_len)
{
	struct space_ref refs[SPACE_MAX_REFS];
	size_t n = 0;
	size_t param = 0;
	uint32_t rc;
	int nh;
	int r;

	s->pending = false;
	s->dropped = NULL;
	s->cc = tpmcmd_code(cmd, len);
	nh = tpmcmd_handle_count(t, s->cc);
	if (nh < 0)
		return refuse(TPM2_RC_COMMAND_CODE, rsp, size, ret_len);
	s->rhandle = tpmcmd_response_handles(t, s->cc) > 0;
	rc = collect_refs(s, cmd, len, nh, refs, &n, &param);
	if (rc)
		return answer(rc, rsp, size, ret_len);
	r = prepare_special(s, cmd, len, param, refs, n, rsp, size, ret_len);
	if (r != 0)
		return r;
	r = load_refs(s, tpm, cmd, refs, n, &rc);
	if (r == 0 && rc != TPM2_RC_SUCCESS) {
		r = unload_all(s, tpm);
		if (r == 0)
			r = answer(rc, rsp, size, ret_len);
	}
	if (r != 0)
		return r;
	s->pending = true;

	return 0;
}

/* ---- commit ---- */

/* The handle in a successful response: a new object, a new or reloaded session. */
static uint32_t commit_new_handle(struct space *s, struct space_tpm *tpm, uint8_t *rsp,
				  size_t len)
{
	uint32_t h = util_be32(rsp + TPMCMD_HEADER);
	struct space_entry *e = NULL;
	uint32_t frc;

	if (!is_object(h) && !is_session(h))
		return TPM2_RC_SUCCESS;
	if (is_object(h))
		e = entry_free_slot(s->obj, s->lim.max_objects);
	else
		e = entry_find(s, h);
	if (is_session(h) && !e && s->cc == TPM2_CC_ContextLoad) {
		/* a context whose savedHandle lied: not ours to keep */
		(void)tpm_flush(tpm, h, &frc);
		return TPM2_RC_HANDLE | TPM2_RC_P | TPM2_RC_1;
	}
	if (is_session(h) && !e)
		e = entry_free_slot(s->ses, s->lim.max_sessions);
	if (!e) {
		/* unreachable: prepare checked the room */
		(void)tpm_flush(tpm, h, &frc);
		return SPACE_RC_LAYER |
		       (is_object(h) ? TPM2_RC_OBJECT_MEMORY : TPM2_RC_SESSION_MEMORY);
	}
	e->handle = is_object(h) ? vhandle_next(s) : h;
	e->real = h;
	e->loaded = true;
	entry_drop_client_copy(s, e);
	util_put_be32(rsp + TPMCMD_HEADER, e->handle);

	return TPM2_RC_SUCCESS;
}

/*
 * The client saved one of our sessions (rsp is the ContextSave answer):
 * the session is the client's to load again, but we keep a copy of its
 * context, as ours to save again before the context gap, and as the
 * client has it, to recognise it when it comes back.
 */
static int commit_client_save(struct space *s, struct space_tpm *tpm, struct space_entry *e,
			      const uint8_t *rsp, size_t len)
{
	TPMS_CONTEXT ctx;
	size_t off = TPMCMD_HEADER;
	uint8_t *blob;
	uint8_t *cblob;

	if (Tss2_MU_TPMS_CONTEXT_Unmarshal(rsp, len, &off, &ctx) || off != len)
		return -EBADMSG;
	blob = malloc(len - TPMCMD_HEADER);
	cblob = malloc(len - TPMCMD_HEADER);
	if (!blob || !cblob) {
		free(blob);
		free(cblob);
		return -ENOMEM;
	}
	memcpy(blob, rsp + TPMCMD_HEADER, len - TPMCMD_HEADER);
	memcpy(cblob, rsp + TPMCMD_HEADER, len - TPMCMD_HEADER);
	s->held += 2 * (len - TPMCMD_HEADER) - e->len - e->clen;
	free(e->blob);
	free(e->cblob);
	e->blob = blob;
	e->len = len - TPMCMD_HEADER;
	e->cblob = cblob;
	e->clen = len - TPMCMD_HEADER;
	e->seq = ctx.sequence;
	e->client_held = true;
	e->loaded = false;
	if (ctx.sequence >= tpm->next_seq)
		tpm->next_seq = ctx.sequence + 1;

	return 0;
}

/*
 * The instance answered the command prepared last with rsp (*len bytes
 * in a buffer of size): give a handle it made to the space and translate
 * it, then save (and flush) every context the command had loaded, so the
 * instance holds nothing of this space between commands.  rsp may be
 * replaced by a resource-manager error.  Returns 0, -EAGAIN when a save
 * hit TPM_RC_CONTEXT_GAP (refresh the oldest sessions, then call again),
 * or a negative errno when the instance failed.  Mux thread.
 */
int space_commit(struct space *s, struct space_tpm *tpm, uint8_t *rsp, size_t *len, size_t size)
{
	uint32_t rc = tpmcmd_rc(rsp, *len);
	int r = 0;

	if (!s->pending)
		return unload_all(s, tpm);
	s->pending = false;
	if (rc == TPM2_RC_SUCCESS && s->rhandle && *len >= TPMCMD_HEADER + 4)
		rc = commit_new_handle(s, tpm, rsp, *len);
	if (rc != TPM2_RC_SUCCESS && tpmcmd_rc(rsp, *len) == TPM2_RC_SUCCESS) {
		r = tpmcmd_failure_response(rc, rsp, size, len);
		if (r < 0)
			return r;
	}
	if (rc == TPM2_RC_SUCCESS && s->dropped && s->cc == TPM2_CC_ContextSave)
		r = commit_client_save(s, tpm, s->dropped, rsp, *len);
	else if (rc == TPM2_RC_SUCCESS && s->dropped)
		entry_clear(s, s->dropped);	/* flushed */
	s->dropped = NULL;
	if (r < 0)
		return r;

	return unload_all(s, tpm);
}

/* Our saved session with the lowest sequence below before, or NULL. */
static struct space_entry *oldest_saved(struct space *s, uint64_t before)
{
	struct space_entry *best = NULL;
	unsigned i;

	for (i = 0; i < s->lim.max_sessions; i++) {
		struct space_entry *e = &s->ses[i];

		if (e->blob && !e->loaded && e->seq < before && (!best || e->seq < best->seq))
			best = e;
	}

	return best;
}

/*
 * Save again each session whose saved context is older than sequence
 * before, so the instance's context counter can move on (Part 1, 30.5:
 * TPM_RC_CONTEXT_GAP).  Returns 0, or a negative errno when the instance
 * failed.  A session whose context the instance no longer takes is
 * forgotten; one that finds no room now stays as it is.  Mux thread.
 */
int space_refresh(struct space *s, struct space_tpm *tpm, uint64_t before)
{
	struct space_entry *e;
	unsigned i;
	uint32_t rc;
	int r;

	/* each session once at most, even if before lies beyond the counter */
	for (i = 0; i < s->lim.max_sessions && (e = oldest_saved(s, before)); i++) {
		r = tpm_load(tpm, e, &e->real, &rc);
		if (r < 0)
			return r;
		if (rc_is_gone(rc) || (rc & ~TPM2_RC_N_MASK) == TPM2_RC_INTEGRITY) {
			entry_clear(s, e);
			continue;
		}
		if (rc != TPM2_RC_SUCCESS)
			return 0;	/* no room now: the next command tries again */
		e->loaded = true;
		r = entry_unload(s, tpm, e);
		if (r < 0)
			return r == -EAGAIN ? 0 : r;
	}

	return 0;
}

/*
 * Flush from the instance everything the space still holds there (its
 * sessions, saved or the client's; objects exist only as our saved
 * contexts), and forget it all: the open is closing.  Errors are ignored:
 * what cannot be flushed is gone already.  Mux thread.
 */
void space_flush(struct space *s, struct space_tpm *tpm)
{
	uint32_t rc;
	unsigned i;

	for (i = 0; i < s->lim.max_objects; i++)
		if (s->obj[i].loaded)
			(void)tpm_flush(tpm, s->obj[i].real, &rc);
	for (i = 0; i < s->lim.max_sessions; i++)
		if (s->ses[i].handle)
			(void)tpm_flush(tpm, s->ses[i].handle, &rc);
	space_reset(s);
}
