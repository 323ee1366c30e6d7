/*
 * The resource manager's space (vtpmd/space.c) on its own, against a real
 * libtpms instance process: handle translation in synthesized commands and
 * responses, limits, malformed handle and authorization areas, stale
 * handles after a reset, and the context-gap refresh.  Needs
 * VTPMD_INSTANCE_BIN.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "cmdbuild.h"
#include "harness.h"
#include "inst.h"
#include "localca.h"
#include "space.h"
#include "tpmcmd.h"

#define RC_RM 0x000b0000u
/* TPM2_TRANSIENT_FIRST, whose tss2 definition shifts a signed int too far */
#define TRANSIENT_FIRST 0x80000000u

FIXTURE(space) {
	bool have_root;
	char root[64];
	char dir[128];
	struct inst *in;
	struct tpmcmd_table *table;
	struct space_tpm tpm;
	struct space *s;
	uint8_t rsp[4096];
	size_t rlen;
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int xmit(void *userdata, const uint8_t *cmd, size_t len, uint8_t *rsp, size_t size,
		size_t *ret_len)
{
	return inst_transmit(userdata, 0, cmd, len, rsp, size, ret_len);
}

/* The command table, from the instance, as the mux learns it. */
static int table_load(struct harness_fx_space *self)
{
	uint32_t next = TPM2_CC_FIRST;
	uint8_t cmd[32];
	size_t len;
	size_t rlen;
	int r;

	r = tpmcmd_table_new(&self->table);
	while (r == 0 && next) {
		r = tpmcmd_build_getcap(TPM2_CAP_COMMANDS, next, TPM2_MAX_CAP_CC, cmd, sizeof(cmd),
					&len);
		if (r == 0)
			r = inst_transmit(self->in, 0, cmd, len, self->rsp, sizeof(self->rsp),
					  &rlen);
		if (r == 0)
			r = tpmcmd_table_add(self->table, self->rsp, rlen, &next);
	}

	return r;
}

FIXTURE_SETUP(space)
{
	const char *helper = getenv("VTPMD_INSTANCE_BIN");
	struct inst_manufacture_params p = {
		.ek_ecc = true, .ak_alg = META_ALG_NONE, .ak_handle = 0x81008000,
	};
	struct space_limits l = { .max_objects = 2, .max_sessions = 2, .max_pending = 65536 };
	char cert[128];
	char key[128];

	if (!helper)
		TEST_SKIP("VTPMD_INSTANCE_BIN is not set");
	strcpy(self->root, "/tmp/space_test.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->root));
	self->have_root = true;
	snprintf(self->dir, sizeof(self->dir), "%s/inst", self->root);
	snprintf(cert, sizeof(cert), "%s/ca.pem", self->root);
	snprintf(key, sizeof(key), "%s/ca.key", self->root);
	ASSERT_EQ(localca_create(cert, key), 0);
	p.ca_cert = cert;
	p.ca_key = key;
	ASSERT_EQ(inst_manufacture(helper, NULL, self->dir, "space-test", &p), 0);
	ASSERT_EQ(inst_start(helper, NULL, self->dir, true, &self->in), 0);
	ASSERT_EQ(table_load(self), 0);
	self->tpm.userdata = self->in;
	self->tpm.transmit = xmit;
	self->s = space_new(&l);
	ASSERT_NE_NULL(self->s);
}

FIXTURE_TEARDOWN(space)
{
	space_free(self->s);
	tpmcmd_table_free(self->table);
	inst_stop(self->in);
	if (self->have_root)
		(void)nftw(self->root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}


static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * prepare -> instance -> commit, as the mux does; the response code.
 * *ret_sent tells whether the instance saw the command.
 */
static uint32_t through(struct harness_fx_space *self, struct cmd *c, bool *ret_sent)
{
	size_t len = cmd_end(c);
	int r;

	*ret_sent = false;
	r = space_prepare(self->s, self->table, &self->tpm, c->b, len, self->rsp,
			  sizeof(self->rsp), &self->rlen);
	if (r < 0)
		return 0xffffffffu;
	if (r == 1)
		return be32(self->rsp + 6);
	*ret_sent = true;
	if (inst_transmit(self->in, 0, c->b, len, self->rsp, sizeof(self->rsp), &self->rlen) < 0)
		return 0xfffffffeu;
	if (space_commit(self->s, &self->tpm, self->rsp, &self->rlen, sizeof(self->rsp)) < 0)
		return 0xfffffffdu;

	return be32(self->rsp + 6);
}

static void create_primary_cmd(struct cmd *c)
{
	TPM2B_PUBLIC pub = { .publicArea = {
		.type = TPM2_ALG_ECC,
		.nameAlg = TPM2_ALG_SHA256,
		.objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH |
				    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
				    TPMA_OBJECT_SENSITIVEDATAORIGIN,
		.parameters.eccDetail = {
			.symmetric.algorithm = TPM2_ALG_NULL,
			.scheme = { .scheme = TPM2_ALG_ECDSA,
				    .details.ecdsa.hashAlg = TPM2_ALG_SHA256 },
			.curveID = TPM2_ECC_NIST_P256,
			.kdf.scheme = TPM2_ALG_NULL,
		},
	} };
	TPM2B_SENSITIVE_CREATE sens = {0};
	TPM2B_DATA outside = {0};
	TPML_PCR_SELECTION pcrs = {0};
	uint32_t owner = TPM2_RH_OWNER;

	cmd_begin(c, true, TPM2_CC_CreatePrimary, &owner, 1);
	Tss2_MU_TPM2B_SENSITIVE_CREATE_Marshal(&sens, c->b, sizeof(c->b), &c->off);
	Tss2_MU_TPM2B_PUBLIC_Marshal(&pub, c->b, sizeof(c->b), &c->off);
	Tss2_MU_TPM2B_DATA_Marshal(&outside, c->b, sizeof(c->b), &c->off);
	Tss2_MU_TPML_PCR_SELECTION_Marshal(&pcrs, c->b, sizeof(c->b), &c->off);
}

static void start_session_cmd(struct cmd *c)
{
	uint32_t h[2] = { TPM2_RH_NULL, TPM2_RH_NULL };
	TPM2B_NONCE nonce = { .size = 16 };
	TPM2B_ENCRYPTED_SECRET salt = {0};
	TPMT_SYM_DEF sym = { .algorithm = TPM2_ALG_NULL };

	cmd_begin(c, false, TPM2_CC_StartAuthSession, h, 2);
	Tss2_MU_TPM2B_NONCE_Marshal(&nonce, c->b, sizeof(c->b), &c->off);
	Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&salt, c->b, sizeof(c->b), &c->off);
	Tss2_MU_UINT8_Marshal(TPM2_SE_HMAC, c->b, sizeof(c->b), &c->off);
	Tss2_MU_TPMT_SYM_DEF_Marshal(&sym, c->b, sizeof(c->b), &c->off);
	Tss2_MU_UINT16_Marshal(TPM2_ALG_SHA256, c->b, sizeof(c->b), &c->off);
}

/* Transient objects and loaded sessions in the instance itself. */
static int instance_handles(struct harness_fx_space *self, uint32_t first)
{
	uint8_t cmd[32];
	size_t len;
	size_t rlen;

	if (tpmcmd_build_getcap(TPM2_CAP_HANDLES, first, 64, cmd, sizeof(cmd), &len) < 0 ||
	    inst_transmit(self->in, 0, cmd, len, self->rsp, sizeof(self->rsp), &rlen) < 0 ||
	    rlen < 19)
		return -1;

	return (int)be32(self->rsp + 15);
}

/* ---- tests ---- */

TEST_F_TIMEOUT(space, translates_handles_in_commands_and_responses, 60)
{
	struct cmd c;
	bool sent;
	uint32_t v;
	uint32_t real;

	create_primary_cmd(&c);
	ASSERT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
	v = be32(self->rsp + 10);
	EXPECT_EQ(v >> 24, TPM2_HT_TRANSIENT);
	EXPECT_EQ(space_count(self->s, false), 1);
	/* the instance holds nothing between commands */
	EXPECT_EQ(instance_handles(self, TRANSIENT_FIRST), 0);

	/* the virtual handle in a command becomes the instance's */
	cmd_begin(&c, false, TPM2_CC_ReadPublic, &v, 1);
	ASSERT_EQ(space_prepare(self->s, self->table, &self->tpm, c.b, cmd_end(&c), self->rsp,
				sizeof(self->rsp), &self->rlen), 0);
	real = be32(c.b + 10);
	TEST_LOG("virtual 0x%x, in the instance 0x%x", v, real);
	EXPECT_NE(real, v);
	EXPECT_EQ(real >> 24, TPM2_HT_TRANSIENT);
	EXPECT_EQ(instance_handles(self, TRANSIENT_FIRST), 1);
	ASSERT_EQ(inst_transmit(self->in, 0, c.b, c.off, self->rsp, sizeof(self->rsp),
				&self->rlen), 0);
	EXPECT_EQ(be32(self->rsp + 6), TPM2_RC_SUCCESS);
	ASSERT_EQ(space_commit(self->s, &self->tpm, self->rsp, &self->rlen, sizeof(self->rsp)), 0);
	EXPECT_EQ(instance_handles(self, TRANSIENT_FIRST), 0);

	/* persistent and permanent handles pass unchanged */
	v = TPM2_RH_OWNER;
	cmd_begin(&c, false, TPM2_CC_ReadPublic, &v, 1);
	ASSERT_EQ(space_prepare(self->s, self->table, &self->tpm, c.b, cmd_end(&c), self->rsp,
				sizeof(self->rsp), &self->rlen), 0);
	EXPECT_EQ(be32(c.b + 10), TPM2_RH_OWNER);
	ASSERT_EQ(inst_transmit(self->in, 0, c.b, c.off, self->rsp, sizeof(self->rsp),
				&self->rlen), 0);
	ASSERT_EQ(space_commit(self->s, &self->tpm, self->rsp, &self->rlen, sizeof(self->rsp)), 0);
	EXPECT_EQ(space_count(self->s, false), 1);
}

TEST_F_TIMEOUT(space, limits_refuse_with_the_resource_manager_layer, 60)
{
	struct space_limits tiny = { .max_objects = 2, .max_sessions = 2, .max_pending = 64 };
	struct cmd c;
	bool sent;
	int i;

	for (i = 0; i < 2; i++) {
		create_primary_cmd(&c);
		ASSERT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
		start_session_cmd(&c);
		ASSERT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
	}
	create_primary_cmd(&c);
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_OBJECT_MEMORY);
	EXPECT_FALSE(sent);
	start_session_cmd(&c);
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_SESSION_MEMORY);
	EXPECT_FALSE(sent);
	EXPECT_EQ(space_count(self->s, false), 2);
	EXPECT_EQ(space_count(self->s, true), 2);
	space_flush(self->s, &self->tpm);
	EXPECT_EQ(instance_handles(self, TPM2_ACTIVE_SESSION_FIRST), 0);

	/* bytes held: a space that may hold less than a command refuses it */
	space_free(self->s);
	self->s = space_new(&tiny);
	ASSERT_NE_NULL(self->s);
	create_primary_cmd(&c);
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_MEMORY);
	EXPECT_EQ(space_count(self->s, false), 0);
}

