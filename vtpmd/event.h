#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meta.h"

/*
 * The re-enrollment event: one JSON object per rotation (and per first
 * activation), written to the outbox and given to every hook.
 */

/* Largest counter value: integers beyond 2^53 - 1 are not portable JSON (RFC 7493). */
#define EVENT_COUNTER_MAX ((UINT64_C(1) << 53) - 1)
/* Largest event text event_rotation_decode() accepts. */
#define EVENT_JSON_MAX (256 * 1024)

struct event_rotation {
	const char *id;		/* unique event id */
	const char *phase;	/* "prepare" or "commit" */
	int64_t time_ms;	/* when the rotation was decided, ms since the epoch */
	const char *reason;	/* "start", "watermark", "exhaustion", "max_quotes", ... */
	const struct meta *old;	/* NULL on the first activation */
	const struct meta *new;
	uint64_t commands;	/* served by the old instance */
	uint64_t quotes;
	uint64_t rotations;	/* rotations so far, this one included */
};

/*
 * A decoded event.  ev points into the rest of the struct (old, new and
 * the strings), so it can be encoded again as is.  The EKs carry no spki
 * (the event has none); the AK's spki is the DER form of ak_pem.
 */
struct event_decoded {
	struct event_rotation ev;
	char *id;		/* owned */
	char *phase;		/* owned */
	char *reason;		/* owned */
	bool has_old;
	struct meta old;	/* buffers owned */
	struct meta new;	/* buffers owned */
};

int event_rotation_encode(const struct event_rotation *e, char **ret_json);
int event_rotation_decode(const char *json, size_t len, struct event_decoded *ret);
void event_decoded_clear(struct event_decoded *d);
int event_ak_pem(const struct meta_key *k, char **ret_pem);
