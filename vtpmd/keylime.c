#include "keylime.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "hook.h"
#include "log.h"
#include "util.h"
#include "webhook.h"

#define KEYLIME_POLL_MS 250
#define KEYLIME_URL_MAX 2600		/* a base URL, the version and a uuid */
#define KEYLIME_STATE_GET_QUOTE 3	/* operational_state "Get Quote" */

/* One delivery: the hook, the event and where the answers go. */
struct keylime_run {
	const struct conf_hook *h;
	const char *phase;
	const char *json;
	const char *ek_tpm;		/* the new EK, from the event */
	char *err;
	size_t err_size;
};

static const char *const prepare_names[] = { "verifier-delete", "verifier-gone" };
static const char *const commit_names[] = { "registrar-delete", "agent-restart",
					    "registrar-wait", "verifier-add", "verifier-wait" };

static uint64_t now_ms(void)
{
	return util_now_ns(CLOCK_MONOTONIC) / 1000000;
}

static void agent_url(const struct keylime_run *k, const char *base, char *buf, size_t size)
{
	snprintf(buf, size, "%s/v%s/agents/%s", base, k->h->api_version, k->h->agent_uuid);
}

/*
 * One call; *ret_results is the "results" object of a JSON answer (or
 * NULL when the answer has none), owned by the caller.  Returns 0 with
 * *ret_status, or a negative errno with k->err set.
 */