TEST_F_TIMEOUT(space, malformed_handle_and_auth_areas_are_refused, 60)
{
	uint32_t owner = TPM2_RH_OWNER;
	struct cmd c;
	bool sent;

	cmd_begin(&c, false, 0x2000ffffu, NULL, 0);
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_COMMAND_CODE);
	cmd_begin(&c, false, TPM2_CC_ReadPublic, NULL, 0);
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_COMMAND_SIZE);
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	c.b[17] = 0x20;			/* authSize past the end */
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_AUTHSIZE);
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	c.b[17] = 8;			/* an entry cut short */
	c.off--;
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_AUTHSIZE);
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	c.b[26] = 0x05;			/* hmac longer than the area */
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_AUTHSIZE);
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	memcpy(c.b + c.off, c.b + 18, 9);	/* four password entries */
	memcpy(c.b + c.off + 9, c.b + 18, 18);
	c.off += 27;
	c.b[17] = 36;
	EXPECT_EQ(through(self, &c, &sent), RC_RM | TPM2_RC_AUTHSIZE);
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	c.b[18] = 0x02;			/* someone else's session */
	c.b[21] = 0x01;
	EXPECT_EQ(through(self, &c, &sent), TPM2_RC_HANDLE | TPM2_RC_S | TPM2_RC_1);
	EXPECT_FALSE(sent);
	/* a well-formed one still goes through (and the TPM judges its parameters) */
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	Tss2_MU_UINT16_Marshal(0, c.b, sizeof(c.b), &c.off);
	EXPECT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
	EXPECT_TRUE(sent);
}

