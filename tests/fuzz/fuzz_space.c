/*
 * libFuzzer target: the tpmrm0 resource manager's command and response
 * handling (space_prepare / space_commit), over several commands of one
 * open.  The input is a stream of chunks, each a 2-byte length and bytes:
 * first a GetCapability(TPM_CAP_COMMANDS) answer for the command table,
 * then, per round, a client command and the instance's answers (to the
 * space's own loads, saves and flushes, then to the command).  What the
 * instance says is as untrusted here as what the client says: the space
 * must neither crash nor write outside its buffers, whatever the order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "space.h"
#include "tpmcmd.h"

#define FUZZ_ROUNDS 8

struct stream {
	const uint8_t *p;
	size_t left;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

/* The next chunk, or false at the end of the input. */
static bool chunk(struct stream *st, const uint8_t **ret, size_t *ret_len)
{
	size_t n;

	if (st->left < 2)
		return false;
	n = (size_t)(st->p[0] << 8 | st->p[1]);
	st->p += 2;
	st->left -= 2;
	if (n > st->left)
		n = st->left;
	*ret = st->p;
	*ret_len = n;
	st->p += n;
	st->left -= n;

	return true;
}

/* The instance: answers with the next chunk, gone at the end of the input. */
static int transmit(void *userdata, const uint8_t *cmd, size_t len, uint8_t *rsp, size_t size,
		    size_t *ret_len)
{
	const uint8_t *c;
	size_t n;

	(void)cmd;
	(void)len;
	if (!chunk(userdata, &c, &n))
		return -EPIPE;
	if (n > size)
		return -EMSGSIZE;
	memcpy(rsp, c, n);
	*ret_len = n;

	return 0;
}

static void round_run(struct space *s, struct tpmcmd_table *t, struct space_tpm *tpm,
		      const uint8_t *c, size_t n)
{
	static uint8_t cmd[SPACE_BUF_MAX];
	static uint8_t rsp[SPACE_BUF_MAX];
	size_t rlen = 0;
	int r;

	if (n > sizeof(cmd) || n < TPMCMD_HEADER)
		return;
	memcpy(cmd, c, n);
	r = space_prepare(s, t, tpm, cmd, n, rsp, sizeof(rsp), &rlen);
	if (r < 0)
		space_reset(s);
	if (r != 0)
		return;
	r = tpm->transmit(tpm->userdata, cmd, n, rsp, sizeof(rsp), &rlen);
	if (r == 0)
		r = space_commit(s, tpm, rsp, &rlen, sizeof(rsp));
	if (r < 0)
		space_reset(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	const struct space_limits lim = {
		.max_objects = 3, .max_sessions = 4, .max_pending = 65536,
	};
	struct stream st = { .p = data, .left = len };
	struct space_tpm *tpm;
	struct tpmcmd_table *t;
	struct space *s;
	const uint8_t *c;
	uint32_t next;
	size_t n;
	int i;

	tpm = calloc(1, sizeof(*tpm));
	s = space_new(&lim);
	if (!tpm || !s || tpmcmd_table_new(&t) < 0)
		abort();
	tpm->userdata = &st;
	tpm->transmit = transmit;
	if (chunk(&st, &c, &n))
		(void)tpmcmd_table_add(t, c, n, &next);
	for (i = 0; i < FUZZ_ROUNDS && chunk(&st, &c, &n); i++)
		round_run(s, t, tpm, c, n);
	space_flush(s, tpm);
	space_free(s);
	tpmcmd_table_free(t);
	free(tpm);

	return 0;
}
