#pragma once

#include <stddef.h>

#include "conf.h"

/*
 * HTTPS requests for the hooks, with libcurl: TLS verification on unless
 * the hook says tls_verify = no, optional client certificate, optional
 * bearer token, one timeout per request, no redirects, a bounded response.
 */

#define WEBHOOK_RESPONSE_MAX (256 * 1024)	/* bytes of a response body kept */
#define WEBHOOK_ERR_MAX 160

struct webhook_reply {
	long status;			/* HTTP status, 0 if none arrived */
	char *body;			/* NUL-terminated, malloc'd; NULL if none */
	size_t len;
	char err[WEBHOOK_ERR_MAX];	/* why it failed, one line; no URL query, no body */
};

int webhook_global_init(void);
void webhook_global_cleanup(void);
int webhook_request(const struct conf_hook *h, const char *method, const char *url,
		    const char *body, struct webhook_reply *ret);
void webhook_reply_clear(struct webhook_reply *reply);
int webhook_post_event(const struct conf_hook *h, const char *json, struct webhook_reply *ret);
