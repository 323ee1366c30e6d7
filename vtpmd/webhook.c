#include "webhook.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "util.h"

struct webhook_sink {
	char *buf;
	size_t len;
	bool too_big;
};

/*
 * Initialise libcurl once for the process.  Returns 0 or -EIO.  Main
 * thread, before any other thread uses libcurl.
 */
int webhook_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

static size_t sink_write(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct webhook_sink *s = userdata;
	size_t n = size * nmemb;
	char *p;

	if (s->len + n > WEBHOOK_RESPONSE_MAX) {
		s->too_big = true;
		return 0;	/* makes libcurl stop with CURLE_WRITE_ERROR */
	}
	p = realloc(s->buf, s->len + n + 1);
	if (!p)
		return 0;
	memcpy(p + s->len, data, n);
	s->buf = p;
	s->len += n;
	s->buf[s->len] = '\0';

	return n;
}

static int curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CIPHER:
		return -EPROTO;
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EPROTONOSUPPORT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/* TLS, token, timeout and the safety options every request gets. */
static int setup(CURL *c, const struct conf_hook *h, struct curl_slist **headers)
{
	char auth[CONF_TOKEN_MAX + 32];
	struct curl_slist *l = *headers;
	CURLcode e = CURLE_OK;

	e |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	e |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	e |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	e |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
	e |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, h->tls_verify ? 1L : 0L);
	e |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, h->tls_verify ? 2L : 0L);
	if (h->tls_ca)
		e |= curl_easy_setopt(c, CURLOPT_CAINFO, h->tls_ca);
	if (h->tls_cert) {
		e |= curl_easy_setopt(c, CURLOPT_SSLCERT, h->tls_cert);
		e |= curl_easy_setopt(c, CURLOPT_SSLKEY, h->tls_key);
	}
	if (h->token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", h->token);
		l = curl_slist_append(l, auth);
		explicit_bzero(auth, sizeof(auth));
		if (!l)
			return -ENOMEM;
		*headers = l;
	}

	return e == CURLE_OK ? 0 : -EINVAL;
}

static int perform(CURL *c, struct webhook_reply *ret)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct webhook_sink sink = { 0 };
	CURLcode e;

	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
	e = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ret->status);
	if (sink.too_big) {
		free(sink.buf);
		snprintf(ret->err, sizeof(ret->err), "response larger than %d bytes",
			 WEBHOOK_RESPONSE_MAX);
		return -EFBIG;
	}
	if (e != CURLE_OK) {
		free(sink.buf);
		snprintf(ret->err, sizeof(ret->err), "%s", errbuf[0] ? errbuf : curl_easy_strerror(e));
		return curl_errno(e);
	}
	ret->body = sink.buf;
	ret->len = sink.len;

	return 0;
}

/* Undo webhook_global_init().  Main thread, after every other libcurl user stopped. */
void webhook_global_cleanup(void)
{
	curl_global_cleanup();
}

/*
 * One HTTPS request with the hook's TLS files, token and timeout: method
 * ("GET", "POST", "DELETE") on url, with body (JSON) if not NULL.  On
 * return *ret holds the status and, on success, the body; the caller
 * clears it with webhook_reply_clear() either way.  Returns 0 when an
 * HTTP answer of any status arrived, -ETIMEDOUT, -ECONNREFUSED,
 * -EHOSTUNREACH, -EPROTO (TLS), -EFBIG (a response over
 * WEBHOOK_RESPONSE_MAX), -ENOMEM or -EIO; ret->err says why.  Never logs.
 * The delivery thread.
 */
int webhook_request(const struct conf_hook *h, const char *method, const char *url,
		    const char *body, struct webhook_reply *ret)
{
	struct curl_slist *headers = NULL;
	struct curl_slist *l;
	CURL *c;
	int r;

	memset(ret, 0, sizeof(*ret));
	c = curl_easy_init();
	if (!c)
		return -ENOMEM;
	r = setup(c, h, &headers);
	if (r < 0)
		goto out;
	l = curl_slist_append(headers, body ? "Content-Type: application/json" :
			      "Accept: application/json");
	if (!l) {
		r = -ENOMEM;
		goto out;
	}
	headers = l;
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	r = perform(c, ret);
out:
	curl_slist_free_all(headers);
	curl_easy_cleanup(c);
	return r;
}

/* Free what a reply holds; the struct itself is the caller's. */
void webhook_reply_clear(struct webhook_reply *reply)
{
	free(reply->body);
	reply->body = NULL;
	reply->len = 0;
}

/*
 * POST one event (JSON text) to the hook's url.  A 2xx answer delivers
 * it: returns 0.  Any other status (redirects too: they are not followed)
 * returns -EBADMSG with ret->status set; transport failures as
 * webhook_request().  The body of the answer is read up to the bound and
 * dropped.  The delivery thread.
 */
int webhook_post_event(const struct conf_hook *h, const char *json, struct webhook_reply *ret)
{
	int r;

	r = webhook_request(h, "POST", h->url, json, ret);
	webhook_reply_clear(ret);
	/* The body of the answer means nothing here: a long one is not an error. */
	if (r == -EFBIG && ret->status >= 200 && ret->status <= 299)
		r = 0;
	if (r < 0)
		return r;
	if (ret->status < 200 || ret->status > 299) {
		snprintf(ret->err, sizeof(ret->err), "HTTP status %ld", ret->status);
		return -EBADMSG;
	}

	return 0;
}
