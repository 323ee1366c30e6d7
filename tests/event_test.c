/*
 * Unit tests for vtpmd/event.c: the rotation event's JSON, field by
 * field, and the strict decoder that reads it back.
 */
#include <errno.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "event.h"
#include "harness.h"
#include "meta.h"
#include "util.h"

/* 2026-12-03T18:24:00.123Z */
#define T_EVENT_MS INT64_C(1796322240123)
/* 2026-11-30T09:05:07Z and 2026-12-01T00:00:00Z */
#define T_OLD_CREATED INT64_C(1796029507)
#define T_NEW_CREATED INT64_C(1796083200)

static uint8_t *dup_bytes(const void *p, size_t len)
{
	uint8_t *b = malloc(len);

	if (b)
		memcpy(b, p, len);
	return b;
}

/*
 * A synthetic TPM2B: size field, then len - 2 bytes that cover every base64
 * digit.  noinline: GCC 12 at -O3 misreads the loop bound once inlined.
 */
__attribute__((noinline)) static uint8_t *make_tpm2b(size_t len, uint8_t seed)
{
	uint8_t *b = malloc(len);
	size_t i;

	if (!b)
		return NULL;
	b[0] = (uint8_t)((len - 2) >> 8);
	b[1] = (uint8_t)(len - 2);
	for (i = 2; i < len; i++)
		b[i] = (uint8_t)(seed + i * 37);
	return b;
}

static uint8_t *make_bytes(size_t len, uint8_t seed)
{
	uint8_t *b = malloc(len);
	size_t i;

	if (!b)
		return NULL;
	for (i = 0; i < len; i++)
		b[i] = (uint8_t)(seed ^ (i * 13));
	return b;
}

static void key_free(struct meta_key *k)
{
	free(k->tpm);
	free(k->name);
	free(k->spki);
	free(k->cert);
	memset(k, 0, sizeof(*k));
}

static void meta_free(struct meta *m)
{
	size_t i;

	for (i = 0; i < META_MAX_EKS; i++)
		key_free(&m->ek[i]);
	key_free(&m->ak);
}

static void make_ek(struct meta_key *k, enum meta_alg alg, uint32_t handle, uint32_t nv,
		    size_t tpm_len, uint8_t seed)
{
	k->alg = alg;
	k->handle = handle;
	k->tpm = make_tpm2b(tpm_len, seed);
	k->tpm_len = tpm_len;
	k->name = make_bytes(34, seed);
	k->name_len = 34;
	k->name[0] = 0x00;
	k->name[1] = 0x0b;
	k->cert = make_bytes(300 + seed, (uint8_t)(seed + 1));
	k->cert_len = 300 + seed;
	k->cert_nv = nv;
}

/* An identity with an RSA and an ECC EK and, if ak, the AK key pkey. */
static void make_meta(struct meta *m, const char *id, int64_t created, EVP_PKEY *ak, uint8_t seed)
{
	unsigned char *der = NULL;
	int n;

	memset(m, 0, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "%s", id);
	m->created = created;
	make_ek(&m->ek[0], META_ALG_RSA2048, 0x81010001, 0x01c00002, 316, seed);
	make_ek(&m->ek[1], META_ALG_ECC_P256, 0x81010002, 0x01c0000a, 90, (uint8_t)(seed + 7));
	m->n_ek = 2;
	if (!ak)
		return;
	m->ak.alg = META_ALG_ECC_P256;
	m->ak.handle = 0x81008000;
	m->ak.tpm = make_tpm2b(88, (uint8_t)(seed + 3));
	m->ak.tpm_len = 88;
	m->ak.name = make_bytes(34, (uint8_t)(seed + 5));
	m->ak.name_len = 34;
	n = i2d_PUBKEY(ak, &der);
	if (n > 0) {
		m->ak.spki = dup_bytes(der, (size_t)n);
		m->ak.spki_len = (size_t)n;
	}
	OPENSSL_free(der);
}

static char *hex(const uint8_t *b, size_t len)
{
	char *s = malloc(2 * len + 1);
	size_t i;

	for (i = 0; s && i < len; i++)
		sprintf(s + 2 * i, "%02x", b[i]);
	if (s)
		s[2 * len] = '\0';
	return s;
}

FIXTURE(event)
{
	EVP_PKEY *ak;
	struct meta old;
	struct meta new;
	struct event_rotation ev;
	char *json;			/* encoded ev */
	struct json_object *root;	/* json parsed back by json-c */
};

FIXTURE_SETUP(event)
{
	self->ak = EVP_EC_gen("P-256");
	ASSERT_NE_NULL(self->ak);
	make_meta(&self->old, "inst-old-0001", T_OLD_CREATED, self->ak, 1);
	make_meta(&self->new, "inst-new-0002", T_NEW_CREATED, self->ak, 2);
	ASSERT_NE_NULL(self->new.ak.spki);
	self->ev = (struct event_rotation){
		.id = "ev-5c1d-0007",
		.phase = "commit",
		.time_ms = T_EVENT_MS,
		.reason = "watermark",
		.old = &self->old,
		.new = &self->new,
		.commands = 123456,
		.quotes = 789,
		.rotations = 7,
	};
	ASSERT_EQ(event_rotation_encode(&self->ev, &self->json), 0);
	self->root = json_tokener_parse(self->json);
	ASSERT_NE_NULL(self->root);
}

