/*
 * Pool-layer tests of the instance process (vtpmd-instance) through the
 * daemon's handle, pool/inst.c: manufacturing, loading, the TPM it serves
 * and the framing of its socket.  Needs VTPMD_INSTANCE_BIN.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include "harness.h"
#include "inst.h"
#include "ipc.h"
#include "meta.h"
#include "tcti.h"

#define RC_RETRY 0x922u

FIXTURE(worker) {
	bool have_root;		/* root was made and must be removed */
	char root[64];
	char dir[128];
	char meta_path[160];
	char ca_cert[128];
	char ca_key[128];
	const char *helper;
	struct inst *in;
	struct meta meta;
	struct tcti *tcti;
	ESYS_CONTEXT *esys;
};

/* ---- helpers ---- */

static int add_ext(X509 *cert, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);

	return ok == 1 ? 0 : -1;
}

/* A self-signed ECDSA P-256 CA, as the daemon's local CA would be. */
static int make_ca(const char *cert_path, const char *key_path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	X509_NAME *name;
	FILE *f;
	int r = -1;

	if (!key || !cert)
		goto out;
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"worker_test CA", -1, -1, 0);
	X509_set_issuer_name(cert, name);
	X509_set_version(cert, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600L * 24 * 365);
	X509_set_pubkey(cert, key);
	if (add_ext(cert, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
	    add_ext(cert, NID_key_usage, "critical,keyCertSign") < 0 ||
	    add_ext(cert, NID_subject_key_identifier, "hash") < 0 ||
	    X509_sign(cert, key, EVP_sha256()) <= 0)
		goto out;

	f = fopen(cert_path, "w");
	if (!f || PEM_write_X509(f, cert) != 1)
		goto out_close;
	fclose(f);
	f = fopen(key_path, "w");
	if (f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1)
		r = 0;
out_close:
	if (f)
		fclose(f);
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	return r;
}

static const struct inst_manufacture_params *default_params(const char *cert, const char *key)
{
	static struct inst_manufacture_params p;

	p = (struct inst_manufacture_params) {
		.ek_rsa = true,
		.ek_ecc = true,
		.ak_alg = META_ALG_ECC_P256,
		.ak_handle = 0x81008000,
		.ca_cert = cert,
		.ca_key = key,
	};

	return &p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int xmit(void *userdata, uint8_t locality, const uint8_t *cmd, size_t len,
		uint8_t *rsp, size_t rsp_size, size_t *ret_len)
{
	return inst_transmit(userdata, locality, cmd, len, rsp, rsp_size, ret_len);
}

static void start(struct harness_fx_worker *self, bool with_volatile)
{
	ASSERT_EQ(inst_start(self->helper, NULL, self->dir, with_volatile, &self->in), 0);
	ASSERT_EQ(tcti_new(xmit, self->in, &self->tcti), 0);
	ASSERT_EQ(Esys_Initialize(&self->esys, tcti_context(self->tcti), NULL), TSS2_RC_SUCCESS);
}

static void stop(struct harness_fx_worker *self)
{
	if (self->esys)
		Esys_Finalize(&self->esys);
	tcti_free(self->tcti);
	self->tcti = NULL;
	inst_stop(self->in);
	self->in = NULL;
}

/*
 * A raw command with one password session (empty password) when auth is
 * set: header, handles, authorization area, parameters, all through tss2-mu.
 */
struct rawcmd {
	uint8_t b[1024];
	size_t off;
};

static void raw_begin(struct rawcmd *c, bool auth, uint32_t cc, const uint32_t *handles,
		      size_t n)
{
	c->off = 0;
	Tss2_MU_UINT16_Marshal(auth ? TPM2_ST_SESSIONS : TPM2_ST_NO_SESSIONS, c->b, sizeof(c->b),
			       &c->off);
	Tss2_MU_UINT32_Marshal(0, c->b, sizeof(c->b), &c->off);
	Tss2_MU_UINT32_Marshal(cc, c->b, sizeof(c->b), &c->off);
	for (size_t i = 0; i < n; i++)
		Tss2_MU_UINT32_Marshal(handles[i], c->b, sizeof(c->b), &c->off);
	if (auth) {
		TPMS_AUTH_COMMAND pw = { .sessionHandle = TPM2_RS_PW };
		uint8_t area[64];
		size_t alen = 0;

		Tss2_MU_TPMS_AUTH_COMMAND_Marshal(&pw, area, sizeof(area), &alen);
		Tss2_MU_UINT32_Marshal((uint32_t)alen, c->b, sizeof(c->b), &c->off);
		memcpy(c->b + c->off, area, alen);
		c->off += alen;
	}
}

static void raw_end(struct rawcmd *c)
{
	size_t hoff = 2;

	Tss2_MU_UINT32_Marshal((uint32_t)c->off, c->b, sizeof(c->b), &hoff);
}

/* Send c and return the response code (or 0xffffffff on a transport error). */
static uint32_t raw_run(struct inst *in, struct rawcmd *c)
{
	uint8_t rsp[INST_BUF_MAX];
	size_t len = 0;
	size_t off = 6;
	uint32_t rc;

	raw_end(c);
	if (inst_transmit(in, 0, c->b, c->off, rsp, sizeof(rsp), &len) < 0 || len < 10)
		return 0xffffffffu;
	if (Tss2_MU_UINT32_Unmarshal(rsp, len, &off, &rc) != TSS2_RC_SUCCESS)
		return 0xffffffffu;

	return rc;
}

static uint32_t raw_get_random(struct inst *in)
{
	struct rawcmd c;

	raw_begin(&c, false, TPM2_CC_GetRandom, NULL, 0);
	Tss2_MU_UINT16_Marshal(8, c.b, sizeof(c.b), &c.off);

	return raw_run(in, &c);
}

/* TPM2_HierarchyChangeAuth(PLATFORM, empty password) to an empty newAuth. */
static uint32_t raw_platform_change_auth(struct inst *in)
{
	uint32_t h = TPM2_RH_PLATFORM;
	struct rawcmd c;

	raw_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &h, 1);
	Tss2_MU_UINT16_Marshal(0, c.b, sizeof(c.b), &c.off);

	return raw_run(in, &c);
}

