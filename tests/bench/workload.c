#include "workload.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tss2/tss2_tctildr.h>

#include "engine.h"
#include "tcti.h"

#define WORKLOAD_INPROC "inproc:"

struct workload {
	ESYS_CONTEXT *esys;
	TSS2_TCTI_CONTEXT *ldr;		/* from the TCTI loader, or NULL */
	struct tcti *own;		/* the in-process TCTI, or NULL */
	struct engine *engine;		/* libtpms in this process, or NULL */
	ESYS_TR key[WORKLOAD_OPS];	/* the AK or parent each op uses */
};

static const char *const op_names[WORKLOAD_OPS] = {
	[WORKLOAD_GETRANDOM] = "getrandom",
	[WORKLOAD_QUOTE_ECC] = "quote_ecc",
	[WORKLOAD_QUOTE_RSA] = "quote_rsa",
	[WORKLOAD_CLF] = "create_load_flush",
};

/* Name of op as the JSON results spell it. */
const char *workload_op_name(enum workload_op op)
{
	return op < WORKLOAD_OPS ? op_names[op] : "?";
}

/* Parse an op name.  Returns 0 or -EINVAL. */
int workload_op_parse(const char *s, enum workload_op *ret)
{
	int i;

	for (i = 0; i < WORKLOAD_OPS; i++) {
		if (strcmp(s, op_names[i]) == 0) {
			*ret = (enum workload_op)i;
			return 0;
		}
	}

	return -EINVAL;
}

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t workload_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);

	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int open_inproc(struct workload *w, const char *dir)
{
	int r;

	r = engine_start(dir, NULL, 0, false, &w->engine);
	if (r < 0)
		return r;

	return tcti_new(engine_process, w->engine, &w->own);
}

/*
 * Reach a TPM through conf: "inproc:DIR" runs libtpms in this process on
 * the state in DIR (a fresh TPM when DIR is empty; once per process), any
 * other string goes to the tpm2-tss TCTI loader ("device:/path",
 * "swtpm:path=/sock", "tabrmd:bus_type=session").  Returns 0, -EIO when
 * the TCTI or ESYS cannot start, or another negative errno.
 */
int workload_open(const char *conf, struct workload **ret)
{
	struct workload *w;
	TSS2_TCTI_CONTEXT *tcti;
	int r = 0;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	for (int i = 0; i < WORKLOAD_OPS; i++)
		w->key[i] = ESYS_TR_NONE;

	if (strncmp(conf, WORKLOAD_INPROC, strlen(WORKLOAD_INPROC)) == 0)
		r = open_inproc(w, conf + strlen(WORKLOAD_INPROC));
	else if (Tss2_TctiLdr_Initialize(conf, &w->ldr) != TSS2_RC_SUCCESS)
		r = -EIO;
	if (r < 0)
		goto err;
	tcti = w->ldr ? w->ldr : tcti_context(w->own);
	if (Esys_Initialize(&w->esys, tcti, NULL) != TSS2_RC_SUCCESS) {
		r = -EIO;
		goto err;
	}

	*ret = w;
	return 0;

err:
	workload_close(w);
	return r;
}

/* Flush what is left, end ESYS and the TCTI.  NULL is a no-op. */
void workload_close(struct workload *w)
{
	if (!w)
		return;
	for (int i = 0; i < WORKLOAD_OPS; i++)
		workload_finish(w, (enum workload_op)i);
	if (w->esys)
		Esys_Finalize(&w->esys);
	if (w->ldr)
		Tss2_TctiLdr_Finalize(&w->ldr);
	tcti_free(w->own);
	engine_stop(w->engine);
	free(w);
}

/* TPM2_Startup(CLEAR), for the in-process TPM.  Returns 0 or -EIO. */
int workload_startup(struct workload *w)
{
	TSS2_RC rc = Esys_Startup(w->esys, TPM2_SU_CLEAR);

	return rc == TSS2_RC_SUCCESS || rc == TPM2_RC_INITIALIZE ? 0 : -EIO;
}

static void template_ak(TPM2B_PUBLIC *pub, bool rsa)
{
	memset(pub, 0, sizeof(*pub));
	pub->publicArea.nameAlg = TPM2_ALG_SHA256;
	pub->publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
		TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
		TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
	if (rsa) {
		TPMS_RSA_PARMS *p = &pub->publicArea.parameters.rsaDetail;

		pub->publicArea.type = TPM2_ALG_RSA;
		p->symmetric.algorithm = TPM2_ALG_NULL;
		p->scheme.scheme = TPM2_ALG_RSASSA;
		p->scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
		p->keyBits = 2048;
	} else {
		TPMS_ECC_PARMS *p = &pub->publicArea.parameters.eccDetail;

		pub->publicArea.type = TPM2_ALG_ECC;
		p->symmetric.algorithm = TPM2_ALG_NULL;
		p->scheme.scheme = TPM2_ALG_ECDSA;
		p->scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
		p->curveID = TPM2_ECC_NIST_P256;
		p->kdf.scheme = TPM2_ALG_NULL;
	}
}

