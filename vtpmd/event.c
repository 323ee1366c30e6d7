#include "event.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "util.h"

/* TPM 2.0 Part 2, 7.2: the handle type is the top octet. */
#define EVENT_HT_NV_INDEX 0x01
#define EVENT_HT_PERSISTENT 0x81

/* 9999-12-31T23:59:59Z: the last second four year digits can write. */
#define EVENT_TIME_MAX_S INT64_C(253402300799)
#define EVENT_TIME_LEN 24	/* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
#define EVENT_TIME_SIZE 80	/* room for any int fields, so snprintf never truncates */
#define EVENT_TOKEN_MAX 128	/* event id and reason, NUL included */
#define EVENT_JSON_DEPTH 8	/* the event nests 4 deep */

/* Member counts: every member is always present, null where empty. */
#define EVENT_ROOT_MEMBERS 8
#define EVENT_COUNTER_MEMBERS 3
#define EVENT_IDENTITY_MEMBERS 9
#define EVENT_EK_MEMBERS 6

/* ---- Checks shared by encoding and decoding ---- */

/* Printable ASCII, not empty, shorter than max: safe in JSON and in a log line. */
static bool event_is_token(const char *s, size_t max)
{
	size_t i;

	if (!s || !s[0])
		return false;
	for (i = 0; s[i]; i++)
		if (i + 1 >= max || s[i] < 0x20 || s[i] > 0x7e)
			return false;

	return true;
}

/* TPM2B wire form: a big-endian size, then exactly that many bytes. */
static bool event_is_tpm2b(const uint8_t *buf, size_t len)
{
	return buf && len > 2 && util_be16(buf) == len - 2;
}

static bool event_is_handle(uint32_t handle, uint8_t type)
{
	return handle >> 24 == type;
}

static bool event_is_key_valid(const struct meta_key *k, bool ek)
{
	if (k->alg == META_ALG_NONE || !meta_alg_name(k->alg))
		return false;
	if (!event_is_handle(k->handle, EVENT_HT_PERSISTENT))
		return false;
	if (!event_is_tpm2b(k->tpm, k->tpm_len) || !k->name || !k->name_len)
		return false;
	if (!ek)
		return true;
	if (k->cert && !k->cert_len)
		return false;

	return !k->cert_nv || event_is_handle(k->cert_nv, EVENT_HT_NV_INDEX);
}

/* The AK's spki is checked where it is used, by event_ak_pem(). */
static bool event_is_meta_valid(const struct meta *m)
{
	size_t i;

	if (!memchr(m->id, '\0', sizeof(m->id)) || !event_is_token(m->id, sizeof(m->id)))
		return false;
	if (m->created < 0 || m->created > EVENT_TIME_MAX_S)
		return false;
	if (m->n_ek < 1 || m->n_ek > META_MAX_EKS)
		return false;
	for (i = 0; i < m->n_ek; i++)
		if (!event_is_key_valid(&m->ek[i], true))
			return false;

	return m->ak.alg == META_ALG_NONE || event_is_key_valid(&m->ak, false);
}

static bool event_is_rotation_valid(const struct event_rotation *e)
{
	if (!e->phase || (strcmp(e->phase, "prepare") != 0 && strcmp(e->phase, "commit") != 0))
		return false;
	if (!event_is_token(e->id, EVENT_TOKEN_MAX) || !event_is_token(e->reason, EVENT_TOKEN_MAX))
		return false;
	if (e->commands > EVENT_COUNTER_MAX || e->quotes > EVENT_COUNTER_MAX ||
	    e->rotations > EVENT_COUNTER_MAX)
		return false;
	if (e->time_ms < 0 || e->time_ms / 1000 > EVENT_TIME_MAX_S)
		return false;
	if (e->old && !event_is_meta_valid(e->old))
		return false;

	return e->new && event_is_meta_valid(e->new);
}

/* The algorithm of a public key, META_ALG_NONE if it is neither kind an AK can be. */
static enum meta_alg event_pkey_alg(EVP_PKEY *pkey)
{
	char group[32];

