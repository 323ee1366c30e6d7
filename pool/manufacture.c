#include "manufacture.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include "ca.h"
#include "fileio.h"
#include "ilog.h"
#include "internal.h"
#include "tcti.h"

/*
 * Handles of the EKs and their certificates.  The persistent handles are
 * those of the TCG "TPM v2.0 Provisioning Guidance" 1.0 (RSA 2048 EK
 * 0x81010001, ECC NIST P256 EK 0x81010002), inside the endorsement-key range
 * 0x81010000-0x8101ffff of the TCG "Registry of Reserved TPM 2.0 Handles and
 * Localities" 1.1; go-tpm-tools uses the same values.  The NV indices are
 * the low range of the TCG EK Credential Profile 2.3, 2.2.1.4.
 */
#define MF_EK_RSA_HANDLE 0x81010001u
#define MF_EK_ECC_HANDLE 0x81010002u
#define MF_EK_RSA_NV 0x01c00002u
#define MF_EK_ECC_NV 0x01c0000au

/* EK templates L-1 and L-2: EK Credential Profile, B.3.3 and B.3.4. */
#define MF_EK_ATTRS (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | \
		     TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY | \
		     TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT)
#define MF_AK_ATTRS (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | \
		     TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH | \
		     TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT)

/* EK certificate indices, written by the platform (EK Credential Profile). */
#define MF_EK_NV_ATTRS (TPMA_NV_PPWRITE | TPMA_NV_WRITEDEFINE | TPMA_NV_PPREAD | \
			TPMA_NV_OWNERREAD | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA | \
			TPMA_NV_PLATFORMCREATE)

/* PolicyA: TPM2_PolicySecret(TPM_RH_ENDORSEMENT), EK Credential Profile B.3.2. */
static const uint8_t mf_policy_a[32] = {
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d,
	0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64,
	0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
};

struct mf {
	const struct manufacture_opts *o;
	struct engine *engine;
	struct tcti *tcti;
	ESYS_CONTEXT *esys;
	struct ca *ca;
	struct ca_tpm_info info;
	uint16_t nv_buf_max;	/* largest NV_Write chunk, from TPM_PT_NV_BUFFER_MAX */
	struct meta meta;
};

static int mf_tpm_fail(const char *step, TSS2_RC rc)
{
	ilog(LOG_ERR, "%s failed rc=0x%" PRIx32 " (%s)", step, rc, Tss2_RC_Decode(rc));

	return -EIO;
}

static int mf_fail(const char *step, int r)
{
	ilog(LOG_ERR, "%s failed err=\"%s\"", step, strerror(-r));

	return r;
}

static int mf_random(void *buf, size_t len)
{
	ssize_t n;

	n = getrandom(buf, len, 0);
	if (n < 0)
		return -errno;

	return (size_t)n == len ? 0 : -EIO;
}

static void mf_ek_template(enum meta_alg alg, TPM2B_PUBLIC *t)
{
	TPMT_PUBLIC *p = &t->publicArea;

	memset(t, 0, sizeof(*t));
	p->nameAlg = TPM2_ALG_SHA256;
	p->objectAttributes = MF_EK_ATTRS;
	p->authPolicy.size = sizeof(mf_policy_a);
	memcpy(p->authPolicy.buffer, mf_policy_a, sizeof(mf_policy_a));

	if (alg == META_ALG_RSA2048) {
		p->type = TPM2_ALG_RSA;
		p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
		p->parameters.rsaDetail.symmetric.keyBits.aes = 128;
		p->parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
		p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
		p->parameters.rsaDetail.keyBits = 2048;
		p->unique.rsa.size = 256;
	} else {
		p->type = TPM2_ALG_ECC;
		p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
		p->parameters.eccDetail.symmetric.keyBits.aes = 128;
		p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
		p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
		p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
		p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
		p->unique.ecc.x.size = 32;
		p->unique.ecc.y.size = 32;
	}
}

