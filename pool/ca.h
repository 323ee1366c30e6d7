#pragma once

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <tss2/tss2_tpm2_types.h>

#include "meta.h"

/*
 * The CA side of manufacturing: EK certificates following the TCG EK
 * Credential Profile, signed by the CA given to the instance process, and
 * conversion of TPM public areas to OpenSSL keys.  Worker side only.
 */

struct ca;

/* The TPM identity written into the certificate's subjectAltName. */
struct ca_tpm_info {
	char manufacturer[16];	/* "id:XXXXXXXX" */
	char model[20];		/* the vendor strings */
	char version[16];	/* "id:XXXXXXXX", firmware version 1 */
};

int ca_load(const char *cert_path, const char *key_path, struct ca **ret);
void ca_free(struct ca *ca);
int ca_pkey_from_tpm(const TPMT_PUBLIC *pub, EVP_PKEY **ret);
int ca_spki_der(EVP_PKEY *pkey, uint8_t **ret_der, size_t *ret_len);
int ca_ek_cert_make(struct ca *ca, EVP_PKEY *ek, enum meta_alg alg,
		    const struct ca_tpm_info *info, uint8_t **ret_der, size_t *ret_len);