static int call(struct keylime_run *k, const char *method, const char *url, const char *body,
		long *ret_status, json_object **ret_results)
{
	struct webhook_reply reply;
	json_object *o = NULL;
	json_object *res = NULL;
	int r;

	r = webhook_request(k->h, method, url, body, &reply);
	if (r < 0) {
		snprintf(k->err, k->err_size, "%s %s: %s", method, url, reply.err);
		webhook_reply_clear(&reply);
		return r;
	}
	if (ret_results && reply.body && reply.status == 200) {
		o = json_tokener_parse(reply.body);
		if (!json_object_is_type(o, json_type_object) ||
		    !json_object_object_get_ex(o, "results", &res) ||
		    !json_object_is_type(res, json_type_object)) {
			json_object_put(o);
			webhook_reply_clear(&reply);
			snprintf(k->err, k->err_size, "%s: answer is not a Keylime JSON object", method);
			return -EBADMSG;
		}
		*ret_results = json_object_get(res);
		json_object_put(o);
	} else if (ret_results) {
		*ret_results = NULL;
	}
	webhook_reply_clear(&reply);
	*ret_status = reply.status;

	return 0;
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int unexpected(struct keylime_run *k, const char *what, long status)
{
	snprintf(k->err, k->err_size, "%s: unexpected HTTP status %ld", what, status);
	return -EBADMSG;
}

/* DELETE {base}/agents/{uuid}: 200, 202 (being removed) and 404 (gone) are fine. */
static int step_delete(struct keylime_run *k, const char *base, long *ret_status)
{
	char url[KEYLIME_URL_MAX];
	int r;

	agent_url(k, base, url, sizeof(url));
	r = call(k, "DELETE", url, NULL, ret_status, NULL);
	if (r < 0)
		return r;
	if (*ret_status != 200 && *ret_status != 202 && *ret_status != 404)
		return unexpected(k, "DELETE", *ret_status);

	return 0;
}

/* Poll GET on base until done() says so, bounded by the hook's timeout. */
static int poll_until(struct keylime_run *k, const char *base,
		      int (*done)(struct keylime_run *k, long status, json_object *res))
{
	uint64_t deadline = now_ms() + k->h->timeout_ms;
	char url[KEYLIME_URL_MAX];
	json_object *res;
	long status = 0;
	int r;

	agent_url(k, base, url, sizeof(url));
	for (;;) {
		r = call(k, "GET", url, NULL, &status, &res);
		if (r == 0) {
			r = done(k, status, res);
			json_object_put(res);
			if (r <= 0)
				return r;
		}
		if (now_ms() >= deadline) {
			if (r > 0)
				snprintf(k->err, k->err_size, "GET: still waiting after %llu ms (status %ld)",
					 (unsigned long long)k->h->timeout_ms, status);
			return -ETIMEDOUT;
		}
		usleep(KEYLIME_POLL_MS * 1000);
	}
}

static int verifier_gone(struct keylime_run *k, long status, json_object *res)
{
	(void)k;
	(void)res;
	return status == 404 ? 0 : 1;
}

static int registered(struct keylime_run *k, long status, json_object *res)
{
	const char *ek = get_str(res, "ek_tpm");

	return status == 200 && ek && strcmp(ek, k->ek_tpm) == 0 ? 0 : 1;
}

static int attested(struct keylime_run *k, long status, json_object *res)
{
	json_object *st;
	json_object *n;
	int state;

	if (status != 200 || !json_object_object_get_ex(res, "operational_state", &st) ||
	    !json_object_object_get_ex(res, "attestation_count", &n))
		return 1;
	state = json_object_get_int(st);
	/* Failed, Invalid Quote, Tenant Failed: waiting will not help. */
	if (state == 7 || state == 9 || state == 10) {
		snprintf(k->err, k->err_size, "verifier: attestation failed operational_state=%d",
			 state);
		return -EACCES;
	}

	return state == KEYLIME_STATE_GET_QUOTE && json_object_get_int64(n) >= 1 ? 0 : 1;
}

/* agent_restart, with the event on its standard input. */
static int step_restart(struct keylime_run *k)
{
	char phase_var[64] = "VTPMD_EVENT_PHASE=commit";
	char *envp[] = { phase_var, NULL };
	struct hook_cred cred = { k->h->user_uid, k->h->user_gid };
	struct hook_result res;
	char how[160];
	int r;

	r = hook_exec_as(k->h->restart_argv, envp, k->json, strlen(k->json), k->h->timeout_ms,
			 k->h->has_user ? &cred : NULL, &res);
	if (r < 0) {
		snprintf(k->err, k->err_size, "agent_restart: cannot run %s: %s",
			 k->h->restart_argv[0], strerror(-r));
		return r;
	}
	if (res.timed_out || res.signaled || res.exit_status != 0) {
		hook_result_describe(&res, how, sizeof(how));
		snprintf(k->err, k->err_size, "agent_restart: %s", how);
		return -EIO;
	}

	return 0;
}

static json_object *str_list(const char *csv)
{
	json_object *a = json_object_new_array();
	const char *p = csv;
	size_t n;

	while (a && *p) {
		n = strcspn(p, ",");
		json_object_array_add(a, json_object_new_string_len(p, (int)n));
		p += n + (p[n] == ',');
	}

	return a;
}

static json_object *str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

/* The body Keylime's tenant sends to add an agent, from the registrar record reg. */
static int add_body(struct keylime_run *k, json_object *reg, char **ret_body)
{
	const struct conf_hook *h = k->h;
	const char *ip = get_str(reg, "ip") ? get_str(reg, "ip") : h->agent_ip;
	json_object *port = NULL;
	json_object *mtls = NULL;
	json_object *o;

	if (!ip || !get_str(reg, "aik_tpm")) {
		snprintf(k->err, k->err_size, "registrar record lacks %s",
			 ip ? "aik_tpm" : "ip (set agent_ip)");
		return -EBADMSG;
	}
	o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	json_object_object_get_ex(reg, "port", &port);
	json_object_object_get_ex(reg, "mtls_cert", &mtls);
	json_object_object_add(o, "v", NULL);
	json_object_object_add(o, "cloudagent_ip", json_object_new_string(ip));
	json_object_object_add(o, "cloudagent_port", json_object_is_type(port, json_type_int) ?
			       json_object_get(port) : json_object_new_int((int)h->agent_port));
	json_object_object_add(o, "tpm_policy", json_object_new_string(h->tpm_policy));
	json_object_object_add(o, "runtime_policy", json_object_new_string(""));
	json_object_object_add(o, "runtime_policy_name", str_or_null(h->runtime_policy_name));
	json_object_object_add(o, "runtime_policy_key", json_object_new_string(""));
	json_object_object_add(o, "mb_policy", json_object_new_string(""));
	json_object_object_add(o, "mb_policy_name", str_or_null(h->mb_policy_name));
	json_object_object_add(o, "ima_sign_verification_keys", json_object_new_string(""));
	json_object_object_add(o, "metadata", json_object_new_string("{}"));
	json_object_object_add(o, "revocation_key", json_object_new_string(""));
	json_object_object_add(o, "accept_tpm_hash_algs", str_list(h->hash_algs));
	json_object_object_add(o, "accept_tpm_encryption_algs", str_list(h->enc_algs));
	json_object_object_add(o, "accept_tpm_signing_algs", str_list(h->sign_algs));
	json_object_object_add(o, "ak_tpm", json_object_new_string(get_str(reg, "aik_tpm")));
	json_object_object_add(o, "mtls_cert", json_object_get(mtls));
	json_object_object_add(o, "supported_version", json_object_new_string(h->supported_version));
	*ret_body = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);

	return *ret_body ? 0 : -ENOMEM;
}

/*
 * The verifier knows the agent already: with the old AK when the prepare
 * phase never got through, or from an attempt whose answer was lost.
 * Either way, remove that record and add the agent again.
 */
