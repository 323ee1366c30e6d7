#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/*
 * The durable outbox: every phase of every rotation event is recorded in
 * <state_dir>/outbox before any hook sees it, with one delivery per hook
 * that owns it, and leaves only when all of them succeeded.  A thread of
 * its own delivers, per hook in the order the events were recorded, with
 * bounded retries and exponential back-off with jitter; deliveries left
 * pending by a crash or a stop resume at the next start.
 */

#define OUTBOX_ITEMS_MAX 16	/* deliveries listed in the status file */
#define OUTBOX_ERR_MAX 160

struct outbox;

struct outbox_item {
	char hook[40];
	char id[40];
	char phase[8];
	const char *state;	/* "pending", "failed" (static strings) */
	unsigned attempts;
	unsigned step;
	char err[OUTBOX_ERR_MAX];
};

struct outbox_stats {
	unsigned pending;	/* deliveries, not events */
	unsigned failed;
	uint64_t oldest_pending_ms;	/* age of the oldest event with a pending delivery */
	size_t n_items;
	struct outbox_item items[OUTBOX_ITEMS_MAX];
};

int outbox_new(const char *state_dir, const struct conf *c, struct outbox **ret);
int outbox_start(struct outbox *o);
void outbox_free(struct outbox *o);
int outbox_put(struct outbox *o, const char *id, const char *phase, const char *new_inst,
	       bool held, const char *json, uint64_t *ret_seq);
void outbox_release(struct outbox *o, uint64_t seq);
void outbox_drop(struct outbox *o, uint64_t seq);
int outbox_resolve_held(struct outbox *o, const char *active);
int outbox_wait(struct outbox *o, uint64_t seq, uint64_t max_ms);
void outbox_set_conf(struct outbox *o, const struct conf *c);
void outbox_stats_get(struct outbox *o, struct outbox_stats *ret);