/* A restricted signing primary; the random unique field makes it unique. */
static int mf_ak_template(enum meta_alg alg, TPM2B_PUBLIC *t)
{
	TPMT_PUBLIC *p = &t->publicArea;

	memset(t, 0, sizeof(*t));
	p->nameAlg = TPM2_ALG_SHA256;
	p->objectAttributes = MF_AK_ATTRS;

	if (alg == META_ALG_RSA2048) {
		p->type = TPM2_ALG_RSA;
		p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
		p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_RSASSA;
		p->parameters.rsaDetail.scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
		p->parameters.rsaDetail.keyBits = 2048;
		p->unique.rsa.size = 32;
		return mf_random(p->unique.rsa.buffer, p->unique.rsa.size);
	}

	p->type = TPM2_ALG_ECC;
	p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
	p->parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
	p->parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
	p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
	p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	p->unique.ecc.x.size = 32;

	return mf_random(p->unique.ecc.x.buffer, p->unique.ecc.x.size);
}

/*
 * ESYS over the engine, quietly: 0, or -EIO with the TSS response code in
 * *ret_rc, or -ENOMEM.
 */
static int mf_esys_attach(struct engine *e, struct tcti **ret_tcti, ESYS_CONTEXT **ret_esys,
			  uint32_t *ret_rc)
{
	ESYS_CONTEXT *esys;
	struct tcti *t;
	TSS2_RC rc;
	int r;

	*ret_rc = 0;
	r = tcti_new(engine_process, e, &t);
	if (r < 0)
		return r;
	rc = Esys_Initialize(&esys, tcti_context(t), NULL);
	if (rc != TSS2_RC_SUCCESS) {
		tcti_free(t);
		*ret_rc = rc;
		return -EIO;
	}

	*ret_tcti = t;
	*ret_esys = esys;

	return 0;
}

static int mf_esys_open(struct engine *e, struct tcti **ret_tcti, ESYS_CONTEXT **ret_esys)
{
	uint32_t rc;
	int r;

	r = mf_esys_attach(e, ret_tcti, ret_esys, &rc);
	if (r == -EIO)
		return mf_tpm_fail("esys init", rc);

	return r;
}

static void mf_esys_close(struct tcti *t, ESYS_CONTEXT *esys)
{
	Esys_Finalize(&esys);
	tcti_free(t);
}

/*
 * Give the platform hierarchy a random authValue that nobody keeps, so that
 * no client of the instance can act as the platform (the daemon never needs
 * to).  Part 3, 24.8 (HierarchyChangeAuth).
 */
static int mf_lock_platform(ESYS_CONTEXT *esys, TSS2_RC *ret_rc)
{
	TPM2B_AUTH auth = { .size = 32 };
	TSS2_RC rc;

	if (mf_random(auth.buffer, auth.size) < 0)
		return -EIO;
	/* A trailing zero byte would be dropped by the TPM: avoid any. */
	auth.buffer[auth.size - 1] |= 1;

	rc = Esys_HierarchyChangeAuth(esys, ESYS_TR_RH_PLATFORM, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				      ESYS_TR_NONE, &auth);
	explicit_bzero(&auth, sizeof(auth));
	(void)Esys_TR_SetAuth(esys, ESYS_TR_RH_PLATFORM, &auth);
	if (rc != TSS2_RC_SUCCESS) {
		*ret_rc = rc;
		return -EIO;
	}

	return 0;
}

/*
 * The first authorisation of a DA-protected entity after TPM2_Startup makes
 * the TPM record in NV that DA was used and answer TPM_RC_RETRY (the
 * reference code's USE_DA_USED, in CheckLockedOut()).  Take that hit here:
 * a throw-away HMAC key in the null hierarchy, used once with a password
 * (ESYS resubmits on RETRY), so that no client ever sees the RETRY.  The
 * flag travels in the volatile state.
 */
