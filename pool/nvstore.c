#include "nvstore.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libtpms/tpm_error.h>
#include <libtpms/tpm_library.h>
#include <libtpms/tpm_memory.h>
#include <libtpms/tpm_nvfilename.h>

#include "fileio.h"
#include "ilog.h"
#include "internal.h"

/* Largest state blob libtpms may hand us or load back. */
#define NVSTORE_BLOB_MAX (1024 * 1024)

/*
 * libtpms' callbacks carry no context pointer (its TPM is process-global),
 * so the directory and locality they use are the only file-scope state of
 * the instance process outside its main.  Set once by nvstore_register().
 */
static const char *nvstore_dir;
static uint8_t nvstore_locality;
static bool nvstore_deferred;		/* keep stores in memory, see nvstore_defer() */
static uint8_t *nvstore_pending;	/* latest permanent state while deferred */
static size_t nvstore_pending_len;

/*
 * Only the permanent state goes through the callbacks: the volatile state
 * is saved and loaded by the worker itself (TPMLIB_GetState/SetState), so
 * that loading it is always an explicit decision.
 */
static const char *nvstore_file(const char *name)
{
	if (strcmp(name, TPM_PERMANENT_ALL_NAME) == 0)
		return POOL_FILE_PERM;

	return NULL;
}

static TPM_RESULT nvstore_init(void)
{
	return TPM_SUCCESS;
}

static TPM_RESULT nvstore_loaddata(unsigned char **data, uint32_t *length,
				   uint32_t tpm_number, const char *name)
{
	const char *file = nvstore_file(name);
	uint8_t *buf;
	size_t len;
	int r;

	/* TPM_RETRY tells libtpms that the blob does not exist. */
	if (!file)
		return TPM_RETRY;
	if (nvstore_pending) {
		*data = malloc(nvstore_pending_len);
		if (!*data)
			return TPM_FAIL;
		memcpy(*data, nvstore_pending, nvstore_pending_len);
		*length = (uint32_t)nvstore_pending_len;
		return TPM_SUCCESS;
	}
	r = fileio_read(nvstore_dir, file, NVSTORE_BLOB_MAX, &buf, &len);
	if (r == -ENOENT)
		return TPM_RETRY;
	if (r < 0) {
		ilog(LOG_ERR, "nv load failed path=%s err=\"%s\"", file, strerror(-r));
		return TPM_FAIL;
	}

	*data = buf;
	*length = (uint32_t)len;

	return TPM_SUCCESS;
}

static TPM_RESULT nvstore_storedata(const unsigned char *data, uint32_t length,
				    uint32_t tpm_number, const char *name)
{
	const char *file = nvstore_file(name);
	int r;

	if (!file)
		return TPM_FAIL;
	if (nvstore_deferred) {
		uint8_t *copy = malloc(length ? length : 1);

		if (!copy)
			return TPM_FAIL;
		memcpy(copy, data, length);
		free(nvstore_pending);
		nvstore_pending = copy;
		nvstore_pending_len = length;
		return TPM_SUCCESS;
	}
	r = fileio_write_atomic(nvstore_dir, file, data, length);
	if (r < 0) {
		ilog(LOG_ERR, "nv store failed path=%s err=\"%s\"", file, strerror(-r));
		return TPM_FAIL;
	}

	return TPM_SUCCESS;
}

static TPM_RESULT nvstore_deletename(uint32_t tpm_number, const char *name, TPM_BOOL must_exist)
{
	const char *file = nvstore_file(name);

	if (!file)
		return must_exist ? TPM_FAIL : TPM_SUCCESS;
	if (fileio_unlink(nvstore_dir, file) < 0)
		return TPM_FAIL;

	return TPM_SUCCESS;
}

static TPM_RESULT nvstore_io_init(void)
{
	return TPM_SUCCESS;
}

static TPM_RESULT nvstore_getlocality(TPM_MODIFIER_INDICATOR *locality, uint32_t tpm_number)
{
	*locality = nvstore_locality;

	return TPM_SUCCESS;
}

static TPM_RESULT nvstore_getphysicalpresence(TPM_BOOL *pp, uint32_t tpm_number)
{
	*pp = 0;

	return TPM_SUCCESS;
}

/*
 * Register the callbacks that keep libtpms' permanent state in dir/permall,
 * written atomically on every NV change.  dir must outlive the process's use
 * of libtpms.  Call after TPMLIB_ChooseTPMVersion() and before
 * TPMLIB_MainInit().  Returns 0 or -EIO.  Instance process only.
 */
int nvstore_register(const char *dir)
{
	struct libtpms_callbacks cbs = {
		.sizeOfStruct = sizeof(cbs),
		.tpm_nvram_init = nvstore_init,
		.tpm_nvram_loaddata = nvstore_loaddata,
		.tpm_nvram_storedata = nvstore_storedata,
		.tpm_nvram_deletename = nvstore_deletename,
		.tpm_io_init = nvstore_io_init,
		.tpm_io_getlocality = nvstore_getlocality,
		.tpm_io_getphysicalpresence = nvstore_getphysicalpresence,
	};

	nvstore_dir = dir;
	if (TPMLIB_RegisterCallbacks(&cbs) != TPM_SUCCESS)
		return -EIO;

	return 0;
}

/*
 * Set the locality that the next TPMLIB_Process() runs at.  Instance
 * process only.
 */
void nvstore_set_locality(uint8_t locality)
{
	nvstore_locality = locality;
}

/*
 * While on, NV stores are kept in memory instead of being written (and
 * fsynced) on every change: manufacturing makes a dozen NV changes and saves
 * the whole state once at the end, and a crash in between leaves nothing
 * worth keeping.  Turning it off drops what was kept without writing it:
 * the caller stores the state itself (engine_save_permanent()).  Instance
 * process only.
 */
void nvstore_defer(bool on)
{
	nvstore_deferred = on;
	if (on)
		return;

	free(nvstore_pending);
	nvstore_pending = NULL;
	nvstore_pending_len = 0;
}