	switch (EVP_PKEY_get_base_id(pkey)) {
	case EVP_PKEY_RSA:
		return EVP_PKEY_get_bits(pkey) == 2048 ? META_ALG_RSA2048 : META_ALG_NONE;
	case EVP_PKEY_EC:
		if (!EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL))
			return META_ALG_NONE;
		return strcmp(group, "prime256v1") == 0 ? META_ALG_ECC_P256 : META_ALG_NONE;
	default:
		return META_ALG_NONE;
	}
}

/*
 * RFC 3339 in UTC, "YYYY-MM-DDTHH:MM:SS.mmmZ", or without ".mmm" unless
 * with_ms; buf holds EVENT_TIME_SIZE bytes.
 */
static int event_time_format(int64_t ms, bool with_ms, char *buf, size_t size)
{
	time_t s;
	struct tm tm;

	if (ms < 0 || ms / 1000 > EVENT_TIME_MAX_S || size < EVENT_TIME_SIZE)
		return -EINVAL;
	s = (time_t)(ms / 1000);
	if (!gmtime_r(&s, &tm))
		return -EINVAL;
	snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
	if (!with_ms)
		strcpy(buf + 19, "Z");

	return 0;
}

/* Standard alphabet, padded, one line; *ret_text is NUL-terminated. */
static int event_b64_encode(const uint8_t *buf, size_t len, char **ret_text)
{
	char *text;

	if (len > EVENT_JSON_MAX)
		return -E2BIG;
	text = malloc(4 * ((len + 2) / 3) + 1);
	if (!text)
		return -ENOMEM;
	EVP_EncodeBlock((unsigned char *)text, buf, (int)len);

	*ret_text = text;
	return 0;
}

/* ---- Encoding ---- */

