#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inst.h"
#include "meta.h"

/*
 * The pool of ready instances.  Under <state_dir>/instances each instance
 * is a directory named by its id; "<id>.tmp" is one being manufactured
 * (discarded at start), and an instance that was ever activated carries the
 * marker file "activated", so it is never handed out again.  One ready
 * instance is kept loaded in a live process (the warm spare), so taking it
 * is a pointer switch.  Refill runs in the background, in parallel up to
 * the configured number of workers.
 */

struct pool;

typedef void (*pool_log_fn)(int prio, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

struct pool_config {
	const char *state_dir;
	const char *helper;	/* path of vtpmd-instance */
	unsigned size;		/* ready instances to keep */
	unsigned workers;	/* parallel manufacturing jobs, >= 1 */
	uint64_t grace_ms;	/* how long a retired instance is kept */
	struct inst_manufacture_params params;
	struct inst_log inst_log;	/* where instance processes log */
	pool_log_fn log;
};

int pool_new(const struct pool_config *c, struct pool **ret);
void pool_free(struct pool *p);
void pool_set_size(struct pool *p, unsigned size);
void pool_set_inst_log(struct pool *p, const struct inst_log *log);
unsigned pool_ready_count(struct pool *p);
unsigned pool_size(struct pool *p);
int pool_take(struct pool *p, uint64_t timeout_ms, struct inst **ret_inst,
	      struct meta *ret_meta);
int pool_mark_activated(struct pool *p, const char *id);
int pool_resume(struct pool *p, const char *id, struct inst **ret_inst,
		struct meta *ret_meta);
int pool_active_load(struct pool *p, char *ret_id, size_t size);
int pool_retire(struct pool *p, const char *id);