FIXTURE_TEARDOWN(event)
{
	json_object_put(self->root);
	free(self->json);
	meta_free(&self->old);
	meta_free(&self->new);
	EVP_PKEY_free(self->ak);
}

static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static bool has_null(struct json_object *o, const char *key)
{
	struct json_object *v = (struct json_object *)1;

	return json_object_object_get_ex(o, key, &v) && !v;
}

static const char *str(struct json_object *o, const char *key)
{
	struct json_object *v = member(o, key);

	if (!v || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Exactly the members in names, no others. */
static bool has_exactly(struct json_object *o, const char *const *names, size_t n)
{
	size_t i;

	if (!json_object_is_type(o, json_type_object) || (size_t)json_object_object_length(o) != n)
		return false;
	for (i = 0; i < n; i++)
		if (!json_object_object_get_ex(o, names[i], NULL))
			return false;
	return true;
}

/* Decode base64 the way a verifier would (OpenSSL, strict length). */
static bool b64_equals(const char *s, const uint8_t *want, size_t want_len)
{
	size_t len = s ? strlen(s) : 0;
	uint8_t *buf;
	size_t pad;
	bool ok;
	int n;

	if (!s || len % 4)
		return false;
	buf = malloc(len / 4 * 3 + 1);
	n = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)len);
	pad = (len && s[len - 1] == '=') + (len > 1 && s[len - 2] == '=');
	ok = n >= 0 && (size_t)n - pad == want_len && memcmp(buf, want, want_len) == 0;
	free(buf);
	return ok;
}

static bool hex_equals(const char *s, const uint8_t *want, size_t len)
{
	char *h = hex(want, len);
	bool ok = s && h && strcmp(s, h) == 0;

	free(h);
	return ok;
}

