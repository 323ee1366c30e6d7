#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The libtpms TPM 2.0 of the instance process (libtpms keeps one TPM per
 * process, so there is at most one struct engine).  Worker side only.
 */

struct engine;

int engine_start(const char *dir, const uint8_t *vol, size_t vol_len, bool defer_nv,
		 struct engine **ret);
int engine_process(void *engine, uint8_t locality, const uint8_t *cmd, size_t len,
		   uint8_t *rsp, size_t rsp_size, size_t *ret_len);
int engine_save_volatile(struct engine *e);
int engine_save_permanent(struct engine *e);
void engine_stop(struct engine *e);