/* TPM2_Quote with the AK over sha256 PCR 0, password session. */
static uint32_t raw_quote(struct inst *in, uint32_t ak)
{
	TPML_PCR_SELECTION sel = {
		.count = 1,
		.pcrSelections = { { .hash = TPM2_ALG_SHA256, .sizeofSelect = 3,
				     .pcrSelect = { 1, 0, 0 } } },
	};
	TPMT_SIG_SCHEME scheme = { .scheme = TPM2_ALG_NULL };
	TPM2B_DATA nonce = { .size = 4, .buffer = { 1, 2, 3, 4 } };
	struct rawcmd c;

	raw_begin(&c, true, TPM2_CC_Quote, &ak, 1);
	Tss2_MU_TPM2B_DATA_Marshal(&nonce, c.b, sizeof(c.b), &c.off);
	Tss2_MU_TPMT_SIG_SCHEME_Marshal(&scheme, c.b, sizeof(c.b), &c.off);
	Tss2_MU_TPML_PCR_SELECTION_Marshal(&sel, c.b, sizeof(c.b), &c.off);

	return raw_run(in, &c);
}

static EVP_PKEY *spki_key(const struct meta_key *k)
{
	const unsigned char *p = k->spki;

	return d2i_PUBKEY(NULL, &p, (long)k->spki_len);
}

static const char *rc_text(uint32_t rc)
{
	return Tss2_RC_Decode(rc);
}

/* ---- fixture ---- */