/* Add v to o under key; a NULL v is an allocation that failed. */
static int event_add(struct json_object *o, const char *key, struct json_object *v)
{
	if (!v)
		return -ENOMEM;
	if (json_object_object_add(o, key, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}

	return 0;
}

static int event_add_null(struct json_object *o, const char *key)
{
	return json_object_object_add(o, key, NULL) < 0 ? -ENOMEM : 0;
}

static int event_add_str(struct json_object *o, const char *key, const char *s)
{
	if (!s)
		return event_add_null(o, key);

	return event_add(o, key, json_object_new_string(s));
}

static int event_add_b64(struct json_object *o, const char *key, const uint8_t *buf,
			 size_t len)
{
	_cleanup_free_ char *text = NULL;
	int r;

	if (!buf)
		return event_add_null(o, key);
	r = event_b64_encode(buf, len, &text);
	if (r < 0)
		return r;

	return event_add_str(o, key, text);
}

static int event_add_hex(struct json_object *o, const char *key, const uint8_t *buf,
			 size_t len)
{
	static const char digits[] = "0123456789abcdef";
	_cleanup_free_ char *text = NULL;
	size_t i;

	if (!buf)
		return event_add_null(o, key);
	if (len > EVENT_JSON_MAX)
		return -E2BIG;
	text = malloc(2 * len + 1);
	if (!text)
		return -ENOMEM;
	for (i = 0; i < len; i++) {
		text[2 * i] = digits[buf[i] >> 4];
		text[2 * i + 1] = digits[buf[i] & 0xf];
	}
	text[2 * len] = '\0';

	return event_add_str(o, key, text);
}

/* A handle as "0x%08x"; 0 (none) is null. */
static int event_add_handle(struct json_object *o, const char *key, uint32_t handle)
{
	char text[11];

	if (!handle)
		return event_add_null(o, key);
	snprintf(text, sizeof(text), "0x%08" PRIx32, handle);

	return event_add_str(o, key, text);
}

static int event_add_time(struct json_object *o, const char *key, int64_t ms, bool with_ms)
{
	char text[EVENT_TIME_SIZE];
	int r;

	r = event_time_format(ms, with_ms, text, sizeof(text));
	if (r < 0)
		return r;

	return event_add_str(o, key, text);
}

static int event_add_u64(struct json_object *o, const char *key, uint64_t v)
{
	/* Callers keep v within EVENT_COUNTER_MAX, so it fits an int64_t. */
	return event_add(o, key, json_object_new_int64((int64_t)v));
}

static int event_ek_fill(struct json_object *o, const struct meta_key *k)
{
	int r;

	r = event_add_str(o, "alg", meta_alg_name(k->alg));
	if (r < 0)
		return r;
	r = event_add_handle(o, "handle", k->handle);
	if (r < 0)
		return r;
	r = event_add_b64(o, "tpm", k->tpm, k->tpm_len);
	if (r < 0)
		return r;
	r = event_add_b64(o, "cert", k->cert, k->cert_len);
	if (r < 0)
		return r;
	r = event_add_handle(o, "cert_nv", k->cert_nv);
	if (r < 0)
		return r;

	return event_add_hex(o, "name", k->name, k->name_len);
}

static int event_eks_fill(struct json_object *array, const struct meta *m)
{
	struct json_object *o;
	size_t i;
	int r;

	for (i = 0; i < m->n_ek; i++) {
		o = json_object_new_object();
		if (!o)
			return -ENOMEM;
		r = event_ek_fill(o, &m->ek[i]);
		if (r == 0 && json_object_array_add(array, o) < 0)
			r = -ENOMEM;
		if (r < 0) {
			json_object_put(o);
			return r;
		}
	}

	return 0;
}

static int event_ak_fill(struct json_object *o, const struct meta_key *k)
{
	_cleanup_free_ char *pem = NULL;
	bool has_ak = k->alg != META_ALG_NONE;
	int r;

	if (has_ak) {
		r = event_ak_pem(k, &pem);
		if (r < 0)
			return r;
	}
	r = event_add_b64(o, "aik_tpm", has_ak ? k->tpm : NULL, k->tpm_len);
	if (r < 0)
		return r;
	r = event_add_str(o, "ak_pem", pem);
	if (r < 0)
		return r;
	r = event_add_handle(o, "ak_handle", has_ak ? k->handle : 0);
	if (r < 0)
		return r;

	return event_add_hex(o, "ak_name", has_ak ? k->name : NULL, k->name_len);
}

/* The preferred EK is the first: the daemon orders RSA first. */
static int event_identity_fill(struct json_object *o, const struct meta *m)
{
	struct json_object *eks;
	int r;

	r = event_add_str(o, "instance", m->id);
	if (r < 0)
		return r;
	r = event_add_time(o, "created", m->created * 1000, false);
	if (r < 0)
		return r;
	r = event_add_b64(o, "ek_tpm", m->ek[0].tpm, m->ek[0].tpm_len);
	if (r < 0)
		return r;
	r = event_add_b64(o, "ek_cert", m->ek[0].cert, m->ek[0].cert_len);
	if (r < 0)
		return r;
	eks = json_object_new_array();
	r = event_add(o, "eks", eks);
	if (r < 0)
		return r;
	r = event_eks_fill(eks, m);
	if (r < 0)
		return r;

	return event_ak_fill(o, &m->ak);
}

static int event_add_identity(struct json_object *o, const char *key, const struct meta *m)
{
	struct json_object *id;

	if (!m)
		return event_add_null(o, key);
	id = json_object_new_object();
	if (!id)
		return -ENOMEM;
	if (json_object_object_add(o, key, id) < 0) {
		json_object_put(id);
		return -ENOMEM;
	}

	/* o owns id now: a failure below is undone with o. */
	return event_identity_fill(id, m);
}

static int event_counters_fill(struct json_object *o, const struct event_rotation *e)
{
	int r;

	r = event_add_u64(o, "commands", e->commands);
	if (r < 0)
		return r;
	r = event_add_u64(o, "quotes", e->quotes);
	if (r < 0)
		return r;

	return event_add_u64(o, "rotations", e->rotations);
}

static int event_rotation_fill(struct json_object *o, const struct event_rotation *e)
{
	struct json_object *counters;
	int r;

	r = event_add_str(o, "event", "rotation");
	if (r < 0)
		return r;
	r = event_add_str(o, "phase", e->phase);
	if (r < 0)
		return r;
	r = event_add_str(o, "id", e->id);
	if (r < 0)
		return r;
	r = event_add_time(o, "time", e->time_ms, true);
	if (r < 0)
		return r;
	r = event_add_str(o, "reason", e->reason);
	if (r < 0)
		return r;
	counters = json_object_new_object();
	r = event_add(o, "counters", counters);
	if (r < 0)
		return r;
	r = event_counters_fill(counters, e);
	if (r < 0)
		return r;
	r = event_add_identity(o, "old", e->old);
	if (r < 0)
		return r;

	return event_add_identity(o, "new", e->new);
}

/*
 * Build the rotation event of e as one line of JSON (no trailing newline)
 * and hand the caller a malloc'd string in *ret_json.  The fields are
 * described in DESIGN.md, "Re-enrollment event"; e and the metadata it
 * points to are only read.  Returns -EINVAL when e or its metadata is
 * inconsistent (bad phase, empty id, missing EK, malformed AK spki, a
 * counter beyond EVENT_COUNTER_MAX, ...), -E2BIG when the text would exceed
 * EVENT_JSON_MAX, -ENOMEM.  Any thread.
 */
int event_rotation_encode(const struct event_rotation *e, char **ret_json)
{
	struct json_object *root;
	const char *text;
	char *json;
	int r;

	assert(e);
	assert(ret_json);

	if (!event_is_rotation_valid(e))
		return -EINVAL;

	root = json_object_new_object();
	if (!root)
		return -ENOMEM;
	r = event_rotation_fill(root, e);
	if (r < 0)
		goto out_put;

	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
	r = -ENOMEM;
	if (!text)
		goto out_put;
	r = -E2BIG;
	if (strlen(text) > EVENT_JSON_MAX)
		goto out_put;
	r = -ENOMEM;
	json = strdup(text);
	if (!json)
		goto out_put;

	*ret_json = json;
	r = 0;
out_put:
	json_object_put(root);
	return r;
}

static int event_bio_strdup(BIO *bio, char **ret)
{
	char *data;
	char *s;
	long n;

	n = BIO_get_mem_data(bio, &data);
	if (n <= 0)
		return -ENOMEM;
	s = strndup(data, (size_t)n);
	if (!s)
		return -ENOMEM;

	*ret = s;
	return 0;
}

/*
 * The AK's public key as PEM SubjectPublicKeyInfo ("-----BEGIN PUBLIC
 * KEY-----", 64-column lines, trailing newline), made from k->spki; the
 * caller frees *ret_pem.  Returns -EINVAL when the spki is missing, is not
 * exactly one DER SubjectPublicKeyInfo, or is not a key of k->alg;
 * -ENOMEM.  Any thread.
 */
int event_ak_pem(const struct meta_key *k, char **ret_pem)
{
	const unsigned char *p;
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	int r;

	assert(k);
	assert(ret_pem);

	r = -EINVAL;
	if (k->alg == META_ALG_NONE || !k->spki || !k->spki_len || k->spki_len > LONG_MAX)
		goto out;
	p = k->spki;
	pkey = d2i_PUBKEY(NULL, &p, (long)k->spki_len);
	if (!pkey || p != k->spki + k->spki_len || event_pkey_alg(pkey) != k->alg)
		goto out;

	r = -ENOMEM;
	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_PUBKEY(bio, pkey))
		goto out;
	r = event_bio_strdup(bio, ret_pem);
out:
	/* Leave nothing in this thread's OpenSSL error queue for others to trip on. */
	ERR_clear_error();
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	return r;
}