static int mf_da_warm_up(ESYS_CONTEXT *esys, TSS2_RC *ret_rc)
{
	const TPM2B_SENSITIVE_CREATE sens = { 0 };
	const TPML_PCR_SELECTION pcrs = { 0 };
	const TPM2B_DATA outside = { 0 };
	const TPM2B_MAX_BUFFER data = { .size = 1 };
	TPM2B_PUBLIC tmpl = { 0 };
	TPM2B_DIGEST *hmac = NULL;
	ESYS_TR obj;
	TSS2_RC rc;

	tmpl.publicArea.type = TPM2_ALG_KEYEDHASH;
	tmpl.publicArea.nameAlg = TPM2_ALG_SHA256;
	tmpl.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
		TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
		TPMA_OBJECT_SIGN_ENCRYPT;
	tmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
	tmpl.publicArea.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;

	rc = Esys_CreatePrimary(esys, ESYS_TR_RH_NULL, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				ESYS_TR_NONE, &sens, &tmpl, &outside, &pcrs, &obj, NULL, NULL,
				NULL, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		*ret_rc = rc;
		return -EIO;
	}
	rc = Esys_HMAC(esys, obj, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &data,
		       TPM2_ALG_SHA256, &hmac);
	Esys_Free(hmac);
	(void)Esys_FlushContext(esys, obj);
	if (rc != TSS2_RC_SUCCESS) {
		*ret_rc = rc;
		return -EIO;
	}

	return 0;
}

/* One TPM property (TPM2_PT_*) from TPM2_GetCapability, or -EIO. */
static int mf_property(ESYS_CONTEXT *esys, uint32_t prop, uint32_t *ret)
{
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPML_TAGGED_TPM_PROPERTY *l;
	TSS2_RC rc;
	int r = -EIO;

	rc = Esys_GetCapability(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				TPM2_CAP_TPM_PROPERTIES, prop, 1, NULL, &cap);
	if (rc == TSS2_RC_SUCCESS) {
		l = &cap->data.tpmProperties;
		if (l->count == 1 && l->tpmProperty[0].property == prop) {
			*ret = l->tpmProperty[0].value;
			r = 0;
		}
	}
	Esys_Free(cap);

	return r;
}

/*
 * TPM2_Startup after a crash (no orderly shutdown) counts one failed
 * authorisation when DA had been used (Part 1, 19.8.6), and it always has:
 * mf_da_warm_up() uses it right after every Startup.  So each crash of
 * vtpmd would move the TPM one step toward TPM_RC_LOCKOUT, and a few
 * crashes would lock out an agent that never failed an authorisation.
 * Undo that with TPM2_DictionaryAttackLockReset under the lockout
 * hierarchy's empty authValue.  The counter cannot say which failures the
 * crash added, so failures counted before a crash are forgiven too.  When
 * a client set a lockout authValue the reset is not tried (a wrong one
 * would lock the lockout hierarchy), and the rotation policy's lockout
 * watermark stays the safety net.
 */
static int mf_da_forgive_crash(ESYS_CONTEXT *esys, TSS2_RC *ret_rc)
{
	uint32_t counter;
	uint32_t perm;
	TSS2_RC rc;

	if (mf_property(esys, TPM2_PT_LOCKOUT_COUNTER, &counter) < 0 ||
	    mf_property(esys, TPM2_PT_PERMANENT, &perm) < 0)
		return -EIO;
	if (counter == 0 || (perm & TPMA_PERMANENT_LOCKOUTAUTHSET))
		return 0;
	rc = Esys_DictionaryAttackLockReset(esys, ESYS_TR_RH_LOCKOUT, ESYS_TR_PASSWORD,
					    ESYS_TR_NONE, ESYS_TR_NONE);
	if (rc != TSS2_RC_SUCCESS) {
		*ret_rc = rc;
		return -EIO;
	}

	return 0;
}

/* TPM2_Startup(CLEAR) and what it undoes; see manufacture_startup(). */
static int mf_startup(ESYS_CONTEXT *esys, uint32_t *ret_rc)
{
	TSS2_RC rc;
	int r;

	rc = Esys_Startup(esys, TPM2_SU_CLEAR);
	r = rc == TSS2_RC_SUCCESS ? 0 : -EIO;
	if (r < 0)
		*ret_rc = rc;
	if (r == 0)
		r = mf_da_forgive_crash(esys, ret_rc);
	if (r == 0)
		r = mf_lock_platform(esys, ret_rc);
	if (r == 0)
		r = mf_da_warm_up(esys, ret_rc);

	return r;
}