FIXTURE_SETUP(worker)
{
	int r;

	self->helper = getenv("VTPMD_INSTANCE_BIN");
	if (!self->helper)
		TEST_SKIP("VTPMD_INSTANCE_BIN is not set");
	setenv("TSS2_LOG", "all+none", 0);

	strcpy(self->root, "/tmp/worker_test.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->root));
	self->have_root = true;
	snprintf(self->dir, sizeof(self->dir), "%s/inst", self->root);
	snprintf(self->ca_cert, sizeof(self->ca_cert), "%s/ca.pem", self->root);
	snprintf(self->ca_key, sizeof(self->ca_key), "%s/ca.key", self->root);
	ASSERT_EQ(make_ca(self->ca_cert, self->ca_key), 0);

	r = inst_manufacture(self->helper, NULL, self->dir, "inst-test",
			     default_params(self->ca_cert, self->ca_key));
	ASSERT_EQ(r, 0);
	snprintf(self->meta_path, sizeof(self->meta_path), "%s/meta", self->dir);
	ASSERT_EQ(meta_load(self->meta_path, &self->meta), 0);
}

FIXTURE_TEARDOWN(worker)
{
	stop(self);
	meta_clear(&self->meta);
	if (self->have_root)
		(void)nftw(self->root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- tests ---- */

TEST_F(worker, meta_describes_the_instance)
{
	EXPECT_STREQ(self->meta.id, "inst-test");
	ASSERT_EQ(self->meta.n_ek, 2);
	EXPECT_EQ(self->meta.ek[0].alg, META_ALG_RSA2048);
	EXPECT_EQ(self->meta.ek[0].handle, 0x81010001);
	EXPECT_EQ(self->meta.ek[0].cert_nv, 0x01c00002);
	EXPECT_EQ(self->meta.ek[1].alg, META_ALG_ECC_P256);
	EXPECT_EQ(self->meta.ek[1].handle, 0x81010002);
	EXPECT_EQ(self->meta.ek[1].cert_nv, 0x01c0000a);
	EXPECT_EQ(self->meta.ak.alg, META_ALG_ECC_P256);
	EXPECT_EQ(self->meta.ak.handle, 0x81008000);
	EXPECT_GT(self->meta.created, 0);
}

TEST_F(worker, get_random_is_first_command)
{
	start(self, true);
	EXPECT_TRUE(inst_is_started(self->in));
	EXPECT_EQ(raw_get_random(self->in), TPM2_RC_SUCCESS);
}

TEST_F(worker, first_authorised_command_no_retry)
{
	uint32_t rc;

	start(self, true);
	rc = raw_quote(self->in, self->meta.ak.handle);
	TEST_LOG("first quote rc=0x%x (%s)", rc, rc_text(rc));
	EXPECT_NE(rc, RC_RETRY);
	EXPECT_EQ(rc, TPM2_RC_SUCCESS);
}

static void check_key_public(struct harness_fx_worker *self, const struct meta_key *k)
{
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_NAME *name = NULL;
	uint8_t buf[sizeof(TPM2B_PUBLIC)];
	size_t off = 0;
	ESYS_TR tr;

	ASSERT_EQ(Esys_TR_FromTPMPublic(self->esys, k->handle, ESYS_TR_NONE, ESYS_TR_NONE,
					ESYS_TR_NONE, &tr), TSS2_RC_SUCCESS);
	ASSERT_EQ(Esys_ReadPublic(self->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub,
				  &name, NULL), TSS2_RC_SUCCESS);
	ASSERT_EQ(Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof(buf), &off), TSS2_RC_SUCCESS);
	EXPECT_EQ(off, k->tpm_len);
	EXPECT_EQ(memcmp(buf, k->tpm, off < k->tpm_len ? off : k->tpm_len), 0);
	EXPECT_EQ(name->size, k->name_len);
	EXPECT_EQ(memcmp(name->name, k->name, k->name_len), 0);
	Esys_Free(pub);
	Esys_Free(name);
	(void)Esys_TR_Close(self->esys, &tr);
}

TEST_F(worker, persistent_keys_match_meta)
{
	start(self, true);
	for (size_t i = 0; i < self->meta.n_ek; i++)
		check_key_public(self, &self->meta.ek[i]);
	check_key_public(self, &self->meta.ak);
}

TEST_F(worker, ek_templates_are_tcg_defaults)
{
	for (size_t i = 0; i < self->meta.n_ek; i++) {
		const struct meta_key *k = &self->meta.ek[i];
		TPM2B_PUBLIC pub = { 0 };
		size_t off = 0;

		ASSERT_EQ(Tss2_MU_TPM2B_PUBLIC_Unmarshal(k->tpm, k->tpm_len, &off, &pub), 0);
		EXPECT_EQ(pub.publicArea.objectAttributes, 0x000300b2);
		EXPECT_EQ(pub.publicArea.nameAlg, TPM2_ALG_SHA256);
		EXPECT_EQ(pub.publicArea.authPolicy.size, 32);
		EXPECT_EQ(pub.publicArea.authPolicy.buffer[0], 0x83);
		EXPECT_EQ(pub.publicArea.parameters.asymDetail.symmetric.algorithm, TPM2_ALG_AES);
		EXPECT_EQ(pub.publicArea.parameters.asymDetail.symmetric.keyBits.aes, 128);
		EXPECT_EQ(pub.publicArea.parameters.asymDetail.symmetric.mode.aes, TPM2_ALG_CFB);
	}
}

static uint8_t *read_nv(struct harness_fx_worker *self, uint32_t index, size_t *ret_len)
{
	TPM2B_NV_PUBLIC *nvpub = NULL;
	TPM2B_MAX_NV_BUFFER *data = NULL;
	uint8_t *out;
	size_t len;
	ESYS_TR nv;

	if (Esys_TR_FromTPMPublic(self->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				  &nv) != TSS2_RC_SUCCESS)
		return NULL;
	if (Esys_NV_ReadPublic(self->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nvpub,
			       NULL) != TSS2_RC_SUCCESS)
		return NULL;
	len = nvpub->nvPublic.dataSize;
		/* PPWRITE WRITEDEFINE PPREAD OWNERREAD AUTHREAD NO_DA PLATFORMCREATE, WRITTEN
	 * and WRITELOCKED: EK Credential Profile 2.2.1.2. */
	EXPECT_EQ(nvpub->nvPublic.attributes, 0x62072801);
	Esys_Free(nvpub);

	out = malloc(len);
	for (size_t off = 0; out && off < len; off += data->size) {
		uint16_t n = len - off > 512 ? 512 : (uint16_t)(len - off);

		Esys_Free(data);
		data = NULL;
		if (Esys_NV_Read(self->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
				 n, (uint16_t)off, &data) != TSS2_RC_SUCCESS || data->size != n) {
			free(out);
			out = NULL;
			break;
		}
		memcpy(out + off, data->buffer, n);
	}
	Esys_Free(data);
	*ret_len = len;

	return out;
}

static int verify_cert(const char *ca_path, X509 *cert)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE *store = X509_STORE_new();
	int ok = -1;

	if (store && ctx && X509_STORE_load_file(store, ca_path) == 1 &&
	    X509_STORE_CTX_init(ctx, store, cert, NULL) == 1) {
		ok = X509_verify_cert(ctx);
		if (ok != 1)
			TEST_LOG("verify: %s", X509_verify_cert_error_string(
					 X509_STORE_CTX_get_error(ctx)));
	}
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);

	return ok;
}