static bool matches(const char *s, const char *pattern)
{
	regex_t re;
	bool ok;

	if (!s || regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB))
		return false;
	ok = regexec(&re, s, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

#define RFC3339_MS "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"
#define RFC3339_S "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"

TEST_F(event, top_level_fields)
{
	static const char *const names[] = {
		"event", "phase", "id", "time", "reason", "counters", "old", "new",
	};
	static const char *const cnames[] = { "commands", "quotes", "rotations" };
	struct json_object *c;

	ASSERT_TRUE(has_exactly(self->root, names, ARRAY_SIZE(names)));
	EXPECT_STREQ(str(self->root, "event"), "rotation");
	EXPECT_STREQ(str(self->root, "phase"), "commit");
	EXPECT_STREQ(str(self->root, "id"), "ev-5c1d-0007");
	EXPECT_STREQ(str(self->root, "time"), "2026-12-03T18:24:00.123Z");
	EXPECT_STREQ(str(self->root, "reason"), "watermark");
	c = member(self->root, "counters");
	ASSERT_TRUE(has_exactly(c, cnames, ARRAY_SIZE(cnames)));
	EXPECT_TRUE(json_object_is_type(member(c, "commands"), json_type_int));
	EXPECT_TRUE(json_object_is_type(member(c, "quotes"), json_type_int));
	EXPECT_TRUE(json_object_is_type(member(c, "rotations"), json_type_int));
	EXPECT_EQ(json_object_get_int64(member(c, "commands")), 123456);
	EXPECT_EQ(json_object_get_int64(member(c, "quotes")), 789);
	EXPECT_EQ(json_object_get_int64(member(c, "rotations")), 7);
	EXPECT_EQ(strchr(self->json, '\n'), NULL);
	EXPECT_EQ(strstr(self->json, "\\/"), NULL);
}

static void check_identity(struct json_object *o, const struct meta *m, const char *created)
{
	static const char *const names[] = {
		"instance", "created", "ek_tpm", "ek_cert", "eks",
		"aik_tpm", "ak_pem", "ak_handle", "ak_name",
	};

	ASSERT_TRUE(has_exactly(o, names, ARRAY_SIZE(names)));
	EXPECT_STREQ(str(o, "instance"), m->id);
	EXPECT_STREQ(str(o, "created"), created);
	EXPECT_TRUE(b64_equals(str(o, "ek_tpm"), m->ek[0].tpm, m->ek[0].tpm_len));
	EXPECT_TRUE(b64_equals(str(o, "ek_cert"), m->ek[0].cert, m->ek[0].cert_len));
	EXPECT_TRUE(b64_equals(str(o, "aik_tpm"), m->ak.tpm, m->ak.tpm_len));
	EXPECT_STREQ(str(o, "ak_handle"), "0x81008000");
	EXPECT_TRUE(hex_equals(str(o, "ak_name"), m->ak.name, m->ak.name_len));
	EXPECT_TRUE(matches(str(o, "ak_pem"), "^-----BEGIN PUBLIC KEY-----\n"));
}

TEST_F(event, identity_fields)
{
	check_identity(member(self->root, "new"), &self->new, "2026-12-01T00:00:00Z");
	check_identity(member(self->root, "old"), &self->old, "2026-11-30T09:05:07Z");
}

TEST_F(event, eks_array)
{
	static const char *const names[] = { "alg", "handle", "tpm", "cert", "cert_nv", "name" };
	static const char *const algs[] = { "rsa2048", "ecc-p256" };
	static const char *const handles[] = { "0x81010001", "0x81010002" };
	static const char *const nvs[] = { "0x01c00002", "0x01c0000a" };
	struct json_object *eks = member(member(self->root, "new"), "eks");
	struct json_object *e;
	const struct meta_key *k;
	size_t i;

	ASSERT_TRUE(json_object_is_type(eks, json_type_array));
	ASSERT_EQ(json_object_array_length(eks), 2);
	for (i = 0; i < 2; i++) {
		e = json_object_array_get_idx(eks, i);
		k = &self->new.ek[i];
		ASSERT_TRUE(has_exactly(e, names, ARRAY_SIZE(names)));
		EXPECT_STREQ(str(e, "alg"), algs[i]);
		EXPECT_STREQ(str(e, "handle"), handles[i]);
		EXPECT_STREQ(str(e, "cert_nv"), nvs[i]);
		EXPECT_TRUE(b64_equals(str(e, "tpm"), k->tpm, k->tpm_len));
		EXPECT_TRUE(b64_equals(str(e, "cert"), k->cert, k->cert_len));
		EXPECT_TRUE(hex_equals(str(e, "name"), k->name, k->name_len));
	}
}

TEST_F(event, times_are_rfc3339_utc)
{
	char *json = NULL;
	struct json_object *root;

	EXPECT_TRUE(matches(str(self->root, "time"), RFC3339_MS));
	EXPECT_TRUE(matches(str(member(self->root, "new"), "created"), RFC3339_S));

	/* Milliseconds keep their leading zeros; the epoch itself is fine. */
	self->ev.time_ms = 5;
	self->new.created = 0;
	ASSERT_EQ(event_rotation_encode(&self->ev, &json), 0);
	root = json_tokener_parse(json);
	EXPECT_STREQ(str(root, "time"), "1970-01-01T00:00:00.005Z");
	EXPECT_STREQ(str(member(root, "new"), "created"), "1970-01-01T00:00:00Z");
	json_object_put(root);
	free(json);
}

TEST_F(event, base64_is_standard_padded_one_line)
{
	size_t len;
	const char *s;
	char *json;
	struct json_object *root;

	/* Three lengths mod 3: no padding, "==", "=". */
	for (len = 30; len < 33; len++) {
		free(self->new.ek[0].tpm);
		self->new.ek[0].tpm = make_tpm2b(len, (uint8_t)len);
		self->new.ek[0].tpm_len = len;
		json = NULL;
		ASSERT_EQ(event_rotation_encode(&self->ev, &json), 0);
		root = json_tokener_parse(json);
		s = str(member(root, "new"), "ek_tpm");
		EXPECT_TRUE(matches(s, "^[A-Za-z0-9+/]*={0,2}$"));
		EXPECT_EQ(strlen(s), 4 * ((len + 2) / 3));
		EXPECT_TRUE(b64_equals(s, self->new.ek[0].tpm, len));
		json_object_put(root);
		free(json);
	}
}

TEST_F(event, ak_pem_is_the_key)
{
	const char *pem = str(member(self->root, "new"), "ak_pem");
	char *alone = NULL;
	EVP_PKEY *k;
	BIO *bio;

	ASSERT_NE_NULL(pem);
	EXPECT_TRUE(matches(pem, "^-----BEGIN PUBLIC KEY-----\n([A-Za-z0-9+/=]{64}\n)*"
				 "[A-Za-z0-9+/=]{1,64}\n-----END PUBLIC KEY-----\n$"));
	bio = BIO_new_mem_buf(pem, -1);
	k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	ASSERT_NE_NULL(k);
	EXPECT_EQ(EVP_PKEY_eq(k, self->ak), 1);
	EVP_PKEY_free(k);

	ASSERT_EQ(event_ak_pem(&self->new.ak, &alone), 0);
	EXPECT_STREQ(alone, pem);
	free(alone);
}

TEST_F(event, rsa_ak_pem)
{
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	unsigned char *der = NULL;
	struct meta_key k = { .alg = META_ALG_RSA2048 };
	char *pem = NULL;
	int n;

	ASSERT_NE_NULL(rsa);
	n = i2d_PUBKEY(rsa, &der);
	ASSERT_GT(n, 0);
	k.spki = der;
	k.spki_len = (size_t)n;
	EXPECT_EQ(event_ak_pem(&k, &pem), 0);
	EXPECT_TRUE(matches(pem, "^-----BEGIN PUBLIC KEY-----\n"));
	free(pem);
	k.alg = META_ALG_ECC_P256;
	pem = NULL;
	EXPECT_EQ(event_ak_pem(&k, &pem), -EINVAL);
	EXPECT_NULL(pem);
	OPENSSL_free(der);
	EVP_PKEY_free(rsa);
}

TEST_F(event, first_activation_has_null_old)
{
	char *json = NULL;
	struct json_object *root;

	self->ev.old = NULL;
	self->ev.reason = "start";
	ASSERT_EQ(event_rotation_encode(&self->ev, &json), 0);
	root = json_tokener_parse(json);
	ASSERT_NE_NULL(root);
	EXPECT_TRUE(has_null(root, "old"));
	EXPECT_TRUE(json_object_is_type(member(root, "new"), json_type_object));
	json_object_put(root);
	free(json);
}

TEST_F(event, no_ak_gives_nulls)
{
	char *json = NULL;
	struct json_object *root;
	struct json_object *n;

	key_free(&self->new.ak);
	ASSERT_EQ(event_rotation_encode(&self->ev, &json), 0);
	root = json_tokener_parse(json);
	n = member(root, "new");
	EXPECT_TRUE(has_null(n, "aik_tpm"));
	EXPECT_TRUE(has_null(n, "ak_pem"));
	EXPECT_TRUE(has_null(n, "ak_handle"));
	EXPECT_TRUE(has_null(n, "ak_name"));
	EXPECT_NE_NULL(str(n, "ek_tpm"));
	json_object_put(root);
	free(json);
}

TEST_F(event, no_cert_gives_nulls)
{
	char *json = NULL;
	struct json_object *root;
	struct json_object *n;

	free(self->new.ek[0].cert);
	self->new.ek[0].cert = NULL;
	self->new.ek[0].cert_len = 0;
	self->new.ek[0].cert_nv = 0;
	ASSERT_EQ(event_rotation_encode(&self->ev, &json), 0);
	root = json_tokener_parse(json);
	n = member(root, "new");
	EXPECT_TRUE(has_null(n, "ek_cert"));
	EXPECT_TRUE(has_null(json_object_array_get_idx(member(n, "eks"), 0), "cert"));
	EXPECT_TRUE(has_null(json_object_array_get_idx(member(n, "eks"), 0), "cert_nv"));
	json_object_put(root);
	free(json);
}

TEST_F(event, malformed_spki_is_einval)
{
	uint8_t *good = self->new.ak.spki;
	size_t good_len = self->new.ak.spki_len;
	uint8_t garbage[] = { 0x30, 0x03, 0x02, 0x01, 0x00 };
	uint8_t *trailing = malloc(good_len + 1);
	char *out = (char *)"untouched";

	memcpy(trailing, good, good_len);
	trailing[good_len] = 0;

	self->new.ak.spki_len = good_len - 1;	/* truncated */
	EXPECT_EQ(event_ak_pem(&self->new.ak, &out), -EINVAL);
	EXPECT_EQ(event_rotation_encode(&self->ev, &out), -EINVAL);
	self->new.ak.spki = garbage;
	self->new.ak.spki_len = sizeof(garbage);
	EXPECT_EQ(event_ak_pem(&self->new.ak, &out), -EINVAL);
	self->new.ak.spki = trailing;
	self->new.ak.spki_len = good_len + 1;
	EXPECT_EQ(event_ak_pem(&self->new.ak, &out), -EINVAL);
	self->new.ak.spki = NULL;
	EXPECT_EQ(event_ak_pem(&self->new.ak, &out), -EINVAL);
	self->new.ak.spki = good;
	self->new.ak.spki_len = good_len;
	self->new.ak.alg = META_ALG_RSA2048;	/* an EC key is not an RSA AK */
	EXPECT_EQ(event_ak_pem(&self->new.ak, &out), -EINVAL);
	EXPECT_EQ(event_rotation_encode(&self->ev, &out), -EINVAL);
	EXPECT_STREQ(out, "untouched");
	free(trailing);
}

TEST_F(event, encode_rejects_inconsistent_input)
{
	struct event_rotation e = self->ev;
	char *out = (char *)"untouched";
	uint8_t saved;

	e.phase = "rollback";
	EXPECT_EQ(event_rotation_encode(&e, &out), -EINVAL);
	e = self->ev;
	e.id = "";
	EXPECT_EQ(event_rotation_encode(&e, &out), -EINVAL);
	e = self->ev;
	e.reason = "two words\n";
	EXPECT_EQ(event_rotation_encode(&e, &out), -EINVAL);
	e = self->ev;
	e.quotes = EVENT_COUNTER_MAX + 1;
	EXPECT_EQ(event_rotation_encode(&e, &out), -EINVAL);
	e = self->ev;
	e.time_ms = -1;
	EXPECT_EQ(event_rotation_encode(&e, &out), -EINVAL);
	e = self->ev;
	e.new = NULL;
	EXPECT_EQ(event_rotation_encode(&e, &out), -EINVAL);

	self->new.n_ek = 0;
	EXPECT_EQ(event_rotation_encode(&self->ev, &out), -EINVAL);
	self->new.n_ek = 2;
	saved = self->new.ek[1].tpm[1];
	self->new.ek[1].tpm[1] ^= 1;	/* TPM2B size no longer matches */
	EXPECT_EQ(event_rotation_encode(&self->ev, &out), -EINVAL);
	self->new.ek[1].tpm[1] = saved;
	self->new.ek[1].handle = 0x01010002;	/* not a persistent handle */
	EXPECT_EQ(event_rotation_encode(&self->ev, &out), -EINVAL);
	self->new.ek[1].handle = 0x81010002;
	self->old.id[0] = '\0';
	EXPECT_EQ(event_rotation_encode(&self->ev, &out), -EINVAL);
	EXPECT_STREQ(out, "untouched");
}

/* Expect -EINVAL, naming the case in the log when it was not. */
static void expect_einval(int r, const char *what, const char *value)
{
	if (r != -EINVAL)
		TEST_LOG("%s \"%s\": got %d", what, value, r);
	EXPECT_EQ(r, -EINVAL);
}

/* decode(json) must succeed and encode back to exactly json. */
static void check_round_trip(const char *json)
{
	struct event_decoded d;
	char *again = NULL;

	ASSERT_EQ(event_rotation_decode(json, strlen(json), &d), 0);
	ASSERT_EQ(event_rotation_encode(&d.ev, &again), 0);
	EXPECT_STREQ(again, json);
	free(again);
	event_decoded_clear(&d);
}

TEST_F(event, decode_accepts_what_encode_made)
{
	struct event_decoded d;
	char *json = NULL;

	ASSERT_EQ(event_rotation_decode(self->json, strlen(self->json), &d), 0);
	EXPECT_STREQ(d.ev.id, self->ev.id);
	EXPECT_STREQ(d.ev.phase, "commit");
	EXPECT_STREQ(d.ev.reason, "watermark");
	EXPECT_EQ(d.ev.time_ms, T_EVENT_MS);
	EXPECT_EQ(d.ev.commands, 123456);
	EXPECT_EQ(d.ev.quotes, 789);
	EXPECT_EQ(d.ev.rotations, 7);
	ASSERT_EQ(d.ev.old, &d.old);
	ASSERT_EQ(d.ev.new, &d.new);
	EXPECT_STREQ(d.new.id, "inst-new-0002");
	EXPECT_EQ(d.new.created, T_NEW_CREATED);
	EXPECT_EQ(d.old.created, T_OLD_CREATED);
	EXPECT_EQ(d.new.n_ek, 2);
	EXPECT_EQ(d.new.ek[1].alg, META_ALG_ECC_P256);
	EXPECT_EQ(d.new.ek[1].cert_nv, 0x01c0000a);
	EXPECT_EQ(d.new.ak.alg, META_ALG_ECC_P256);
	EXPECT_EQ(d.new.ak.handle, 0x81008000);
	ASSERT_EQ(d.new.ak.spki_len, self->new.ak.spki_len);
	EXPECT_EQ(memcmp(d.new.ak.spki, self->new.ak.spki, d.new.ak.spki_len), 0);
	ASSERT_EQ(d.new.ek[0].tpm_len, self->new.ek[0].tpm_len);
	EXPECT_EQ(memcmp(d.new.ek[0].tpm, self->new.ek[0].tpm, d.new.ek[0].tpm_len), 0);
	event_decoded_clear(&d);
	event_decoded_clear(&d);	/* cleared twice, and NULL, are no-ops */
	event_decoded_clear(NULL);

	check_round_trip(self->json);
	self->ev.old = NULL;
	key_free(&self->new.ak);
	self->new.n_ek = 1;
	self->ev.phase = "prepare";
	ASSERT_EQ(event_rotation_encode(&self->ev, &json), 0);
	check_round_trip(json);
	free(json);
}

TEST_F(event, decode_allows_trailing_white_space_only)
{
	size_t len = strlen(self->json);
	char *buf = malloc(len + 3);
	struct event_decoded d;

	memcpy(buf, self->json, len);
	memcpy(buf + len, " \n", 3);
	ASSERT_EQ(event_rotation_decode(buf, len + 2, &d), 0);
	event_decoded_clear(&d);
	buf[len + 1] = 'x';
	EXPECT_EQ(event_rotation_decode(buf, len + 2, &d), -EINVAL);
	memcpy(buf + len, "{}", 2);
	EXPECT_EQ(event_rotation_decode(buf, len + 2, &d), -EINVAL);
	buf[len] = '\0';	/* a NUL byte inside the given length */
	EXPECT_EQ(event_rotation_decode(buf, len + 1, &d), -EINVAL);
	free(buf);
}

TEST(decode_rejects_non_json)
{
	static const char *const bad[] = {
		"", " ", "not json", "null", "[]", "{}", "\"rotation\"", "42", "{\"event\":",
		"{'event':'rotation'}", "{\"event\":\"rotation\",}", "\xff\xfe",
	};
	struct event_decoded d = { .id = (char *)"untouched" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad); i++)
		expect_einval(event_rotation_decode(bad[i], strlen(bad[i]), &d), "input", bad[i]);
	EXPECT_STREQ(d.id, "untouched");
}