/* Run step through an ESYS context attached to e for the time of the step. */
static int mf_with_esys(struct engine *e, int (*step)(ESYS_CONTEXT *, uint32_t *),
			uint32_t *ret_rc)
{
	ESYS_CONTEXT *esys;
	struct tcti *t;
	int r;

	r = mf_esys_attach(e, &t, &esys, ret_rc);
	if (r < 0)
		return r;
	r = step(esys, ret_rc);
	mf_esys_close(t, esys);

	return r;
}

/*
 * Run TPM2_Startup(CLEAR) on the engine, take back the DA failure the
 * crash before it counted, lock the platform hierarchy again, since
 * Startup(CLEAR) resets platformAuth to empty (Part 3, 9.3.1), and take
 * the DA-used RETRY.  The engine must not be started yet.  Prints nothing.
 * Returns 0, or -EIO with the TPM response code in *ret_rc, or -ENOMEM.
 * Instance process.
 */
int manufacture_startup(struct engine *e, uint32_t *ret_rc)
{
	return mf_with_esys(e, mf_startup, ret_rc);
}

/* TPM2_SelfTest(YES); see manufacture_self_test(). */
static int mf_self_test(ESYS_CONTEXT *esys, uint32_t *ret_rc)
{
	TSS2_RC rc;

	rc = Esys_SelfTest(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_YES);
	if (rc != TSS2_RC_SUCCESS) {
		*ret_rc = rc;
		return -EIO;
	}

	return 0;
}

/*
 * Test every algorithm now (TPM2_SelfTest(YES), Part 3, 10.2), so that
 * no client command pays for a lazy self test (an RSA one costs
 * milliseconds) or meets TPM_RC_TESTING.  libtpms does not save which
 * algorithms it has tested, so this is for a process that is about to
 * serve, after TPM2_Startup.  Returns 0, or -EIO with the TPM response
 * code in *ret_rc, or -ENOMEM.  Instance process.
 */
int manufacture_self_test(struct engine *e, uint32_t *ret_rc)
{
	return mf_with_esys(e, mf_self_test, ret_rc);
}

static void mf_props_from(struct mf *mf, const TPML_TAGGED_TPM_PROPERTY *props)
{
	char vendor[17] = "";

	for (uint32_t i = 0; i < props->count; i++) {
		uint32_t v = props->tpmProperty[i].value;
		uint32_t p = props->tpmProperty[i].property;

		if (p == TPM2_PT_MANUFACTURER)
			(void)snprintf(mf->info.manufacturer, sizeof(mf->info.manufacturer),
				       "id:%08" PRIX32, v);
		else if (p == TPM2_PT_FIRMWARE_VERSION_1)
			(void)snprintf(mf->info.version, sizeof(mf->info.version),
				       "id:%08" PRIX32, v);
		else if (p == TPM2_PT_NV_BUFFER_MAX)
			mf->nv_buf_max = v < TPM2_MAX_NV_BUFFER_SIZE ? v : TPM2_MAX_NV_BUFFER_SIZE;
		else if (p >= TPM2_PT_VENDOR_STRING_1 && p <= TPM2_PT_VENDOR_STRING_4)
			pool_put_be32((uint8_t *)vendor + 4 * (p - TPM2_PT_VENDOR_STRING_1), v);
	}

	/* The vendor strings are NUL padded; keep printable characters only. */
	for (size_t i = 0, j = 0; i < 16; i++)
		if (vendor[i] > ' ' && vendor[i] < 0x7f && j < sizeof(mf->info.model) - 1)
			mf->info.model[j++] = vendor[i];
}

static int mf_read_props(struct mf *mf)
{
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more;
	TSS2_RC rc;

	rc = Esys_GetCapability(mf->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				TPM2_CAP_TPM_PROPERTIES, TPM2_PT_FIXED, TPM2_MAX_TPM_PROPERTIES,
				&more, &cap);
	if (rc != TSS2_RC_SUCCESS)
		return mf_tpm_fail("get properties", rc);
	mf_props_from(mf, &cap->data.tpmProperties);
	Esys_Free(cap);

	if (!mf->info.manufacturer[0] || !mf->info.version[0] || !mf->nv_buf_max)
		return mf_fail("get properties", -EPROTO);
	if (!mf->info.model[0])
		strcpy(mf->info.model, "unknown");

	return 0;
}