/* ---- Decoding ---- */

static int event_parse(const char *json, size_t len, struct json_object **ret)
{
	struct json_tokener *tok;
	struct json_object *root;
	size_t end;

	if (!len || len > EVENT_JSON_MAX)
		return -EINVAL;
	tok = json_tokener_new_ex(EVENT_JSON_DEPTH);
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	root = json_tokener_parse_ex(tok, json, (int)len);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!root)
		return -EINVAL;

	/* Only white space may follow the object (the outbox ends files with a newline). */
	while (end < len && json[end] && strchr(" \t\r\n", json[end]))
		end++;
	if (end != len || !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return -EINVAL;
	}

	*ret = root;
	return 0;
}

/* Member key of o, of type t; JSON null is allowed when nullable, and gives NULL. */
static int event_get(struct json_object *o, const char *key, enum json_type t, bool nullable,
		     struct json_object **ret)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return -EINVAL;
	if (!v && !nullable)
		return -EINVAL;
	if (v && !json_object_is_type(v, t))
		return -EINVAL;

	*ret = v;
	return 0;
}

static bool event_is_null(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && !v;
}

/* A string member without NUL bytes; *ret points into o. */
static int event_get_str(struct json_object *o, const char *key, bool nullable,
			 const char **ret)
{
	struct json_object *v;
	const char *s = NULL;
	int r;

	r = event_get(o, key, json_type_string, nullable, &v);
	if (r < 0)
		return r;
	if (v) {
		s = json_object_get_string(v);
		if (strlen(s) != (size_t)json_object_get_string_len(v))
			return -EINVAL;
	}

	*ret = s;
	return 0;
}

