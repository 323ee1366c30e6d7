#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What manufacturing leaves beside an instance's libtpms state, in the file
 * "meta" of the instance directory: one "key=value" line each, values
 * without spaces (hex or base64).  This is the identity a verifier must
 * learn after a rotation.
 */

#define META_ID_MAX 64
#define META_MAX_EKS 2

enum meta_alg {
	META_ALG_NONE = 0,
	META_ALG_RSA2048,
	META_ALG_ECC_P256,
};

struct meta_key {
	enum meta_alg alg;
	uint32_t handle;	/* persistent handle, 0x81xxxxxx */
	uint8_t *tpm;		/* TPM2B_PUBLIC wire form (with its size field) */
	size_t tpm_len;
	uint8_t *name;		/* TPM name: nameAlg (2 bytes) + digest */
	size_t name_len;
	uint8_t *spki;		/* DER SubjectPublicKeyInfo */
	size_t spki_len;
	uint8_t *cert;		/* EK certificate, DER; NULL for the AK */
	size_t cert_len;
	uint32_t cert_nv;	/* NV index holding the certificate; 0 for the AK */
};

struct meta {
	char id[META_ID_MAX];
	int64_t created;	/* seconds since the epoch */
	struct meta_key ek[META_MAX_EKS];
	size_t n_ek;
	struct meta_key ak;	/* ak.alg == META_ALG_NONE: no AK */
};

const char *meta_alg_name(enum meta_alg alg);
int meta_alg_parse(const char *s, enum meta_alg *ret);
bool meta_id_is_valid(const char *s);
int meta_save(const struct meta *m, const char *path);
int meta_load(const char *path, struct meta *ret);
void meta_clear(struct meta *m);
int meta_copy(const struct meta *src, struct meta *ret);