TEST_F(event, decode_rejects_every_truncation)
{
	size_t len = strlen(self->json);
	struct event_decoded d;
	size_t i;
	int bad = 0;

	for (i = 0; i < len; i++)
		if (event_rotation_decode(self->json, i, &d) != -EINVAL)
			bad++;
	EXPECT_EQ(bad, 0);
}

TEST_F(event, decode_rejects_oversized_and_deep_input)
{
	size_t n = EVENT_JSON_MAX + 2;
	char *big = malloc(n);
	struct event_decoded d;
	size_t i;

	/* Valid JSON padded with white space beyond the limit. */
	memset(big, ' ', n);
	memcpy(big, self->json, strlen(self->json));
	EXPECT_EQ(event_rotation_decode(big, n, &d), -EINVAL);
	for (i = 0; i < 1000; i++)
		big[i] = '[';
	EXPECT_EQ(event_rotation_decode(big, 1000, &d), -EINVAL);
	free(big);
}

/*
 * Decode self->json with the member at path (dot separated, array indices
 * as numbers) replaced by v, or deleted when del.  v is consumed.
 */
static int decode_mutated(const char *json, const char *path, struct json_object *v, bool del)
{
	struct json_object *root = json_tokener_parse(json);
	struct json_object *o = root;
	char *p = strdup(path);
	char *key = p;
	char *dot;
	struct event_decoded d;
	int r;

	while ((dot = strchr(key, '.'))) {
		*dot = '\0';
		if (json_object_is_type(o, json_type_array))
			o = json_object_array_get_idx(o, (size_t)atoi(key));
		else
			o = member(o, key);
		key = dot + 1;
	}
	if (json_object_is_type(o, json_type_array))
		json_object_array_put_idx(o, (size_t)atoi(key), v);
	else if (del)
		json_object_object_del(o, key);
	else
		json_object_object_add(o, key, v);
	json = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	r = event_rotation_decode(json, strlen(json), &d);
	if (r == 0)
		event_decoded_clear(&d);
	json_object_put(root);
	free(p);
	return r;
}