static int event_get_strdup(struct json_object *o, const char *key, char **ret)
{
	const char *s;
	char *copy;
	int r;

	r = event_get_str(o, key, false, &s);
	if (r < 0)
		return r;
	copy = strdup(s);
	if (!copy)
		return -ENOMEM;

	*ret = copy;
	return 0;
}

/* Only the form event_b64_encode() writes: anything else fails to match it. */
static int event_b64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len)
{
	char *check = NULL;
	uint8_t *buf;
	size_t n;
	int r;

	if (!len || len % 4 || len > EVENT_JSON_MAX)
		return -EINVAL;
	buf = malloc(len / 4 * 3);
	if (!buf)
		return -ENOMEM;
	r = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)len);
	if (r < 0) {
		r = -EINVAL;
		goto err_free;
	}
	n = (size_t)r - (s[len - 1] == '=') - (s[len - 2] == '=');
	r = event_b64_encode(buf, n, &check);
	if (r < 0)
		goto err_free;
	r = strcmp(check, s) == 0 ? 0 : -EINVAL;
	free(check);
	if (r < 0)
		goto err_free;

	*ret = buf;
	*ret_len = n;
	return 0;

err_free:
	free(buf);
	return r;
}

static int event_get_b64(struct json_object *o, const char *key, bool nullable, uint8_t **ret,
			 size_t *ret_len)
{
	const char *s;
	int r;

	r = event_get_str(o, key, nullable, &s);
	if (r < 0)
		return r;
	if (!s) {
		*ret = NULL;
		*ret_len = 0;
		return 0;
	}

	return event_b64_decode(s, strlen(s), ret, ret_len);
}

static int event_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;

	return -EINVAL;
}