static int mf_create_primary(struct mf *mf, const char *step, const TPM2B_PUBLIC *tmpl,
			     ESYS_TR *ret_obj, TPM2B_PUBLIC **ret_pub)
{
	const TPM2B_SENSITIVE_CREATE sens = { 0 };
	const TPML_PCR_SELECTION pcrs = { 0 };
	const TPM2B_DATA outside = { 0 };
	TSS2_RC rc;

	rc = Esys_CreatePrimary(mf->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				ESYS_TR_NONE, &sens, tmpl, &outside, &pcrs, ret_obj, ret_pub,
				NULL, NULL, NULL);
	if (rc != TSS2_RC_SUCCESS)
		return mf_tpm_fail(step, rc);

	return 0;
}

/* Make the transient obj persistent at handle and flush obj. */
static int mf_persist(struct mf *mf, const char *step, ESYS_TR obj, uint32_t handle,
		      ESYS_TR *ret_tr)
{
	TSS2_RC rc;

	rc = Esys_EvictControl(mf->esys, ESYS_TR_RH_OWNER, obj, ESYS_TR_PASSWORD, ESYS_TR_NONE,
			       ESYS_TR_NONE, handle, ret_tr);
	(void)Esys_FlushContext(mf->esys, obj);
	if (rc != TSS2_RC_SUCCESS)
		return mf_tpm_fail(step, rc);

	return 0;
}

static int mf_key_public(struct mf *mf, struct meta_key *k, ESYS_TR tr, const TPM2B_PUBLIC *pub)
{
	uint8_t buf[sizeof(TPM2B_PUBLIC)];
	TPM2B_NAME *name = NULL;
	size_t off = 0;
	TSS2_RC rc;

	rc = Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof(buf), &off);
	if (rc != TSS2_RC_SUCCESS)
		return mf_tpm_fail("marshal public", rc);
	rc = Esys_TR_GetName(mf->esys, tr, &name);
	if (rc != TSS2_RC_SUCCESS)
		return mf_tpm_fail("get name", rc);

	k->tpm = malloc(off);
	k->name = malloc(name->size);
	if (!k->tpm || !k->name) {
		Esys_Free(name);
		return mf_fail("public area", -ENOMEM);
	}
	memcpy(k->tpm, buf, off);
	k->tpm_len = off;
	memcpy(k->name, name->name, name->size);
	k->name_len = name->size;
	Esys_Free(name);

	return 0;
}

/*
 * Fill k from the persisted key: its TPM2B_PUBLIC wire form, its name and
 * its DER SubjectPublicKeyInfo; *ret_pkey (may be NULL) gets the key.
 */
static int mf_key_fill(struct mf *mf, struct meta_key *k, ESYS_TR tr, const TPM2B_PUBLIC *pub,
		       EVP_PKEY **ret_pkey)
{
	EVP_PKEY *pkey;
	int r;

	r = mf_key_public(mf, k, tr, pub);
	if (r < 0)
		return r;
	r = ca_pkey_from_tpm(&pub->publicArea, &pkey);
	if (r < 0)
		return mf_fail("public key", r);
	r = ca_spki_der(pkey, &k->spki, &k->spki_len);
	if (r < 0) {
		EVP_PKEY_free(pkey);
		return mf_fail("public key", r);
	}

	if (ret_pkey)
		*ret_pkey = pkey;
	else
		EVP_PKEY_free(pkey);

	return 0;
}

static int mf_nv_write(struct mf *mf, ESYS_TR nv, const uint8_t *buf, size_t len)
{
	TPM2B_MAX_NV_BUFFER chunk;
	TSS2_RC rc;

	for (size_t off = 0; off < len; off += chunk.size) {
		chunk.size = len - off < mf->nv_buf_max ? (uint16_t)(len - off) : mf->nv_buf_max;
		memcpy(chunk.buffer, buf + off, chunk.size);
		rc = Esys_NV_Write(mf->esys, ESYS_TR_RH_PLATFORM, nv, ESYS_TR_PASSWORD,
				   ESYS_TR_NONE, ESYS_TR_NONE, &chunk, (uint16_t)off);
		if (rc != TSS2_RC_SUCCESS)
			return mf_tpm_fail("write ek certificate", rc);
	}

	return 0;
}