static int decode_with_str(const char *json, const char *path, const char *s)
{
	return decode_mutated(json, path, json_object_new_string(s), false);
}

/* Every member of every object, recursively, as a dot path. */
static void collect_paths(struct json_object *o, const char *prefix, char paths[][64], size_t *n)
{
	struct json_object_iterator it, end;
	char path[64];
	size_t i;

	if (json_object_is_type(o, json_type_array)) {
		for (i = 0; i < json_object_array_length(o); i++) {
			snprintf(path, sizeof(path), "%s%zu", prefix, i);
			strcat(path, ".");
			collect_paths(json_object_array_get_idx(o, i), path, paths, n);
		}
		return;
	}
	if (!json_object_is_type(o, json_type_object))
		return;
	/* The iterator, not json_object_object_foreach(): that macro is a
	 * GNU statement expression, which clang warns about. */
	it = json_object_iter_begin(o);
	end = json_object_iter_end(o);
	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
		const char *key = json_object_iter_peek_name(&it);

		if (*n == 128)
			return;
		snprintf(paths[(*n)++], 64, "%s%s", prefix, key);
		snprintf(path, sizeof(path), "%s%s.", prefix, key);
		collect_paths(json_object_iter_peek_value(&it), path, paths, n);
	}
}

TEST_F(event, decode_rejects_missing_and_unknown_members)
{
	static char paths[128][64];
	char extra[80];
	const char *dot;
	size_t n = 0;
	size_t i;
	int r;

	collect_paths(self->root, "", paths, &n);
	ASSERT_GT(n, 50);
	for (i = 0; i < n; i++) {
		r = decode_mutated(self->json, paths[i], NULL, true);
		expect_einval(r, "missing", paths[i]);

		/* An unknown member beside it. */
		dot = strrchr(paths[i], '.');
		snprintf(extra, sizeof(extra), "%.*sx_extra", dot ? (int)(dot - paths[i] + 1) : 0,
			 paths[i]);
		r = decode_mutated(self->json, extra, json_object_new_int(1), false);
		expect_einval(r, "extra", extra);
	}
}

