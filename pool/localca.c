#include "localca.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fsutil.h"

#define LOCALCA_YEARS 20

static int add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);

	return ok ? 0 : -ENOMEM;
}

static int set_name(X509 *x)
{
	X509_NAME *name = X509_get_subject_name(x);
	char host[64] = "localhost";
	char cn[128];

	(void)gethostname(host, sizeof(host) - 1);
	snprintf(cn, sizeof(cn), "vtpmd EK CA %s", host);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"vtpmd",
					-1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn,
					-1, -1, 0) ||
	    !X509_set_issuer_name(x, name))
		return -ENOMEM;

	return 0;
}

static int set_serial(X509 *x)
{
	uint8_t rnd[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EIO;
	rnd[0] &= 0x7f;	/* positive, as RFC 5280 4.1.2.2 asks */
	bn = BN_bin2bn(rnd, sizeof(rnd), NULL);
	if (!bn)
		return -ENOMEM;
	ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);

	return ok ? 0 : -ENOMEM;
}

static X509 *make_cert(EVP_PKEY *key)
{
	X509 *x = X509_new();

	if (!x)
		return NULL;
	if (!X509_set_version(x, X509_VERSION_3) || set_serial(x) < 0 || set_name(x) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)LOCALCA_YEARS * 365 * 86400) ||
	    !X509_set_pubkey(x, key) ||
	    add_ext(x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(x, NID_subject_key_identifier, "hash") < 0 ||
	    !X509_sign(x, key, EVP_sha256())) {
		X509_free(x);
		return NULL;
	}

	return x;
}

static int bio_save(BIO *bio, const char *path, mode_t mode)
{
	char *data;
	long len;

	len = BIO_get_mem_data(bio, &data);
	if (len <= 0)
		return -EIO;

	return fsutil_write_atomic(path, data, (size_t)len, mode);
}

/*
 * Make a new CA: an ECC P-256 key (key_path, PEM PKCS#8, mode 0600) and a
 * self-signed certificate valid for 20 years (cert_path, PEM, 0644), the
 * key written first.  Returns 0 or a negative errno.  Main thread, first
 * start.
 */
int localca_create(const char *cert_path, const char *key_path)
{
	EVP_PKEY *key;
	X509 *x = NULL;
	BIO *kb = BIO_new(BIO_s_mem());
	BIO *cb = BIO_new(BIO_s_mem());
	int r = -ENOMEM;

	key = EVP_EC_gen("P-256");
	if (!key || !kb || !cb)
		goto out;
	x = make_cert(key);
	if (!x)
		goto out;
	if (!PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cb, x))
		goto out;
	r = bio_save(kb, key_path, 0600);
	if (r == 0)
		r = bio_save(cb, cert_path, 0644);
out:
	X509_free(x);
	EVP_PKEY_free(key);
	BIO_free(kb);
	BIO_free(cb);
	return r;
}