TEST_F_TIMEOUT(space, reset_leaves_only_handle_errors, 60)
{
	struct cmd c;
	bool sent;
	uint32_t v;
	uint32_t s;

	create_primary_cmd(&c);
	ASSERT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
	v = be32(self->rsp + 10);
	start_session_cmd(&c);
	ASSERT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
	s = be32(self->rsp + 10);
	space_reset(self->s);
	EXPECT_EQ(space_count(self->s, false), 0);
	cmd_begin(&c, false, TPM2_CC_ReadPublic, &v, 1);
	EXPECT_EQ(through(self, &c, &sent), TPM2_RC_HANDLE | TPM2_RC_1);
	EXPECT_FALSE(sent);
	cmd_begin(&c, false, TPM2_CC_FlushContext, NULL, 0);
	Tss2_MU_UINT32_Marshal(s, c.b, sizeof(c.b), &c.off);
	EXPECT_EQ(through(self, &c, &sent), TPM2_RC_HANDLE | TPM2_RC_P | TPM2_RC_1);
	EXPECT_FALSE(sent);
	cmd_begin(&c, false, TPM2_CC_ContextSave, &s, 1);
	EXPECT_EQ(through(self, &c, &sent), TPM2_RC_HANDLE | TPM2_RC_1);
}

TEST_F_TIMEOUT(space, refresh_saves_old_sessions_again, 60)
{
	struct cmd c;
	bool sent;
	uint64_t before;

	start_session_cmd(&c);
	ASSERT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
	before = self->tpm.next_seq;
	EXPECT_GT(before, 0);
	/* nothing older than the first save: nothing to do */
	ASSERT_EQ(space_refresh(self->s, &self->tpm, before - 1), 0);
	EXPECT_EQ(self->tpm.next_seq, before);
	ASSERT_EQ(space_refresh(self->s, &self->tpm, before), 0);
	EXPECT_EQ(self->tpm.next_seq, before + 1);
	EXPECT_EQ(space_count(self->s, true), 1);
	space_flush(self->s, &self->tpm);
	EXPECT_EQ(instance_handles(self, TPM2_ACTIVE_SESSION_FIRST), 0);
}

