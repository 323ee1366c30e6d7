#include "ca.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* OIDs of the TCG EK Credential Profile for TPM Family 2.0. */
#define CA_OID_TPM_MANUFACTURER "2.23.133.2.1"
#define CA_OID_TPM_MODEL "2.23.133.2.2"
#define CA_OID_TPM_VERSION "2.23.133.2.3"
#define CA_OID_KP_EK_CERTIFICATE "2.23.133.8.1"

/* X.509 keyUsage bits (RFC 5280, 4.2.1.3). */
#define CA_KU_KEY_ENCIPHERMENT 2
#define CA_KU_KEY_AGREEMENT 4

#define CA_SERIAL_LEN 16

struct ca {
	X509 *cert;
	EVP_PKEY *key;
};

static int ca_read_pem(const char *path, X509 **ret_cert, EVP_PKEY **ret_key)
{
	FILE *f;
	int r = 0;

	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (ret_cert)
		*ret_cert = PEM_read_X509(f, NULL, NULL, NULL);
	else
		*ret_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	if (ret_cert ? !*ret_cert : !*ret_key)
		r = -EINVAL;
	(void)fclose(f);

	return r;
}

/*
 * Load the CA certificate and private key (PEM files) and check that they
 * belong together.  Returns 0, the errno of fopen() when a file cannot be
 * opened, -EINVAL when one does not parse or they do not match, or -ENOMEM.
 */
int ca_load(const char *cert_path, const char *key_path, struct ca **ret)
{
	struct ca *ca;
	int r;

	ca = calloc(1, sizeof(*ca));
	if (!ca)
		return -ENOMEM;

	r = ca_read_pem(cert_path, &ca->cert, NULL);
	if (r < 0)
		goto err_free;
	r = ca_read_pem(key_path, NULL, &ca->key);
	if (r < 0)
		goto err_free;
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		r = -EINVAL;
		goto err_free;
	}

	*ret = ca;

	return 0;

err_free:
	ca_free(ca);
	return r;
}

/*
 * Free a CA loaded by ca_load().  NULL is a no-op.
 */
void ca_free(struct ca *ca)
{
	if (!ca)
		return;

	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca);
}

static int ca_pkey_from_params(const char *type, OSSL_PARAM_BLD *bld, EVP_PKEY **ret)
{
	EVP_PKEY_CTX *ctx = NULL;
	OSSL_PARAM *params;
	EVP_PKEY *pkey = NULL;
	int r = -EINVAL;

	params = OSSL_PARAM_BLD_to_param(bld);
	if (!params)
		return -ENOMEM;

	ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1) {
		*ret = pkey;
		r = 0;
	}
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);

	return r;
}

static int ca_pkey_rsa(const TPMT_PUBLIC *pub, EVP_PKEY **ret)
{
	const TPM2B_PUBLIC_KEY_RSA *n = &pub->unique.rsa;
	uint32_t exp = pub->parameters.rsaDetail.exponent;
	OSSL_PARAM_BLD *bld;
	BIGNUM *bn_n;
	BIGNUM *bn_e;
	int r = -ENOMEM;

	/* An exponent of zero means the default, 2^16 + 1 (Part 2, 12.2.3.5). */
	if (exp == 0)
		exp = 65537;

	bld = OSSL_PARAM_BLD_new();
	bn_n = BN_bin2bn(n->buffer, n->size, NULL);
	bn_e = BN_new();
	if (bld && bn_n && bn_e && BN_set_word(bn_e, exp) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) == 1)
		r = ca_pkey_from_params("RSA", bld, ret);
	BN_free(bn_e);
	BN_free(bn_n);
	OSSL_PARAM_BLD_free(bld);

	return r;
}

static int ca_pkey_ecc(const TPMT_PUBLIC *pub, EVP_PKEY **ret)
{
	const TPMS_ECC_POINT *pt = &pub->unique.ecc;
	uint8_t point[1 + 2 * 32] = { 0x04 };	/* uncompressed point, SEC 1 2.3.3 */
	OSSL_PARAM_BLD *bld;
	int r = -ENOMEM;

	if (pub->parameters.eccDetail.curveID != TPM2_ECC_NIST_P256 ||
	    pt->x.size > 32 || pt->y.size > 32)
		return -EINVAL;
	memcpy(point + 1 + 32 - pt->x.size, pt->x.buffer, pt->x.size);
	memcpy(point + 1 + 64 - pt->y.size, pt->y.buffer, pt->y.size);

	bld = OSSL_PARAM_BLD_new();
	if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
						   "prime256v1", 0) == 1 &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
					     sizeof(point)) == 1)
		r = ca_pkey_from_params("EC", bld, ret);
	OSSL_PARAM_BLD_free(bld);

	return r;
}