TEST_F(event, decode_rejects_wrong_types)
{
	static const char *const strings[] = {
		"event", "phase", "id", "time", "reason", "new.instance", "new.created",
		"new.ek_tpm", "new.ek_cert", "new.aik_tpm", "new.ak_pem", "new.ak_handle",
		"new.ak_name", "new.eks.0.alg", "new.eks.0.handle", "new.eks.0.tpm",
		"new.eks.0.cert", "new.eks.0.cert_nv", "new.eks.1.name", "old.instance",
	};
	static const char *const numbers[] = {
		"counters.commands", "counters.quotes", "counters.rotations",
	};
	static const char *const objects[] = { "counters", "old", "new", "new.eks", "new.eks.0" };
	size_t i;
	int r;

	for (i = 0; i < ARRAY_SIZE(strings); i++) {
		expect_einval(decode_mutated(self->json, strings[i], json_object_new_int(1), false),
			      "number for", strings[i]);
		EXPECT_EQ(decode_mutated(self->json, strings[i], json_object_new_boolean(1), false),
			  -EINVAL);
		EXPECT_EQ(decode_mutated(self->json, strings[i], json_object_new_array(), false),
			  -EINVAL);
	}
	for (i = 0; i < ARRAY_SIZE(numbers); i++) {
		EXPECT_EQ(decode_with_str(self->json, numbers[i], "1"), -EINVAL);
		EXPECT_EQ(decode_mutated(self->json, numbers[i], NULL, false), -EINVAL);
		r = decode_mutated(self->json, numbers[i], json_object_new_double(1.5), false);
		EXPECT_EQ(r, -EINVAL);
		EXPECT_EQ(decode_mutated(self->json, numbers[i], json_object_new_boolean(1), false),
			  -EINVAL);
	}
	for (i = 0; i < ARRAY_SIZE(objects); i++)
		EXPECT_EQ(decode_with_str(self->json, objects[i], "{}"), -EINVAL);

	/* The mutation itself keeps a valid event valid. */
	EXPECT_EQ(decode_with_str(self->json, "reason", "exhaustion"), 0);
	EXPECT_EQ(decode_with_str(self->json, "new.eks.1.cert_nv", "0x01c00012"), 0);
	EXPECT_EQ(decode_mutated(self->json, "old", NULL, false), 0);
	EXPECT_EQ(decode_mutated(self->json, "new.eks.1.cert", NULL, false), 0);

	/* Only old and the nullable identity members may be null. */
	EXPECT_EQ(decode_mutated(self->json, "new", NULL, false), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "counters", NULL, false), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "new.ek_tpm", NULL, false), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "new.eks.0.tpm", NULL, false), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "new.eks.0.name", NULL, false), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "new.instance", NULL, false), -EINVAL);
}

