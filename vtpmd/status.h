#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meta.h"
#include "mux.h"
#include "outbox.h"

/* The JSON of the read-only status file. */

struct status_info {
	struct mux_stats stats;
	const struct meta *active;
	unsigned pool_ready;
	unsigned pool_size;
	uint64_t events_failed;
	bool rotation_pending;
	struct outbox_stats outbox;
};

int status_encode(const struct status_info *info, char **ret_json);