/*
 * Make an OpenSSL public key from a TPM public area (RSA, or ECC NIST
 * P-256).  Returns 0, -EINVAL for another key type or a bad key, or -ENOMEM.
 * The caller frees *ret with EVP_PKEY_free().
 */
int ca_pkey_from_tpm(const TPMT_PUBLIC *pub, EVP_PKEY **ret)
{
	switch (pub->type) {
	case TPM2_ALG_RSA:
		return ca_pkey_rsa(pub, ret);
	case TPM2_ALG_ECC:
		return ca_pkey_ecc(pub, ret);
	default:
		return -EINVAL;
	}
}

/*
 * The DER SubjectPublicKeyInfo of pkey, in a new buffer the caller frees
 * with free().  Returns 0, -EINVAL or -ENOMEM.
 */
int ca_spki_der(EVP_PKEY *pkey, uint8_t **ret_der, size_t *ret_len)
{
	unsigned char *der = NULL;
	uint8_t *copy;
	int len;

	len = i2d_PUBKEY(pkey, &der);
	if (len <= 0)
		return -EINVAL;
	copy = malloc((size_t)len);
	if (copy)
		memcpy(copy, der, (size_t)len);
	OPENSSL_free(der);
	if (!copy)
		return -ENOMEM;

	*ret_der = copy;
	*ret_len = (size_t)len;

	return 0;
}

static int ca_set_serial(X509 *x)
{
	uint8_t buf[CA_SERIAL_LEN];
	ASN1_INTEGER *serial;
	BIGNUM *bn;
	int r = -ENOMEM;

	/* Positive and at most 20 octets (RFC 5280, 4.1.2.2); never zero. */
	if (RAND_bytes(buf, sizeof(buf)) != 1)
		return -EIO;
	buf[0] = (buf[0] & 0x7f) | 0x40;

	bn = BN_bin2bn(buf, sizeof(buf), NULL);
	serial = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	if (serial && X509_set_serialNumber(x, serial) == 1)
		r = 0;
	ASN1_INTEGER_free(serial);
	BN_free(bn);

	return r;
}

static int ca_name_add(X509_NAME *dn, const char *oid, const char *value)
{
	ASN1_OBJECT *obj;
	int ok;

	obj = OBJ_txt2obj(oid, 1);
	if (!obj)
		return -ENOMEM;
	ok = X509_NAME_add_entry_by_OBJ(dn, obj, V_ASN1_UTF8STRING, (const unsigned char *)value,
					-1, -1, 0);
	ASN1_OBJECT_free(obj);

	return ok == 1 ? 0 : -ENOMEM;
}

/*
 * The subjectAltName of an EK certificate: one directoryName with the TPM
 * manufacturer, model and version attributes, critical because the subject
 * is empty (RFC 5280, 4.2.1.6).
 */
static int ca_add_san(X509 *x, const struct ca_tpm_info *info)
{
	GENERAL_NAMES *gens;
	GENERAL_NAME *gn;
	X509_NAME *dn;
	int r = -ENOMEM;

	gens = sk_GENERAL_NAME_new_null();
	gn = GENERAL_NAME_new();
	dn = X509_NAME_new();
	if (!gens || !gn || !dn)
		goto out_free;
	if (ca_name_add(dn, CA_OID_TPM_MANUFACTURER, info->manufacturer) < 0 ||
	    ca_name_add(dn, CA_OID_TPM_MODEL, info->model) < 0 ||
	    ca_name_add(dn, CA_OID_TPM_VERSION, info->version) < 0)
		goto out_free;
	GENERAL_NAME_set0_value(gn, GEN_DIRNAME, dn);
	dn = NULL;
	if (sk_GENERAL_NAME_push(gens, gn) <= 0)
		goto out_free;
	gn = NULL;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 1, X509V3_ADD_DEFAULT) == 1)
		r = 0;

out_free:
	X509_NAME_free(dn);
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(gens);
	return r;
}