TEST_F(event, decode_rejects_bad_base64)
{
	static const char *const bad[] = {
		"", "AAA", "A===", "====", "QUFB QUFB", "QUFB\nQUFB", "QUF*", "QUF-", "QR==",
		"QUFBQQ=", " QUFB", "QUFB ", "QU=B",
	};
	static const char *const paths[] = {
		"new.ek_tpm", "new.ek_cert", "new.eks.1.tpm", "new.eks.1.cert", "new.aik_tpm",
	};
	size_t i;
	size_t j;

	for (i = 0; i < ARRAY_SIZE(paths); i++)
		for (j = 0; j < ARRAY_SIZE(bad); j++)
			expect_einval(decode_with_str(self->json, paths[i], bad[j]), paths[i],
				      bad[j]);
}

TEST_F(event, decode_rejects_bad_hex_handles_and_times)
{
	static const char *const names[] = { "", "0", "0G", "000B", "00 0b", "0x000b" };
	static const char *const handles[] = {
		"81010001", "0x8101001", "0X81010001", "0x81010001 ", "0x8101000g", "0x0181000a",
		"0xA1010001", "",
	};
	static const char *const times[] = {
		"2026-12-03T18:24:00Z", "2026-12-03T18:24:00.1234Z", "2026-12-03 18:24:00.123Z",
		"2026-12-03T18:24:00.123+00:00", "2026-12-03T18:24:00.123z",
		"2026-02-30T18:24:00.123Z",
		"2026-12-03T24:00:00.123Z", "2026-12-3T18:24:00.123Z", "+026-12-03T18:24:00.123Z",
		"1969-12-31T23:59:59.999Z", "2026-12-03T18:24:00.-12Z", "",
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(names); i++)
		EXPECT_EQ(decode_with_str(self->json, "new.eks.0.name", names[i]), -EINVAL);
	EXPECT_EQ(decode_with_str(self->json, "new.ak_name", "ABCD"), -EINVAL);
	for (i = 0; i < ARRAY_SIZE(handles); i++) {
		EXPECT_EQ(decode_with_str(self->json, "new.eks.0.handle", handles[i]), -EINVAL);
		EXPECT_EQ(decode_with_str(self->json, "new.ak_handle", handles[i]), -EINVAL);
	}
	EXPECT_EQ(decode_with_str(self->json, "new.eks.0.cert_nv", "0x81010001"), -EINVAL);
	for (i = 0; i < ARRAY_SIZE(times); i++)
		expect_einval(decode_with_str(self->json, "time", times[i]), "time", times[i]);
	EXPECT_EQ(decode_with_str(self->json, "new.created", "2026-12-01T00:00:00.000Z"), -EINVAL);
	EXPECT_EQ(decode_with_str(self->json, "time", "2024-02-29T00:00:00.000Z"), 0);
}