TEST_F(worker, ek_certificates_verify)
{
	start(self, true);
	for (size_t i = 0; i < self->meta.n_ek; i++) {
		const struct meta_key *k = &self->meta.ek[i];
		const unsigned char *p;
		EVP_PKEY *spki;
		uint8_t *der;
		size_t len;
		X509 *cert;

		der = read_nv(self, k->cert_nv, &len);
		ASSERT_NE_NULL(der);
		ASSERT_EQ(len, k->cert_len);
		EXPECT_EQ(memcmp(der, k->cert, len), 0);

		p = der;
		cert = d2i_X509(NULL, &p, (long)len);
		ASSERT_NE_NULL(cert);
		EXPECT_EQ(p, der + len);	/* nothing after the certificate */
		EXPECT_EQ(verify_cert(self->ca_cert, cert), 1);
		EXPECT_EQ(X509_get_version(cert), X509_VERSION_3);
		EXPECT_EQ(X509_NAME_entry_count(X509_get_subject_name(cert)), 0);

		spki = spki_key(k);
		ASSERT_NE_NULL(spki);
		EXPECT_EQ(EVP_PKEY_eq(spki, X509_get0_pubkey(cert)), 1);
		EVP_PKEY_free(spki);
		X509_free(cert);
		free(der);
	}
}