static int ca_add_usage(X509 *x, enum meta_alg alg)
{
	BASIC_CONSTRAINTS *bc;
	ASN1_BIT_STRING *ku;
	EXTENDED_KEY_USAGE *eku;
	ASN1_OBJECT *kp;
	int bit = alg == META_ALG_RSA2048 ? CA_KU_KEY_ENCIPHERMENT : CA_KU_KEY_AGREEMENT;
	int r = -ENOMEM;

	bc = BASIC_CONSTRAINTS_new();
	ku = ASN1_BIT_STRING_new();
	eku = sk_ASN1_OBJECT_new_null();
	kp = OBJ_txt2obj(CA_OID_KP_EK_CERTIFICATE, 1);
	if (!bc || !ku || !eku || !kp || sk_ASN1_OBJECT_push(eku, kp) <= 0)
		goto out_free;
	kp = NULL;

	/* bc->ca stays FALSE, which DER encodes as an empty SEQUENCE. */
	if (ASN1_BIT_STRING_set_bit(ku, bit, 1) == 1 &&
	    X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) == 1 &&
	    X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) == 1 &&
	    X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) == 1)
		r = 0;

out_free:
	ASN1_OBJECT_free(kp);
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	ASN1_BIT_STRING_free(ku);
	BASIC_CONSTRAINTS_free(bc);
	return r;
}

/*
 * authorityKeyIdentifier: the CA's subjectKeyIdentifier, or when it has none
 * the SHA-1 of its public key (RFC 5280, 4.2.1.2, method 1).
 */
static int ca_add_akid(X509 *x, X509 *issuer)
{
	const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(issuer);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	AUTHORITY_KEYID *akid;
	int r = -ENOMEM;

	akid = AUTHORITY_KEYID_new();
	if (!akid)
		return -ENOMEM;
	if (skid) {
		akid->keyid = ASN1_OCTET_STRING_dup(skid);
	} else if (X509_pubkey_digest(issuer, EVP_sha1(), md, &md_len) == 1) {
		akid->keyid = ASN1_OCTET_STRING_new();
		if (akid->keyid && ASN1_OCTET_STRING_set(akid->keyid, md, (int)md_len) != 1) {
			ASN1_OCTET_STRING_free(akid->keyid);
			akid->keyid = NULL;
		}
	}
	if (akid->keyid && X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0,
					     X509V3_ADD_DEFAULT) == 1)
		r = 0;
	AUTHORITY_KEYID_free(akid);

	return r;
}

static int ca_cert_fill(struct ca *ca, X509 *x, EVP_PKEY *ek)
{
	X509_NAME *empty;
	int r;

	r = ca_set_serial(x);
	if (r < 0)
		return r;

	/* The EK Credential Profile wants an empty subject. */
	empty = X509_NAME_new();
	if (!empty)
		return -ENOMEM;
	r = X509_set_subject_name(x, empty) == 1 ? 0 : -ENOMEM;
	X509_NAME_free(empty);
	if (r < 0)
		return r;

	/* No well-defined expiry (RFC 5280, 4.1.2.5): 99991231235959Z. */
	if (X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    ASN1_TIME_set_string_X509(X509_getm_notAfter(x), "99991231235959Z") != 1 ||
	    X509_set_pubkey(x, ek) != 1)
		return -ENOMEM;

	return 0;
}

/*
 * Make the DER EK certificate for ek, signed by ca with SHA-256, following
 * the TCG EK Credential Profile for TPM Family 2.0: X.509 v3, random
 * positive serial, empty subject with a critical subjectAltName naming the
 * TPM, basicConstraints CA:FALSE and keyUsage (keyEncipherment for RSA,
 * keyAgreement for ECC) both critical, extendedKeyUsage tcg-kp-EKCertificate,
 * authorityKeyIdentifier.  Returns 0, -EIO when signing fails, or -ENOMEM.
 * The caller frees *ret_der with free().  Instance process.
 */
int ca_ek_cert_make(struct ca *ca, EVP_PKEY *ek, enum meta_alg alg,
		    const struct ca_tpm_info *info, uint8_t **ret_der, size_t *ret_len)
{
	unsigned char *der = NULL;
	uint8_t *copy = NULL;
	X509 *x;
	int len;
	int r;

	x = X509_new();
	if (!x)
		return -ENOMEM;

	r = ca_cert_fill(ca, x, ek);
	if (r == 0)
		r = ca_add_san(x, info);
	if (r == 0)
		r = ca_add_usage(x, alg);
	if (r == 0)
		r = ca_add_akid(x, ca->cert);
	if (r < 0)
		goto out_free;

	r = -EIO;
	if (X509_sign(x, ca->key, EVP_sha256()) <= 0)
		goto out_free;
	len = i2d_X509(x, &der);
	if (len <= 0)
		goto out_free;
	copy = malloc((size_t)len);
	r = -ENOMEM;
	if (!copy)
		goto out_free;
	memcpy(copy, der, (size_t)len);
	*ret_der = copy;
	*ret_len = (size_t)len;
	r = 0;

out_free:
	OPENSSL_free(der);
	X509_free(x);
	return r;
}
