#include "engine.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <libtpms/tpm_error.h>
#include <libtpms/tpm_library.h>

#include "fileio.h"
#include "internal.h"
#include "nvstore.h"

#define ENGINE_CMD_MAX 4096

struct engine {
	const char *dir;		/* not owned */
	unsigned char *rsp;		/* libtpms' response buffer, grown by it */
	uint32_t rsp_size;
	unsigned char cmd[ENGINE_CMD_MAX];	/* TPMLIB_Process wants a mutable copy */
};

/*
 * Bring up libtpms on the state in dir: the permanent state through the NV
 * callbacks (a fresh TPM is manufactured by libtpms when dir has none) and,
 * when vol is not NULL, the volatile state vol, so that the TPM resumes as
 * it was when that state was saved (TPM2_Startup already done).  With
 * defer_nv, NV changes stay in memory until engine_save_permanent() (see
 * nvstore_defer()).  Returns 0,
 * -ENOMEM, or -EIO when libtpms refuses the state.  *ret is freed with
 * engine_stop().  Instance process only, once per process.
 */
int engine_start(const char *dir, const uint8_t *vol, size_t vol_len, bool defer_nv,
		 struct engine **ret)
{
	struct engine *e;
	int r;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->dir = dir;

	r = -EIO;
	if (TPMLIB_ChooseTPMVersion(TPMLIB_TPM_VERSION_2) != TPM_SUCCESS)
		goto err_free;
	r = nvstore_register(dir);
	if (r < 0)
		goto err_free;
	nvstore_defer(defer_nv);
	r = -EIO;
	if (vol && TPMLIB_SetState(TPMLIB_STATE_VOLATILE, vol, (uint32_t)vol_len) != TPM_SUCCESS)
		goto err_free;
	if (TPMLIB_MainInit() != TPM_SUCCESS)
		goto err_free;

	*ret = e;

	return 0;

err_free:
	free(e);
	return r;
}

/*
 * Run one TPM command at locality; a tcti_transmit_fn over a struct engine.
 * TPM errors are in the response; returns 0, -EINVAL for a command over
 * 4096 bytes, -EMSGSIZE when the response does not fit rsp_size, or -EIO.
 */
int engine_process(void *engine, uint8_t locality, const uint8_t *cmd, size_t len,
		   uint8_t *rsp, size_t rsp_size, size_t *ret_len)
{
	struct engine *e = engine;
	uint32_t rsp_len = 0;

	if (len > sizeof(e->cmd))
		return -EINVAL;
	memcpy(e->cmd, cmd, len);
	nvstore_set_locality(locality);

	if (TPMLIB_Process(&e->rsp, &rsp_len, &e->rsp_size, e->cmd, (uint32_t)len) != TPM_SUCCESS)
		return -EIO;
	if (rsp_len > rsp_size)
		return -EMSGSIZE;
	memcpy(rsp, e->rsp, rsp_len);
	*ret_len = rsp_len;

	return 0;
}

static int engine_save(struct engine *e, enum TPMLIB_StateType st, const char *file)
{
	unsigned char *buf = NULL;
	uint32_t len = 0;
	int r;

	if (TPMLIB_GetState(st, &buf, &len) != TPM_SUCCESS)
		return -EIO;
	r = fileio_write_atomic(e->dir, file, buf, len);
	free(buf);

	return r;
}

/*
 * Store the running TPM's volatile state atomically in dir/volatile, so
 * that a later engine_start() with it resumes here.  Returns 0, -EIO when
 * libtpms cannot produce it, or a file system errno.
 */
int engine_save_volatile(struct engine *e)
{
	return engine_save(e, TPMLIB_STATE_VOLATILE, POOL_FILE_VOLATILE);
}

/*
 * Store the running TPM's permanent state atomically in dir/permall and end
 * deferred NV stores (engine_start() with defer_nv).  Without deferral the
 * NV callbacks already store it on every NV change.  Returns as
 * engine_save_volatile().
 */
int engine_save_permanent(struct engine *e)
{
	int r;

	r = engine_save(e, TPMLIB_STATE_PERMANENT, POOL_FILE_PERM);
	if (r == 0)
		nvstore_defer(false);

	return r;
}

/*
 * Shut libtpms down (TPMLIB_Terminate) and free e.  NULL is a no-op.
 */
void engine_stop(struct engine *e)
{
	if (!e)
		return;

	TPMLIB_Terminate();
	free(e->rsp);
	free(e);
}