static uint8_t *ecdsa_der(const TPMT_SIGNATURE *sig, size_t *ret_len)
{
	const TPMS_SIGNATURE_ECC *e = &sig->signature.ecdsa;
	ECDSA_SIG *s = ECDSA_SIG_new();
	unsigned char *der = NULL;
	int len;

	ECDSA_SIG_set0(s, BN_bin2bn(e->signatureR.buffer, e->signatureR.size, NULL),
		       BN_bin2bn(e->signatureS.buffer, e->signatureS.size, NULL));
	len = i2d_ECDSA_SIG(s, &der);
	ECDSA_SIG_free(s);
	*ret_len = len > 0 ? (size_t)len : 0;

	return len > 0 ? der : NULL;
}

TEST_F(worker, ak_quote_verifies_with_meta_spki)
{
	TPML_PCR_SELECTION sel = {
		.count = 1,
		.pcrSelections = { { .hash = TPM2_ALG_SHA256, .sizeofSelect = 3,
				     .pcrSelect = { 0x81, 0, 0 } } },
	};
	TPMT_SIG_SCHEME scheme = { .scheme = TPM2_ALG_NULL };
	TPM2B_DATA nonce = { .size = 8, .buffer = "vtpmd-q" };
	TPMT_SIGNATURE *sig = NULL;
	TPM2B_ATTEST *quoted = NULL;
	TPMS_ATTEST att;
	EVP_MD_CTX *md;
	EVP_PKEY *key;
	uint8_t *der;
	size_t der_len;
	size_t off = 0;
	ESYS_TR ak;

	start(self, true);
	ASSERT_EQ(Esys_TR_FromTPMPublic(self->esys, self->meta.ak.handle, ESYS_TR_NONE,
					ESYS_TR_NONE, ESYS_TR_NONE, &ak), TSS2_RC_SUCCESS);
	ASSERT_EQ(Esys_Quote(self->esys, ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &nonce,
			     &scheme, &sel, &quoted, &sig), TSS2_RC_SUCCESS);
	ASSERT_EQ(sig->sigAlg, TPM2_ALG_ECDSA);

	ASSERT_EQ(Tss2_MU_TPMS_ATTEST_Unmarshal(quoted->attestationData, quoted->size, &off, &att),
		  TSS2_RC_SUCCESS);
	EXPECT_EQ(att.magic, TPM2_GENERATED_VALUE);
	EXPECT_EQ(att.type, TPM2_ST_ATTEST_QUOTE);
	EXPECT_EQ(att.extraData.size, nonce.size);
	EXPECT_EQ(memcmp(att.extraData.buffer, nonce.buffer, nonce.size), 0);

	key = spki_key(&self->meta.ak);
	ASSERT_NE_NULL(key);
	der = ecdsa_der(sig, &der_len);
	ASSERT_NE_NULL(der);
	md = EVP_MD_CTX_new();
	ASSERT_EQ(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	EXPECT_EQ(EVP_DigestVerify(md, der, der_len, quoted->attestationData, quoted->size), 1);
	/* A changed byte must not verify. */
	quoted->attestationData[quoted->size - 1] ^= 1;
	EXPECT_NE(EVP_DigestVerify(md, der, der_len, quoted->attestationData, quoted->size), 1);

	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	EVP_PKEY_free(key);
	Esys_Free(quoted);
	Esys_Free(sig);
}

TEST_F(worker, platform_hierarchy_is_locked)
{
	uint32_t rc;

	start(self, true);
	rc = raw_platform_change_auth(self->in);
	TEST_LOG("platform change auth rc=0x%x (%s)", rc, rc_text(rc));
	EXPECT_NE(rc, TPM2_RC_SUCCESS);
	EXPECT_EQ(rc & ~TPM2_RC_N_MASK, TPM2_RC_BAD_AUTH);
}

TEST_F(worker, serve_without_volatile_needs_startup)
{
	uint32_t rc;

	start(self, false);
	EXPECT_FALSE(inst_is_started(self->in));
	EXPECT_EQ(raw_get_random(self->in), TPM2_RC_INITIALIZE);
	EXPECT_EQ(inst_save_volatile(self->in), -EINVAL);

	ASSERT_EQ(inst_startup(self->in), 0);
	EXPECT_TRUE(inst_is_started(self->in));
	EXPECT_EQ(raw_get_random(self->in), TPM2_RC_SUCCESS);
	for (size_t i = 0; i < self->meta.n_ek; i++)
		check_key_public(self, &self->meta.ek[i]);
	check_key_public(self, &self->meta.ak);

	rc = raw_quote(self->in, self->meta.ak.handle);
	TEST_LOG("first quote after startup rc=0x%x (%s)", rc, rc_text(rc));
	EXPECT_EQ(rc, TPM2_RC_SUCCESS);
	rc = raw_platform_change_auth(self->in);
	EXPECT_EQ(rc & ~TPM2_RC_N_MASK, TPM2_RC_BAD_AUTH);
	/* A second Startup is refused (Part 3, 9.3.1). */
	EXPECT_EQ(inst_startup(self->in), -EALREADY);
	EXPECT_TRUE(inst_is_started(self->in));
}

/*
 * TPM2_IncrementalSelfTest(RSA, ECC, SHA-256) answers the algorithms still
 * to be tested: none, in a process that serves, whether it resumed a saved
 * state or had TPM2_Startup.
 */
static void expect_all_tested(struct harness_fx_worker *self)
{
	TPML_ALG algs = {
		.count = 3,
		.algorithms = { TPM2_ALG_RSA, TPM2_ALG_ECC, TPM2_ALG_SHA256 },
	};
	TPML_ALG *todo = NULL;

	ASSERT_EQ(Esys_IncrementalSelfTest(self->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
					   &algs, &todo), TSS2_RC_SUCCESS);
	ASSERT_NE(todo, NULL);
	TEST_LOG("algorithms left to test: %u", todo->count);
	EXPECT_EQ(todo->count, 0u);
	Esys_Free(todo);
}

TEST_F(worker, serving_process_has_tested_its_algorithms)
{
	start(self, true);
	expect_all_tested(self);
	stop(self);
	start(self, false);
	ASSERT_EQ(inst_startup(self->in), 0);
	expect_all_tested(self);
}

TEST_F(worker, volatile_state_saved_and_dropped)
{
	char path[160];
	struct inst *again = NULL;

	snprintf(path, sizeof(path), "%s/volatile", self->dir);
	start(self, true);
	ASSERT_EQ(inst_drop_volatile(self->in), 0);
	EXPECT_EQ(access(path, F_OK), -1);
	ASSERT_EQ(inst_save_volatile(self->in), 0);
	EXPECT_EQ(access(path, F_OK), 0);
	ASSERT_EQ(inst_drop_volatile(self->in), 0);
	stop(self);

	/* With the volatile state gone, loading it fails cleanly. */
	EXPECT_LT(inst_start(self->helper, NULL, self->dir, true, &again), 0);
	EXPECT_NULL(again);
}

TEST_F(worker, saved_volatile_resumes)
{
	start(self, true);
	ASSERT_EQ(raw_get_random(self->in), TPM2_RC_SUCCESS);
	ASSERT_EQ(inst_save_volatile(self->in), 0);
	stop(self);

	start(self, true);
	EXPECT_TRUE(inst_is_started(self->in));
	EXPECT_EQ(raw_get_random(self->in), TPM2_RC_SUCCESS);
	EXPECT_EQ(raw_quote(self->in, self->meta.ak.handle), TPM2_RC_SUCCESS);
}

TEST_F(worker, oversize_command_refused)
{
	static uint8_t big[INST_BUF_MAX + 1];
	uint8_t rsp[16];
	struct rawcmd c;
	size_t len;

	start(self, true);
	EXPECT_EQ(inst_transmit(self->in, 0, big, sizeof(big), rsp, sizeof(rsp), &len), -EMSGSIZE);
	EXPECT_EQ(inst_transmit(self->in, 0, big, 0, rsp, sizeof(rsp), &len), -EINVAL);

	/* A response larger than the buffer given. */
	raw_begin(&c, false, TPM2_CC_GetRandom, NULL, 0);
	Tss2_MU_UINT16_Marshal(16, c.b, sizeof(c.b), &c.off);
	raw_end(&c);
	EXPECT_EQ(inst_transmit(self->in, 0, c.b, c.off, rsp, sizeof(rsp), &len), -EMSGSIZE);
	/* The instance still serves. */
	EXPECT_EQ(raw_get_random(self->in), TPM2_RC_SUCCESS);
}

static void expect_bad_frame_fatal(struct harness_fx_worker *self, const void *frame, size_t len,
				   int want)
{
	uint8_t buf[64];
	struct ipc_status st;
	uint32_t type;
	size_t n;
	int status;

	start(self, true);
	ASSERT_EQ(send(inst_fd(self->in), frame, len, MSG_NOSIGNAL), (ssize_t)len);
	ASSERT_EQ(ipc_recv(inst_fd(self->in), &type, buf, sizeof(buf), &n), 0);
	ASSERT_EQ(type, IPC_STATUS);
	ASSERT_EQ(ipc_status_parse(buf, n, &st), 0);
	EXPECT_EQ(st.status, want);

	/* The instance exits after answering, without a crash. */
	EXPECT_EQ(ipc_recv(inst_fd(self->in), &type, buf, sizeof(buf), &n), -EPIPE);
	ASSERT_EQ(waitpid(inst_pid(self->in), &status, 0), inst_pid(self->in));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 1);
	EXPECT_EQ(raw_get_random(self->in), 0xffffffffu);
}