/* Lowercase hex, as event_add_hex() writes it, into len / 2 bytes of buf. */
static int event_hex_decode(const char *s, size_t len, uint8_t *buf)
{
	int hi;
	int lo;
	size_t i;

	if (len % 2)
		return -EINVAL;
	for (i = 0; i < len / 2; i++) {
		hi = event_hex_digit(s[2 * i]);
		lo = event_hex_digit(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		buf[i] = (uint8_t)(hi << 4 | lo);
	}

	return 0;
}

static int event_get_hex(struct json_object *o, const char *key, uint8_t **ret, size_t *ret_len)
{
	uint8_t *buf;
	const char *s;
	size_t len;
	int r;

	r = event_get_str(o, key, true, &s);
	if (r < 0)
		return r;
	if (!s) {
		*ret = NULL;
		*ret_len = 0;
		return 0;
	}
	len = strlen(s);
	buf = malloc(len / 2 + 1);
	if (!buf)
		return -ENOMEM;
	r = event_hex_decode(s, len, buf);
	if (r < 0) {
		free(buf);
		return r;
	}

	*ret = buf;
	*ret_len = len / 2;
	return 0;
}

/* "0x" and eight lowercase hex digits; null gives 0. */
static int event_get_handle(struct json_object *o, const char *key, uint32_t *ret)
{
	uint8_t be[4];
	const char *s;
	int r;

	r = event_get_str(o, key, true, &s);
	if (r < 0)
		return r;
	if (!s) {
		*ret = 0;
		return 0;
	}
	if (strlen(s) != 10 || strncmp(s, "0x", 2) != 0)
		return -EINVAL;
	r = event_hex_decode(s + 2, 8, be);
	if (r < 0)
		return r;

	*ret = util_be32(be);
	return 0;
}

/* Only the exact form event_time_format() writes, so that a date like Feb 30 fails. */
static int event_get_time(struct json_object *o, const char *key, bool with_ms, int64_t *ret_ms)
{
	char check[EVENT_TIME_SIZE];
	struct tm tm = { 0 };
	const char *s;
	int frac = 0;
	int64_t ms;
	int r;

	r = event_get_str(o, key, false, &s);
	if (r < 0)
		return r;
	r = sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &frac);
	if (r != (with_ms ? 7 : 6) || frac < 0)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	ms = (int64_t)timegm(&tm) * 1000 + frac;
	r = event_time_format(ms, with_ms, check, sizeof(check));
	if (r < 0 || strcmp(check, s) != 0)
		return -EINVAL;

	*ret_ms = ms;
	return 0;
}

static int event_get_counter(struct json_object *o, const char *key, uint64_t *ret)
{
	struct json_object *v;
	int64_t n;
	int r;

	r = event_get(o, key, json_type_int, false, &v);
	if (r < 0)
		return r;

	/* json-c clamps what does not fit 64 bits: the bound below rejects that too. */
	n = json_object_get_int64(v);
	if (n < 0 || (uint64_t)n > EVENT_COUNTER_MAX)
		return -EINVAL;

	*ret = (uint64_t)n;
	return 0;
}

static int event_alg_parse(const char *s, enum meta_alg *ret)
{
	const char *name;
	int alg;

	for (alg = META_ALG_RSA2048; alg <= META_ALG_ECC_P256; alg++) {
		name = meta_alg_name((enum meta_alg)alg);
		if (name && strcmp(name, s) == 0) {
			*ret = (enum meta_alg)alg;
			return 0;
		}
	}

	return -EINVAL;
}

static int event_ek_read(struct json_object *o, struct meta_key *k)
{
	const char *alg;
	int r;

	if (!json_object_is_type(o, json_type_object) ||
	    json_object_object_length(o) != EVENT_EK_MEMBERS)
		return -EINVAL;
	r = event_get_str(o, "alg", false, &alg);
	if (r < 0)
		return r;
	r = event_alg_parse(alg, &k->alg);
	if (r < 0)
		return r;
	r = event_get_handle(o, "handle", &k->handle);
	if (r < 0)
		return r;
	r = event_get_b64(o, "tpm", false, &k->tpm, &k->tpm_len);
	if (r < 0)
		return r;
	r = event_get_b64(o, "cert", true, &k->cert, &k->cert_len);
	if (r < 0)
		return r;
	r = event_get_handle(o, "cert_nv", &k->cert_nv);
	if (r < 0)
		return r;

	return event_get_hex(o, "name", &k->name, &k->name_len);
}

static int event_eks_read(struct json_object *o, struct meta *m)
{
	struct json_object *eks;
	size_t n;
	size_t i;
	int r;

	r = event_get(o, "eks", json_type_array, false, &eks);
	if (r < 0)
		return r;
	n = json_object_array_length(eks);
	if (n < 1 || n > META_MAX_EKS)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		r = event_ek_read(json_object_array_get_idx(eks, i), &m->ek[i]);
		if (r < 0)
			return r;
	}

	m->n_ek = n;
	return 0;
}

static bool event_is_same(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
	if (!a || !b)
		return !a && !b;

	return a_len == b_len && memcmp(a, b, a_len) == 0;
}

