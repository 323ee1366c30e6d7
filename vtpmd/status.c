#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static json_object *hex_or_null(const uint8_t *buf, size_t len)
{
	json_object *o;
	char *s;
	size_t i;

	if (!buf || len == 0)
		return NULL;
	s = malloc(2 * len + 1);
	if (!s)
		return NULL;
	for (i = 0; i < len; i++)
		sprintf(s + 2 * i, "%02x", buf[i]);
	o = json_object_new_string(s);
	free(s);

	return o;
}

static json_object *identity(const struct meta *m)
{
	json_object *o = json_object_new_object();
	json_object *eks = json_object_new_array();
	char h[16];
	size_t i;

	json_object_object_add(o, "instance", json_object_new_string(m->id));
	for (i = 0; i < m->n_ek; i++) {
		json_object *ek = json_object_new_object();

		json_object_object_add(ek, "alg", json_object_new_string(meta_alg_name(m->ek[i].alg)));
		snprintf(h, sizeof(h), "0x%08x", m->ek[i].handle);
		json_object_object_add(ek, "handle", json_object_new_string(h));
		json_object_object_add(ek, "name", hex_or_null(m->ek[i].name, m->ek[i].name_len));
		json_object_array_add(eks, ek);
	}
	json_object_object_add(o, "eks", eks);
	json_object_object_add(o, "ek_name", m->n_ek ? hex_or_null(m->ek[0].name, m->ek[0].name_len) : NULL);
	json_object_object_add(o, "ak_name", hex_or_null(m->ak.name, m->ak.name_len));
	if (m->ak.alg != META_ALG_NONE) {
		snprintf(h, sizeof(h), "0x%08x", m->ak.handle);
		json_object_object_add(o, "ak_handle", json_object_new_string(h));
	} else {
		json_object_object_add(o, "ak_handle", NULL);
	}

	return o;
}

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

static void add_str(json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, json_object_new_string(v));
}

/* Pending and failed deliveries: counts, the oldest's age, the first few. */
static json_object *outbox_json(const struct outbox_stats *s)
{
	json_object *o = json_object_new_object();
	json_object *a = json_object_new_array();
	size_t i;

	add_u64(o, "pending", s->pending);
	add_u64(o, "failed", s->failed);
	json_object_object_add(o, "oldest_pending_s",
			       json_object_new_double((double)s->oldest_pending_ms / 1000.0));
	for (i = 0; a && i < s->n_items; i++) {
		const struct outbox_item *it = &s->items[i];
		json_object *d = json_object_new_object();

		add_str(d, "hook", it->hook);
		add_str(d, "id", it->id);
		add_str(d, "phase", it->phase);
		add_str(d, "state", it->state);
		add_u64(d, "attempts", it->attempts);
		add_u64(d, "step", it->step);
		add_str(d, "error", it->err);
		json_object_array_add(a, d);
	}
	json_object_object_add(o, "deliveries", a);

	return o;
}

/*
 * The status file: active instance and its identity names, counters,
 * the pool, the outbox's pending and failed deliveries.  One JSON object
 * and a newline, malloc'd into *ret_json.  Returns 0 or -ENOMEM.
 */
int status_encode(const struct status_info *info, char **ret_json)
{
	const struct mux_stats *s = &info->stats;
	json_object *o = json_object_new_object();
	json_object *pool = json_object_new_object();
	json_object *slots = json_object_new_object();
	const char *text;
	int r = 0;

	if (!o || !pool || !slots) {
		r = -ENOMEM;
		goto out;
	}
	json_object_object_add(o, "active", info->active ? identity(info->active) : NULL);
	add_u64(o, "commands", s->commands);
	add_u64(o, "quotes", s->quotes);
	add_u64(o, "active_commands", s->inst_commands);
	add_u64(o, "active_quotes", s->inst_quotes);
	add_u64(o, "rotations", s->rotations);
	add_u64(o, "replays", s->replays);
	json_object_object_add(o, "last_pause_us", json_object_new_double((double)s->last_pause_ns / 1000.0));
	json_object_object_add(o, "rotation_pending", json_object_new_boolean(info->rotation_pending));
	add_u64(o, "events_failed", info->events_failed);
	json_object_object_add(o, "outbox", outbox_json(&info->outbox));
	json_object_object_add(slots, "sessions_avail", json_object_new_int64(s->sessions_avail));
	json_object_object_add(slots, "transient_avail", json_object_new_int64(s->transient_avail));
	json_object_object_add(slots, "lockout_counter", json_object_new_int64(s->lockout_counter));
	json_object_object_add(o, "last_probe", slots);
	slots = NULL;
	add_u64(pool, "ready", info->pool_ready);
	add_u64(pool, "size", info->pool_size);
	json_object_object_add(o, "pool", pool);
	pool = NULL;
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	if (!text || asprintf(ret_json, "%s\n", text) < 0)
		r = -ENOMEM;
out:
	json_object_put(slots);
	json_object_put(pool);
	json_object_put(o);
	return r;
}