TEST_F(worker, short_frame_answered_then_fatal)
{
	static const uint8_t frame[3] = { 0, 0, 1 };

	expect_bad_frame_fatal(self, frame, sizeof(frame), -EBADMSG);
}

TEST_F(worker, lying_length_answered_then_fatal)
{
	static const uint8_t frame[12] = { 0, 0, 0, IPC_CMD, 0, 0, 0, 40, 0, 0x80, 1, 0 };

	expect_bad_frame_fatal(self, frame, sizeof(frame), -EBADMSG);
}

TEST_F(worker, unknown_type_answered_then_fatal)
{
	static const uint8_t frame[8] = { 0, 0, 0, 99, 0, 0, 0, 0 };

	expect_bad_frame_fatal(self, frame, sizeof(frame), -EBADMSG);
}

TEST_F(worker, oversize_frame_answered_then_fatal)
{
	static uint8_t frame[IPC_HDR_LEN + IPC_PAYLOAD_MAX + 1];

	frame[3] = IPC_CMD;
	frame[6] = (IPC_PAYLOAD_MAX + 1) >> 8;
	frame[7] = (IPC_PAYLOAD_MAX + 1) & 0xff;
	expect_bad_frame_fatal(self, frame, sizeof(frame), -EMSGSIZE);
}