/* ek_tpm and ek_cert repeat the first EK of eks (read before). */
static int event_ek_first_check(struct json_object *o, const struct meta_key *k)
{
	_cleanup_free_ uint8_t *tpm = NULL;
	_cleanup_free_ uint8_t *cert = NULL;
	size_t tpm_len;
	size_t cert_len;
	int r;

	r = event_get_b64(o, "ek_tpm", false, &tpm, &tpm_len);
	if (r < 0)
		return r;
	r = event_get_b64(o, "ek_cert", true, &cert, &cert_len);
	if (r < 0)
		return r;
	if (!event_is_same(tpm, tpm_len, k->tpm, k->tpm_len) ||
	    !event_is_same(cert, cert_len, k->cert, k->cert_len))
		return -EINVAL;

	return 0;
}

static int event_no_password(char *buf, int size, int rwflag, void *u)
{
	/* An encrypted PEM is malformed here: never prompt for a password. */
	return -1;
}

/* k->spki (malloc'd DER) and k->alg from a PEM public key. */
static int event_spki_from_pem(const char *pem, struct meta_key *k)
{
	unsigned char *der = NULL;
	EVP_PKEY *pkey;
	BIO *bio;
	int n;
	int r;

	bio = BIO_new_mem_buf(pem, -1);
	if (!bio)
		return -ENOMEM;
	pkey = PEM_read_bio_PUBKEY(bio, NULL, event_no_password, NULL);
	BIO_free(bio);
	if (!pkey) {
		ERR_clear_error();
		return -EINVAL;
	}

	r = -EINVAL;
	n = i2d_PUBKEY(pkey, &der);
	if (n <= 0)
		goto out;
	r = -ENOMEM;
	k->spki = malloc((size_t)n);
	if (!k->spki)
		goto out;
	memcpy(k->spki, der, (size_t)n);
	k->spki_len = (size_t)n;
	k->alg = event_pkey_alg(pkey);
	r = 0;
out:
	ERR_clear_error();
	OPENSSL_free(der);
	EVP_PKEY_free(pkey);
	return r;
}

/* All four AK members are null (no AK), or none is and ak_pem is canonical. */
static int event_ak_read(struct json_object *o, struct meta_key *k)
{
	_cleanup_free_ char *check = NULL;
	const char *pem;
	int nulls;
	int r;

	nulls = event_is_null(o, "aik_tpm") + event_is_null(o, "ak_pem") +
		event_is_null(o, "ak_handle") + event_is_null(o, "ak_name");
	if (nulls != 0 && nulls != 4)
		return -EINVAL;
	r = event_get_b64(o, "aik_tpm", true, &k->tpm, &k->tpm_len);
	if (r < 0)
		return r;
	r = event_get_str(o, "ak_pem", true, &pem);
	if (r < 0)
		return r;
	r = event_get_handle(o, "ak_handle", &k->handle);
	if (r < 0)
		return r;
	r = event_get_hex(o, "ak_name", &k->name, &k->name_len);
	if (r < 0 || !pem)
		return r;
	r = event_spki_from_pem(pem, k);
	if (r < 0)
		return r;
	r = event_ak_pem(k, &check);
	if (r < 0)
		return r;

	return strcmp(check, pem) == 0 ? 0 : -EINVAL;
}

static int event_identity_read(struct json_object *o, struct meta *m)
{
	const char *id;
	int64_t ms;
	int r;

	if (json_object_object_length(o) != EVENT_IDENTITY_MEMBERS)
		return -EINVAL;
	r = event_get_str(o, "instance", false, &id);
	if (r < 0)
		return r;
	if (strlen(id) >= sizeof(m->id))
		return -EINVAL;
	strcpy(m->id, id);
	r = event_get_time(o, "created", false, &ms);
	if (r < 0)
		return r;
	m->created = ms / 1000;
	r = event_eks_read(o, m);
	if (r < 0)
		return r;
	r = event_ek_first_check(o, &m->ek[0]);
	if (r < 0)
		return r;

	return event_ak_read(o, &m->ak);
}

