#pragma once

#include <stddef.h>

#include "conf.h"

/*
 * The Keylime hook: turns one phase of a rotation event into the
 * registrar and verifier calls Keylime needs (REST API 2.x), one step at a
 * time, so that a failed delivery is retried from the step that failed.
 *  prepare: remove the agent from the verifier and wait until it is gone;
 *  commit:  remove it from the registrar, restart the agent, wait for its
 *           registration with the new EK, add it to the verifier again,
 *           wait for its first good attestation.
 */

enum keylime_step {
	KEYLIME_VERIFIER_DELETE,	/* prepare */
	KEYLIME_VERIFIER_GONE,
	KEYLIME_PREPARE_DONE,
	KEYLIME_REGISTRAR_DELETE = 0,	/* commit */
	KEYLIME_AGENT_RESTART,
	KEYLIME_REGISTRAR_WAIT,
	KEYLIME_VERIFIER_ADD,
	KEYLIME_VERIFIER_WAIT,
	KEYLIME_COMMIT_DONE,
};

/* Called after each step that succeeded, with the next step, to persist it. */
typedef void (*keylime_progress_fn)(void *userdata, unsigned step);

int keylime_deliver(const struct conf_hook *h, const char *phase, const char *json,
		    unsigned *step, keylime_progress_fn progress, void *userdata,
		    char *err, size_t err_size);