/* Define the certificate index under the platform, write it, lock it. */
static int mf_nv_store_cert(struct mf *mf, uint32_t index, const uint8_t *der, size_t len)
{
	const TPM2B_AUTH auth = { 0 };
	TPM2B_NV_PUBLIC pub = { 0 };
	ESYS_TR nv = ESYS_TR_NONE;
	TSS2_RC rc;
	int r;

	if (len > UINT16_MAX)
		return mf_fail("ek certificate", -EFBIG);
	pub.nvPublic.nvIndex = index;
	pub.nvPublic.nameAlg = TPM2_ALG_SHA256;
	pub.nvPublic.attributes = MF_EK_NV_ATTRS;
	pub.nvPublic.dataSize = (uint16_t)len;

	rc = Esys_NV_DefineSpace(mf->esys, ESYS_TR_RH_PLATFORM, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				 ESYS_TR_NONE, &auth, &pub, &nv);
	if (rc != TSS2_RC_SUCCESS)
		return mf_tpm_fail("define ek certificate index", rc);

	r = mf_nv_write(mf, nv, der, len);
	if (r == 0) {
		rc = Esys_NV_WriteLock(mf->esys, ESYS_TR_RH_PLATFORM, nv, ESYS_TR_PASSWORD,
				       ESYS_TR_NONE, ESYS_TR_NONE);
		if (rc != TSS2_RC_SUCCESS)
			r = mf_tpm_fail("lock ek certificate index", rc);
	}
	(void)Esys_TR_Close(mf->esys, &nv);

	return r;
}

static int mf_make_ek(struct mf *mf, enum meta_alg alg)
{
	struct meta_key *k = &mf->meta.ek[mf->meta.n_ek];
	TPM2B_PUBLIC *pub = NULL;
	EVP_PKEY *pkey = NULL;
	TPM2B_PUBLIC tmpl;
	ESYS_TR obj;
	ESYS_TR tr;
	int r;

	k->alg = alg;
	k->handle = alg == META_ALG_RSA2048 ? MF_EK_RSA_HANDLE : MF_EK_ECC_HANDLE;
	k->cert_nv = alg == META_ALG_RSA2048 ? MF_EK_RSA_NV : MF_EK_ECC_NV;
	mf->meta.n_ek++;
	mf_ek_template(alg, &tmpl);

	r = mf_create_primary(mf, "create ek", &tmpl, &obj, &pub);
	if (r < 0)
		return r;
	r = mf_persist(mf, "persist ek", obj, k->handle, &tr);
	if (r == 0)
		r = mf_key_fill(mf, k, tr, pub, &pkey);
	Esys_Free(pub);
	if (r < 0)
		return r;

	r = ca_ek_cert_make(mf->ca, pkey, alg, &mf->info, &k->cert, &k->cert_len);
	EVP_PKEY_free(pkey);
	if (r < 0)
		return mf_fail("make ek certificate", r);

	return mf_nv_store_cert(mf, k->cert_nv, k->cert, k->cert_len);
}

static int mf_make_ak(struct mf *mf)
{
	struct meta_key *k = &mf->meta.ak;
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PUBLIC tmpl;
	ESYS_TR obj;
	ESYS_TR tr;
	int r;

	k->alg = mf->o->ak_alg;
	k->handle = mf->o->ak_handle;
	r = mf_ak_template(k->alg, &tmpl);
	if (r < 0)
		return mf_fail("ak template", r);

	r = mf_create_primary(mf, "create ak", &tmpl, &obj, &pub);
	if (r < 0)
		return r;
	r = mf_persist(mf, "persist ak", obj, k->handle, &tr);
	if (r == 0)
		r = mf_key_fill(mf, k, tr, pub, NULL);
	Esys_Free(pub);

	return r;
}