/* Send a marshalled command straight to the instance; the response code. */
static uint32_t direct(struct harness_fx_space *self, struct cmd *c)
{
	if (inst_transmit(self->in, 0, c->b, cmd_end(c), self->rsp, sizeof(self->rsp),
			  &self->rlen) < 0)
		return 0xffffffffu;

	return be32(self->rsp + 6);
}

/*
 * A session saved by someone outside the space moves the context counter
 * until the space's oldest session blocks it: the space's own save then
 * reports TPM_RC_CONTEXT_GAP as -EAGAIN, and after a refresh (which
 * reloads and saves the oldest first, the one session libtpms still takes
 * at the gap) the commit goes on.
 */
TEST_F_TIMEOUT(space, commit_stopped_by_the_gap_goes_on_after_refresh, 120)
{
	uint8_t blob[4096];
	size_t blen;
	struct cmd c;
	uint32_t x;
	uint32_t rc = 0;
	bool sent;
	long i;

	start_session_cmd(&c);
	ASSERT_EQ(through(self, &c, &sent), TPM2_RC_SUCCESS);
	start_session_cmd(&c);
	ASSERT_EQ(direct(self, &c), TPM2_RC_SUCCESS);
	x = be32(self->rsp + 10);
	for (i = 0; i < 70000; i++) {
		cmd_begin(&c, false, TPM2_CC_ContextSave, &x, 1);
		rc = direct(self, &c);
		if (rc != TPM2_RC_SUCCESS)
			break;
		blen = self->rlen - 10;
		memcpy(blob, self->rsp + 10, blen);
		cmd_begin(&c, false, TPM2_CC_ContextLoad, NULL, 0);
		memcpy(c.b + c.off, blob, blen);
		c.off += blen;
		ASSERT_EQ(direct(self, &c), TPM2_RC_SUCCESS);
	}
	TEST_LOG("outside saves until the gap: %ld", i);
	ASSERT_EQ(rc, TPM2_RC_CONTEXT_GAP);

	start_session_cmd(&c);
	ASSERT_EQ(space_prepare(self->s, self->table, &self->tpm, c.b, cmd_end(&c), self->rsp,
				sizeof(self->rsp), &self->rlen), 0);
	ASSERT_EQ(inst_transmit(self->in, 0, c.b, c.off, self->rsp, sizeof(self->rsp),
				&self->rlen), 0);
	ASSERT_EQ(be32(self->rsp + 6), TPM2_RC_SUCCESS);
	EXPECT_EQ(space_commit(self->s, &self->tpm, self->rsp, &self->rlen, sizeof(self->rsp)),
		  -EAGAIN);
	ASSERT_EQ(space_refresh(self->s, &self->tpm, self->tpm.next_seq), 0);
	EXPECT_EQ(space_commit(self->s, &self->tpm, self->rsp, &self->rlen, sizeof(self->rsp)), 0);
	EXPECT_EQ(space_count(self->s, true), 2);
	/* both sessions are saved and usable: the client can take each one */
	cmd_begin(&c, false, TPM2_CC_ContextSave, &x, 1);
	EXPECT_EQ(direct(self, &c), TPM2_RC_SUCCESS);
	space_flush(self->s, &self->tpm);
	EXPECT_EQ(instance_handles(self, TPM2_ACTIVE_SESSION_FIRST), 1);
}

TEST_HARNESS_MAIN