TEST_F(event, decode_rejects_huge_and_odd_numbers)
{
	static const char *const bad[] = {
		"9007199254740992", "18446744073709551615", "18446744073709551616",
		"99999999999999999999999999", "-1", "1.0", "1e3", "-0.0",
	};
	const char *at = strstr(self->json, "\"quotes\":789");
	size_t len = strlen(self->json) + 64;
	char *json = malloc(len);
	struct event_decoded d;
	size_t i;

	ASSERT_NE_NULL(at);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(json, len, "%.*s\"quotes\":%s%s", (int)(at - self->json), self->json,
			 bad[i], at + strlen("\"quotes\":789"));
		expect_einval(event_rotation_decode(json, strlen(json), &d), "quotes", bad[i]);
	}
	snprintf(json, len, "%.*s\"quotes\":9007199254740991%s", (int)(at - self->json),
		 self->json, at + strlen("\"quotes\":789"));
	ASSERT_EQ(event_rotation_decode(json, strlen(json), &d), 0);
	EXPECT_EQ(d.ev.quotes, EVENT_COUNTER_MAX);
	event_decoded_clear(&d);
	free(json);
}

TEST_F(event, decode_rejects_inconsistent_events)
{
	struct json_object *old_eks = member(member(self->root, "new"), "eks");
	struct json_object *ek0 = json_object_array_get_idx(old_eks, 0);
	struct json_object *ek1 = json_object_array_get_idx(old_eks, 1);
	struct json_object *eks = json_object_new_array();
	char long_id[META_ID_MAX + 1];

	EXPECT_EQ(decode_with_str(self->json, "event", "reboot"), -EINVAL);
	EXPECT_EQ(decode_with_str(self->json, "phase", "rollback"), -EINVAL);
	EXPECT_EQ(decode_with_str(self->json, "id", ""), -EINVAL);
	EXPECT_EQ(decode_with_str(self->json, "id", "a\nb"), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "id", json_object_new_string_len("a\0b", 3), false),
		  -EINVAL);
	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	EXPECT_EQ(decode_with_str(self->json, "new.instance", long_id), -EINVAL);
	EXPECT_EQ(decode_with_str(self->json, "new.eks.0.alg", "rsa4096"), -EINVAL);
	EXPECT_EQ(decode_with_str(self->json, "new.eks.0.alg", "none"), -EINVAL);
	/* ek_tpm and ek_cert must repeat eks[0]. */
	EXPECT_EQ(decode_with_str(self->json, "new.ek_tpm", str(ek1, "tpm")), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "new.ek_cert", NULL, false), -EINVAL);
	/* The TPM2B size must match. */
	EXPECT_EQ(decode_with_str(self->json, "new.aik_tpm", "AAUC"), -EINVAL);
	/* One to two EKs. */
	EXPECT_EQ(decode_mutated(self->json, "new.eks", eks, false), -EINVAL);
	eks = json_object_new_array();
	json_object_array_add(eks, json_object_get(ek0));
	json_object_array_add(eks, json_object_get(ek0));
	json_object_array_add(eks, json_object_get(ek1));
	EXPECT_EQ(decode_mutated(self->json, "new.eks", eks, false), -EINVAL);
	/* The AK is all or nothing. */
	EXPECT_EQ(decode_mutated(self->json, "new.ak_pem", NULL, false), -EINVAL);
	EXPECT_EQ(decode_mutated(self->json, "new.ak_name", NULL, false), -EINVAL);
}

TEST_F(event, decode_rejects_bad_pem)
{
	const char *pem = str(member(self->root, "new"), "ak_pem");
	size_t len = strlen(pem);
	char *s = malloc(len + 8);
	EVP_PKEY *rsa;
	BIO *bio;
	char *data;
	long n;

	EXPECT_EQ(decode_with_str(self->json, "new.ak_pem", "garbage"), -EINVAL);
	snprintf(s, len + 8, "%.*s", (int)len - 1, pem);	/* no final newline */
	EXPECT_EQ(decode_with_str(self->json, "new.ak_pem", s), -EINVAL);
	snprintf(s, len + 8, "%s\n", pem);			/* an extra one */
	EXPECT_EQ(decode_with_str(self->json, "new.ak_pem", s), -EINVAL);
	snprintf(s, len + 8, "%s", pem);
	memcpy(s + 11, "RSA ", 4);				/* another PEM label */
	EXPECT_EQ(decode_with_str(self->json, "new.ak_pem", s), -EINVAL);
	free(s);

	/* A well-formed key of another algorithm than an AK can have. */
	rsa = EVP_RSA_gen(1024);
	ASSERT_NE_NULL(rsa);
	bio = BIO_new(BIO_s_mem());
	PEM_write_bio_PUBKEY(bio, rsa);
	n = BIO_get_mem_data(bio, &data);
	s = strndup(data, (size_t)n);
	EXPECT_EQ(decode_with_str(self->json, "new.ak_pem", s), -EINVAL);
	free(s);
	BIO_free(bio);
	EVP_PKEY_free(rsa);
}

TEST_HARNESS_MAIN