static int mf_provision(struct mf *mf)
{
	TSS2_RC rc;
	int r;

	rc = Esys_Startup(mf->esys, TPM2_SU_CLEAR);
	if (rc != TSS2_RC_SUCCESS)
		return mf_tpm_fail("startup", rc);
	r = mf_read_props(mf);
	if (r < 0)
		return r;

	if (mf->o->ek_rsa && (r = mf_make_ek(mf, META_ALG_RSA2048)) < 0)
		return r;
	if (mf->o->ek_ecc && (r = mf_make_ek(mf, META_ALG_ECC_P256)) < 0)
		return r;
	if (mf->o->ak_alg != META_ALG_NONE && (r = mf_make_ak(mf)) < 0)
		return r;

	/*
	 * No full self test here: libtpms keeps which algorithms it has tested
	 * out of its saved state, so the serving process runs it (see
	 * manufacture_self_test()).
	 */
	if (mf_lock_platform(mf->esys, &rc) < 0)
		return mf_tpm_fail("lock platform", rc);
	if (mf_da_warm_up(mf->esys, &rc) < 0)
		return mf_tpm_fail("da warm-up", rc);

	return 0;
}

static int mf_save(struct mf *mf)
{
	char path[4096];
	int r;

	r = engine_save_permanent(mf->engine);
	if (r < 0)
		return mf_fail("save permanent state", r);
	r = engine_save_volatile(mf->engine);
	if (r < 0)
		return mf_fail("save volatile state", r);

	/* The meta file comes last: its presence says the instance is complete. */
	r = snprintf(path, sizeof(path), "%s/%s", mf->o->dir, POOL_FILE_META);
	if (r < 0 || (size_t)r >= sizeof(path))
		return mf_fail("save meta", -ENAMETOOLONG);
	strcpy(mf->meta.id, mf->o->id);
	mf->meta.created = (int64_t)time(NULL);
	r = meta_save(&mf->meta, path);
	if (r < 0)
		return mf_fail("save meta", r);

	return 0;
}

/* dir must hold no state: create it (0700) or accept it without any. */
static int mf_prepare_dir(const char *dir)
{
	static const char *const files[] = { POOL_FILE_META, POOL_FILE_PERM, POOL_FILE_VOLATILE };
	char path[4096];

	if (mkdir(dir, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return mf_fail("create directory", -errno);

	for (size_t i = 0; i < POOL_ARRAY_SIZE(files); i++) {
		if (snprintf(path, sizeof(path), "%s/%s", dir, files[i]) >= (int)sizeof(path))
			return mf_fail("check directory", -ENAMETOOLONG);
		if (access(path, F_OK) == 0)
			return mf_fail("check directory", -EEXIST);
	}

	return 0;
}

static void mf_remove_state(const char *dir)
{
	(void)fileio_unlink(dir, POOL_FILE_META);
	(void)fileio_unlink(dir, POOL_FILE_VOLATILE);
	(void)fileio_unlink(dir, POOL_FILE_PERM);
}

/*
 * Manufacture a fresh TPM in o->dir, which must hold no state yet: start
 * libtpms on it, TPM2_Startup(CLEAR), create and persist the EKs with their
 * certificates (signed by the CA o->ca_cert/o->ca_key) and the AK, run a
 * full self test, lock the platform hierarchy, then save the permanent and
 * volatile state and, last, the meta file.  On failure one line naming the
 * step goes to stderr and the state files are removed.  Returns 0 or a
 * negative errno (-EIO for a TPM failure).  Instance process, once.
 */
int manufacture_run(const struct manufacture_opts *o)
{
	struct mf mf = { .o = o };
	int r;

	r = mf_prepare_dir(o->dir);
	if (r < 0)
		return r;
	r = ca_load(o->ca_cert, o->ca_key, &mf.ca);
	if (r < 0)
		return mf_fail("load ca", r);

	r = engine_start(o->dir, NULL, 0, true, &mf.engine);
	if (r < 0) {
		mf_fail("start tpm", r);
		goto out_free;
	}
	r = mf_esys_open(mf.engine, &mf.tcti, &mf.esys);
	if (r < 0)
		goto out_stop;

	r = mf_provision(&mf);
	if (r == 0)
		r = mf_save(&mf);
	mf_esys_close(mf.tcti, mf.esys);

out_stop:
	engine_stop(mf.engine);
out_free:
	/* The directory held no state before us: whatever is there is ours. */
	if (r < 0)
		mf_remove_state(o->dir);
	meta_clear(&mf.meta);
	ca_free(mf.ca);
	return r;
}
