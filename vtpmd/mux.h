#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "fusedev.h"
#include "inst.h"
#include "meta.h"

/*
 * The multiplexer: one thread that serialises the commands of every open
 * device file onto the active instance, one command in the instance at a
 * time, and watches each answer for the rotation policy (exhaustion codes,
 * counters, health probes between commands).
 */

struct mux;

struct mux_stats {
	char active[META_ID_MAX];
	uint64_t commands;		/* since the daemon started */
	uint64_t quotes;
	uint64_t inst_commands;		/* on the active instance */
	uint64_t inst_quotes;
	uint64_t rotations;
	uint64_t replays;		/* commands replayed after an exhaustion swap */
	uint64_t last_pause_ns;
	uint64_t active_since_ms;	/* CLOCK_MONOTONIC */
	int64_t sessions_avail;		/* last probe, -1 before the first */
	int64_t transient_avail;
	int64_t lockout_counter;
};

/* What the mux asks of the rotation logic (vtpmd/rotate.c). */
struct mux_rotator {
	void *userdata;
	/* Ask for a rotation; the rotator calls mux_swap() when it is ready. */
	void (*request)(void *userdata, const char *reason);
	/*
	 * The active instance is exhausted: hand over a fresh, activated
	 * instance now, on the mux thread.  Returns 0 or a negative errno.
	 */
	int (*take_now)(void *userdata, const char *reason, struct inst **ret_inst,
			struct meta *ret_meta);
	/* After such an urgent swap: the rotator owns old and old_meta now. */
	void (*swapped)(void *userdata, const char *reason, struct inst *old,
			struct meta *old_meta, uint64_t pause_ns);
};

int mux_new(const struct conf *c, const struct mux_rotator *rot, struct mux **ret);
int mux_start(struct mux *m, struct inst *active, struct meta *meta);
void mux_stop(struct mux *m);
void mux_free(struct mux *m, struct inst **ret_active, struct meta *ret_meta);
int mux_submit(struct mux *m, struct fusedev_file *f, const uint8_t *cmd, size_t len);
int mux_client_open(struct mux *m, struct fusedev_file *f);
void mux_client_close(struct mux *m, struct fusedev_file *f);
int mux_swap(struct mux *m, struct inst *next, struct meta *next_meta,
	     struct inst **ret_old, struct meta *ret_old_meta, uint64_t *ret_pause_ns);
void mux_set_policy(struct mux *m, const struct conf *c);
void mux_stats_get(struct mux *m, struct mux_stats *ret);
int mux_active_meta_copy(struct mux *m, struct meta *ret);