static int readd(struct keylime_run *k, const char *url, const char *body, long *ret_status)
{
	long status;
	int r;

	log_warn("keylime: the verifier already knows the agent, replacing it hook=%s",
		 k->h->name);
	r = step_delete(k, k->h->verifier, &status);
	if (r == 0 && status == 202)
		r = poll_until(k, k->h->verifier, verifier_gone);
	if (r == 0)
		r = call(k, "POST", url, body, ret_status, NULL);

	return r;
}

/*
 * Read the agent's registrar record (it must carry the new EK) and add
 * the agent to the verifier with it.
 */
static int step_add(struct keylime_run *k)
{
	char url[KEYLIME_URL_MAX];
	json_object *reg = NULL;
	char *body = NULL;
	long status;
	int r;

	agent_url(k, k->h->registrar, url, sizeof(url));
	r = call(k, "GET", url, NULL, &status, &reg);
	if (r < 0)
		return r;
	if (registered(k, status, reg) != 0) {
		json_object_put(reg);
		snprintf(k->err, k->err_size, "registrar: no active record with the new EK (status %ld)",
			 status);
		return -EAGAIN;
	}
	r = add_body(k, reg, &body);
	json_object_put(reg);
	if (r < 0)
		return r;
	agent_url(k, k->h->verifier, url, sizeof(url));
	r = call(k, "POST", url, body, &status, NULL);
	if (r == 0 && status == 409)
		r = readd(k, url, body, &status);
	free(body);
	if (r == 0 && status != 200)
		r = unexpected(k, "verifier POST", status);

	return r;
}

/* Run one step; returns the next step or a negative errno. */
static int run_step(struct keylime_run *k, bool prepare, unsigned step)
{
	long status = 0;
	int r;

	if (prepare && step == KEYLIME_VERIFIER_DELETE) {
		r = step_delete(k, k->h->verifier, &status);
		return r < 0 ? r : status == 202 ? KEYLIME_VERIFIER_GONE : KEYLIME_PREPARE_DONE;
	}
	if (prepare)
		r = poll_until(k, k->h->verifier, verifier_gone);
	else if (step == KEYLIME_REGISTRAR_DELETE)
		r = step_delete(k, k->h->registrar, &status);
	else if (step == KEYLIME_AGENT_RESTART)
		r = step_restart(k);
	else if (step == KEYLIME_REGISTRAR_WAIT)
		r = poll_until(k, k->h->registrar, registered);
	else if (step == KEYLIME_VERIFIER_ADD)
		r = step_add(k);
	else
		r = poll_until(k, k->h->verifier, attested);
	if (r == 0 && status == 202)
		r = unexpected(k, "registrar DELETE", status);

	return r < 0 ? r : (int)step + 1;
}

static int event_ek(const char *json, json_object **ret_o, const char **ret_ek)
{
	json_object *o = json_tokener_parse(json);
	json_object *n;

	if (!o || !json_object_object_get_ex(o, "new", &n) || !get_str(n, "ek_tpm")) {
		json_object_put(o);
		return -EBADMSG;
	}
	*ret_o = o;
	*ret_ek = get_str(n, "ek_tpm");

	return 0;
}

/*
 * Deliver one phase ("prepare" or "commit") of the event json to the
 * Keylime hook h, starting at *step (enum keylime_step) and calling
 * progress after each step that succeeded.  Every step is logged with its
 * time.  Returns 0 when the phase is complete; otherwise a negative errno,
 * *step is the step to retry from and err says why.  The delivery thread.
 */
int keylime_deliver(const struct conf_hook *h, const char *phase, const char *json,
		    unsigned *step, keylime_progress_fn progress, void *userdata,
		    char *err, size_t err_size)
{
	struct keylime_run k = { .h = h, .phase = phase, .json = json, .err = err,
				 .err_size = err_size };
	bool prepare = strcmp(phase, "prepare") == 0;
	unsigned end = prepare ? KEYLIME_PREPARE_DONE : KEYLIME_COMMIT_DONE;
	json_object *ev;
	uint64_t t0;
	int r;

	if (event_ek(json, &ev, &k.ek_tpm) < 0) {
		snprintf(err, err_size, "the event has no new ek_tpm");
		return -EBADMSG;
	}
	while (*step < end) {
		const char *name = prepare ? prepare_names[*step] : commit_names[*step];

		t0 = now_ms();
		r = run_step(&k, prepare, *step);
		if (r < 0) {
			log_warn("keylime: step failed hook=%s phase=%s step=%s elapsed_ms=%llu err=\"%s\"",
				 h->name, phase, name, (unsigned long long)(now_ms() - t0), err);
			json_object_put(ev);
			return r;
		}
		log_notice("keylime: step done hook=%s phase=%s step=%s elapsed_ms=%llu", h->name,
			   phase, name, (unsigned long long)(now_ms() - t0));
		*step = (unsigned)r;
		if (progress)
			progress(userdata, *step);
	}
	json_object_put(ev);

	return 0;
}