/* An ECC P-256 storage parent, or (leaf) an unrestricted ECC signing key. */
static void template_ecc(TPM2B_PUBLIC *pub, bool leaf)
{
	TPMS_ECC_PARMS *p = &pub->publicArea.parameters.eccDetail;

	memset(pub, 0, sizeof(*pub));
	pub->publicArea.type = TPM2_ALG_ECC;
	pub->publicArea.nameAlg = TPM2_ALG_SHA256;
	pub->publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
		TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH;
	p->curveID = TPM2_ECC_NIST_P256;
	p->kdf.scheme = TPM2_ALG_NULL;
	p->scheme.scheme = TPM2_ALG_NULL;
	if (leaf) {
		pub->publicArea.objectAttributes |= TPMA_OBJECT_SIGN_ENCRYPT;
		p->symmetric.algorithm = TPM2_ALG_NULL;
		return;
	}
	pub->publicArea.objectAttributes |= TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
	p->symmetric.algorithm = TPM2_ALG_AES;
	p->symmetric.keyBits.aes = 128;
	p->symmetric.mode.aes = TPM2_ALG_CFB;
}

static int primary(struct workload *w, const TPM2B_PUBLIC *pub, ESYS_TR *ret)
{
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_DATA outside = { 0 };
	TPML_PCR_SELECTION pcrs = { 0 };
	TSS2_RC rc;

	rc = Esys_CreatePrimary(w->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				ESYS_TR_NONE, &sens, pub, &outside, &pcrs, ret, NULL, NULL, NULL,
				NULL);

	return rc == TSS2_RC_SUCCESS ? 0 : -EIO;
}

/*
 * Create what op needs (an AK, a storage parent) as a transient primary
 * key, kept until workload_finish(), so that the timed runs do only the op.
 * Returns 0 or -EIO.
 */
int workload_prepare(struct workload *w, enum workload_op op)
{
	TPM2B_PUBLIC pub;

	if (op == WORKLOAD_GETRANDOM || w->key[op] != ESYS_TR_NONE)
		return 0;
	if (op == WORKLOAD_CLF)
		template_ecc(&pub, false);
	else
		template_ak(&pub, op == WORKLOAD_QUOTE_RSA);

	return primary(w, &pub, &w->key[op]);
}

/* Flush what workload_prepare() made for op. */
void workload_finish(struct workload *w, enum workload_op op)
{
	if (w->key[op] == ESYS_TR_NONE)
		return;
	(void)Esys_FlushContext(w->esys, w->key[op]);
	w->key[op] = ESYS_TR_NONE;
}

static int quote(struct workload *w, ESYS_TR ak)
{
	TPM2B_DATA nonce = { .size = 16 };
	TPMT_SIG_SCHEME scheme = { .scheme = TPM2_ALG_NULL };
	TPML_PCR_SELECTION sel = {
		.count = 1,
		.pcrSelections = { {
			.hash = TPM2_ALG_SHA256,
			.sizeofSelect = 3,
			.pcrSelect = { 0xff, 0x00, 0x00 },
		} },
	};
	TPM2B_ATTEST *quoted = NULL;
	TPMT_SIGNATURE *sig = NULL;
	TSS2_RC rc;

	rc = Esys_Quote(w->esys, ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &nonce,
			&scheme, &sel, &quoted, &sig);
	Esys_Free(quoted);
	Esys_Free(sig);

	return rc == TSS2_RC_SUCCESS ? 0 : -EIO;
}

static int create_load_flush(struct workload *w, ESYS_TR parent)
{
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_DATA outside = { 0 };
	TPML_PCR_SELECTION pcrs = { 0 };
	TPM2B_PRIVATE *priv = NULL;
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PUBLIC tmpl;
	ESYS_TR h = ESYS_TR_NONE;
	TSS2_RC rc;

	template_ecc(&tmpl, true);
	rc = Esys_Create(w->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
			 &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
	if (rc == TSS2_RC_SUCCESS)
		rc = Esys_Load(w->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			       priv, pub, &h);
	if (rc == TSS2_RC_SUCCESS)
		rc = Esys_FlushContext(w->esys, h);
	Esys_Free(priv);
	Esys_Free(pub);

	return rc == TSS2_RC_SUCCESS ? 0 : -EIO;
}

/*
 * Run op once (after workload_prepare()).  Returns 0, or -EIO when the TPM
 * or the transport failed.
 */
int workload_run(struct workload *w, enum workload_op op)
{
	TPM2B_DIGEST *rnd = NULL;
	TSS2_RC rc;

	switch (op) {
	case WORKLOAD_GETRANDOM:
		rc = Esys_GetRandom(w->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 16, &rnd);
		Esys_Free(rnd);
		return rc == TSS2_RC_SUCCESS ? 0 : -EIO;
	case WORKLOAD_QUOTE_ECC:
	case WORKLOAD_QUOTE_RSA:
		return quote(w, w->key[op]);
	case WORKLOAD_CLF:
		return create_load_flush(w, w->key[op]);
	default:
		return -EINVAL;
	}
}