TEST_F(worker, bad_ca_fails_cleanly)
{
	const struct inst_manufacture_params *p;
	char dir[160];
	char path[200];
	char missing[160];

	snprintf(dir, sizeof(dir), "%s/bad", self->root);
	snprintf(missing, sizeof(missing), "%s/no-such-ca.pem", self->root);
	p = default_params(missing, self->ca_key);
	EXPECT_EQ(inst_manufacture(self->helper, NULL, dir, "bad", p), -EIO);

	/* A key that is not the certificate's. */
	p = default_params(self->ca_cert, self->ca_cert);
	EXPECT_EQ(inst_manufacture(self->helper, NULL, dir, "bad", p), -EIO);

	for (size_t i = 0; i < 3; i++) {
		static const char *const files[] = { "meta", "permall", "volatile" };

		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		EXPECT_EQ(access(path, F_OK), -1);
	}
}

TEST_F(worker, manufacture_refuses_existing_state)
{
	struct meta again;

	EXPECT_EQ(inst_manufacture(self->helper, NULL, self->dir, "other",
				   default_params(self->ca_cert, self->ca_key)), -EIO);
	/* The existing instance is untouched. */
	ASSERT_EQ(meta_load(self->meta_path, &again), 0);
	EXPECT_STREQ(again.id, "inst-test");
	meta_clear(&again);
}