static int event_counters_read(struct json_object *o, struct event_rotation *e)
{
	struct json_object *counters;
	int r;

	r = event_get(o, "counters", json_type_object, false, &counters);
	if (r < 0)
		return r;
	if (json_object_object_length(counters) != EVENT_COUNTER_MEMBERS)
		return -EINVAL;
	r = event_get_counter(counters, "commands", &e->commands);
	if (r < 0)
		return r;
	r = event_get_counter(counters, "quotes", &e->quotes);
	if (r < 0)
		return r;

	return event_get_counter(counters, "rotations", &e->rotations);
}

static int event_identities_read(struct json_object *o, struct event_decoded *d)
{
	struct json_object *v;
	int r;

	r = event_get(o, "old", json_type_object, true, &v);
	if (r < 0)
		return r;
	if (v) {
		d->has_old = true;
		r = event_identity_read(v, &d->old);
		if (r < 0)
			return r;
	}
	r = event_get(o, "new", json_type_object, false, &v);
	if (r < 0)
		return r;

	return event_identity_read(v, &d->new);
}

/* Point d->ev at the rest of d, wherever d now lives. */
static void event_decoded_link(struct event_decoded *d)
{
	d->ev.id = d->id;
	d->ev.phase = d->phase;
	d->ev.reason = d->reason;
	d->ev.old = d->has_old ? &d->old : NULL;
	d->ev.new = &d->new;
}

static int event_rotation_read(struct json_object *o, struct event_decoded *d)
{
	const char *s;
	int r;

	if (json_object_object_length(o) != EVENT_ROOT_MEMBERS)
		return -EINVAL;
	r = event_get_str(o, "event", false, &s);
	if (r < 0)
		return r;
	if (strcmp(s, "rotation") != 0)
		return -EINVAL;
	r = event_get_strdup(o, "phase", &d->phase);
	if (r < 0)
		return r;
	r = event_get_strdup(o, "id", &d->id);
	if (r < 0)
		return r;
	r = event_get_strdup(o, "reason", &d->reason);
	if (r < 0)
		return r;
	r = event_get_time(o, "time", true, &d->ev.time_ms);
	if (r < 0)
		return r;
	r = event_counters_read(o, &d->ev);
	if (r < 0)
		return r;
	r = event_identities_read(o, d);
	if (r < 0)
		return r;
	event_decoded_link(d);

	return event_is_rotation_valid(&d->ev) ? 0 : -EINVAL;
}

/*
 * Parse and validate one rotation event of len bytes (no NUL needed;
 * white space may follow the object) into *ret, which the caller releases
 * with event_decoded_clear().  Strict: every member present with its type,
 * no unknown members, canonical base64, hex, times and PEM, the same
 * consistency rules as event_rotation_encode(): it accepts whatever that
 * writes, and what it accepts encodes again to the same event (member
 * order and white space aside).  Returns -EINVAL on anything malformed,
 * -ENOMEM.  Any thread.
 */
int event_rotation_decode(const char *json, size_t len, struct event_decoded *ret)
{
	struct event_decoded d = { 0 };
	struct json_object *root;
	int r;

	assert(json || !len);
	assert(ret);

	r = event_parse(json, len, &root);
	if (r < 0)
		return r;
	r = event_rotation_read(root, &d);
	json_object_put(root);
	if (r < 0) {
		event_decoded_clear(&d);
		return r;
	}

	*ret = d;
	event_decoded_link(ret);
	return 0;
}

static void event_key_clear(struct meta_key *k)
{
	free(k->tpm);
	free(k->name);
	free(k->spki);
	free(k->cert);
}

static void event_meta_clear(struct meta *m)
{
	size_t i;

	for (i = 0; i < META_MAX_EKS; i++)
		event_key_clear(&m->ek[i]);
	event_key_clear(&m->ak);
}

/* Free what event_rotation_decode() allocated in d and zero it; NULL is a no-op. */
void event_decoded_clear(struct event_decoded *d)
{
	if (!d)
		return;
	free(d->id);
	free(d->phase);
	free(d->reason);
	event_meta_clear(&d->old);
	event_meta_clear(&d->new);
	memset(d, 0, sizeof(*d));
}
