#include "tcti.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define TCTI_MAGIC 0x7674706d64746369ull	/* "vtpmdtci" */
#define TCTI_BUF_MAX 4096

struct tcti {
	TSS2_TCTI_CONTEXT_COMMON_V2 common;	/* must stay first: ESYS casts */
	tcti_transmit_fn fn;
	void *userdata;
	uint8_t locality;
	bool have_rsp;		/* a response waits for receive */
	size_t rsp_len;
	uint8_t rsp[TCTI_BUF_MAX];
};

static struct tcti *tcti_from(TSS2_TCTI_CONTEXT *ctx)
{
	struct tcti *t = (struct tcti *)ctx;

	if (!t || t->common.v1.magic != TCTI_MAGIC)
		return NULL;

	return t;
}

static TSS2_RC tcti_transmit(TSS2_TCTI_CONTEXT *ctx, size_t size, const uint8_t *cmd)
{
	struct tcti *t = tcti_from(ctx);
	int r;

	if (!t || !cmd)
		return TSS2_TCTI_RC_BAD_REFERENCE;
	if (t->have_rsp)
		return TSS2_TCTI_RC_BAD_SEQUENCE;

	r = t->fn(t->userdata, t->locality, cmd, size, t->rsp, sizeof(t->rsp), &t->rsp_len);
	if (r < 0)
		return TSS2_TCTI_RC_IO_ERROR;
	t->have_rsp = true;

	return TSS2_RC_SUCCESS;
}

static TSS2_RC tcti_receive(TSS2_TCTI_CONTEXT *ctx, size_t *size, uint8_t *rsp, int32_t timeout)
{
	struct tcti *t = tcti_from(ctx);

	if (!t || !size)
		return TSS2_TCTI_RC_BAD_REFERENCE;
	if (!t->have_rsp)
		return TSS2_TCTI_RC_BAD_SEQUENCE;

	/* A NULL buffer asks for the size only (TCTI spec, receive). */
	if (!rsp) {
		*size = t->rsp_len;
		return TSS2_RC_SUCCESS;
	}
	if (*size < t->rsp_len)
		return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
	memcpy(rsp, t->rsp, t->rsp_len);
	*size = t->rsp_len;
	t->have_rsp = false;

	return TSS2_RC_SUCCESS;
}

static void tcti_finalize(TSS2_TCTI_CONTEXT *ctx)
{
	/* The owner frees the context with tcti_free(). */
}

static TSS2_RC tcti_cancel(TSS2_TCTI_CONTEXT *ctx)
{
	return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

static TSS2_RC tcti_get_poll_handles(TSS2_TCTI_CONTEXT *ctx, TSS2_TCTI_POLL_HANDLE *handles,
				     size_t *num_handles)
{
	return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

static TSS2_RC tcti_set_locality(TSS2_TCTI_CONTEXT *ctx, uint8_t locality)
{
	struct tcti *t = tcti_from(ctx);

	if (!t)
		return TSS2_TCTI_RC_BAD_REFERENCE;
	if (t->have_rsp)
		return TSS2_TCTI_RC_BAD_SEQUENCE;
	t->locality = locality;

	return TSS2_RC_SUCCESS;
}

static TSS2_RC tcti_make_sticky(TSS2_TCTI_CONTEXT *ctx, TPM2_HANDLE *handle, uint8_t sticky)
{
	return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

/*
 * Make a TCTI whose transmit runs fn(userdata, ...) synchronously.  The TCTI
 * holds userdata without owning it.  Returns 0 or -ENOMEM; *ret is freed
 * with tcti_free() after the ESYS context using it has been finalized.
 */
int tcti_new(tcti_transmit_fn fn, void *userdata, struct tcti **ret)
{
	struct tcti *t;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;

	t->common.v1.magic = TCTI_MAGIC;
	t->common.v1.version = 2;
	t->common.v1.transmit = tcti_transmit;
	t->common.v1.receive = tcti_receive;
	t->common.v1.finalize = tcti_finalize;
	t->common.v1.cancel = tcti_cancel;
	t->common.v1.getPollHandles = tcti_get_poll_handles;
	t->common.v1.setLocality = tcti_set_locality;
	t->common.makeSticky = tcti_make_sticky;
	t->fn = fn;
	t->userdata = userdata;
	*ret = t;

	return 0;
}

/*
 * The TSS2_TCTI_CONTEXT to give Esys_Initialize() or Tss2_Sys_Initialize().
 */
TSS2_TCTI_CONTEXT *tcti_context(struct tcti *t)
{
	return (TSS2_TCTI_CONTEXT *)t;
}

/*
 * Free a TCTI made by tcti_new().  NULL is a no-op.
 */
void tcti_free(struct tcti *t)
{
	free(t);
}
