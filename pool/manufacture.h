#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "meta.h"

/*
 * Manufacturing of one TPM in the instance process: EKs and their
 * certificates, the AK, the platform hierarchy locked, state saved.
 * Worker side only.
 */

struct manufacture_opts {
	const char *dir;
	const char *id;
	bool ek_rsa;
	bool ek_ecc;
	enum meta_alg ak_alg;
	uint32_t ak_handle;
	const char *ca_cert;
	const char *ca_key;
};

int manufacture_run(const struct manufacture_opts *o);
int manufacture_startup(struct engine *e, uint32_t *ret_rc);
int manufacture_self_test(struct engine *e, uint32_t *ret_rc);