TEST_F(worker, manufacture_rejects_bad_id)
{
	char dir[160];

	snprintf(dir, sizeof(dir), "%s/bad-id", self->root);
	EXPECT_EQ(inst_manufacture(self->helper, NULL, dir, "a/b",
				   default_params(self->ca_cert, self->ca_key)), -EINVAL);
	EXPECT_EQ(access(dir, F_OK), -1);
}

struct thread_start {
	struct harness_fx_worker *self;
	pid_t tid;
	int r;
};

static void *start_in_thread(void *arg)
{
	struct thread_start *ts = arg;

	ts->tid = gettid();
	ts->r = inst_start(ts->self->helper, NULL, ts->self->dir, true, &ts->self->in);

	return NULL;
}

TEST_F(worker, outlives_the_thread_that_started_it)
{
	struct thread_start ts = { .self = self };
	char path[64];
	pthread_t t;

	/* PR_SET_PDEATHSIG fires when the spawning thread ends. */
	ASSERT_EQ(pthread_create(&t, NULL, start_in_thread, &ts), 0);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(ts.r, 0);

	/* The signal goes out when the thread is fully gone, after the join. */
	snprintf(path, sizeof(path), "/proc/self/task/%d", (int)ts.tid);
	for (int i = 0; i < 200 && access(path, F_OK) == 0; i++)
		usleep(5 * 1000);
	EXPECT_EQ(access(path, F_OK), -1);
	EXPECT_EQ(raw_get_random(self->in), TPM2_RC_SUCCESS);
}

/* True once pid is gone or a zombie nobody reaps (we are not its parent). */
static bool process_is_gone(pid_t pid)
{
	char path[64];
	char buf[256];
	char *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');

	return p && p[1] == ' ' && p[2] == 'Z';
}

TEST_F(worker, exits_when_the_daemon_dies)
{
	pid_t child;
	pid_t worker = 0;
	int status;
	int fds[2];

	ASSERT_EQ(pipe(fds), 0);
	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		struct inst *in;

		if (inst_start(self->helper, NULL, self->dir, true, &in) == 0) {
			pid_t pid = inst_pid(in);

			(void)write(fds[1], &pid, sizeof(pid));
		}
		_exit(0);
	}
	close(fds[1]);
	EXPECT_EQ(read(fds[0], &worker, sizeof(worker)), (ssize_t)sizeof(worker));
	close(fds[0]);
	ASSERT_EQ(waitpid(child, &status, 0), child);
	ASSERT_GT(worker, 0);

	for (int i = 0; i < 500 && !process_is_gone(worker); i++)
		usleep(10 * 1000);
	EXPECT_TRUE(process_is_gone(worker));
}

TEST_F(worker, rsa_ak_quotes)
{
	struct inst_manufacture_params p = *default_params(self->ca_cert, self->ca_key);
	struct meta m;
	char path[200];

	snprintf(self->dir, sizeof(self->dir), "%s/rsa", self->root);
	p.ek_ecc = false;
	p.ak_alg = META_ALG_RSA2048;
	p.ak_handle = 0x81008001;
	ASSERT_EQ(inst_manufacture(self->helper, NULL, self->dir, "rsa", &p), 0);
	snprintf(path, sizeof(path), "%s/meta", self->dir);
	ASSERT_EQ(meta_load(path, &m), 0);
	EXPECT_EQ(m.n_ek, 1);
	EXPECT_EQ(m.ak.alg, META_ALG_RSA2048);

	start(self, true);
	EXPECT_EQ(raw_quote(self->in, 0x81008001), TPM2_RC_SUCCESS);
	meta_clear(&m);
}

TEST_HARNESS_MAIN
