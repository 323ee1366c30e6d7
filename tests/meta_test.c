/*
 * Unit tests for pool/meta.c: the instance metadata file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "meta.h"

FIXTURE(meta_file) {
	bool have_dir;		/* dir was made and must be removed */
	char dir[64];
	char path[96];
};

FIXTURE_SETUP(meta_file)
{
	strcpy(self->dir, "/tmp/meta_test.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->dir));
	self->have_dir = true;
	snprintf(self->path, sizeof(self->path), "%s/meta", self->dir);
}

FIXTURE_TEARDOWN(meta_file)
{
	if (!self->have_dir)
		return;
	(void)unlink(self->path);
	(void)rmdir(self->dir);
}

static uint8_t *bytes(size_t len, uint8_t seed)
{
	uint8_t *p = malloc(len);

	for (size_t i = 0; p && i < len; i++)
		p[i] = (uint8_t)(seed + i * 37);

	return p;
}

static void fill_key(struct meta_key *k, enum meta_alg alg, uint32_t handle, size_t n,
		     bool is_ek)
{
	k->alg = alg;
	k->handle = handle;
	k->tpm = bytes(n, 1);
	k->tpm_len = n;
	k->name = bytes(34, 2);
	k->name_len = 34;
	k->spki = bytes(n + 1, 3);
	k->spki_len = n + 1;
	if (!is_ek)
		return;
	k->cert = bytes(n + 2, 4);
	k->cert_len = n + 2;
	k->cert_nv = 0x01c00002;
}

static void check_key(const struct meta_key *a, const struct meta_key *b)
{
	EXPECT_EQ(a->alg, b->alg);
	EXPECT_EQ(a->handle, b->handle);
	EXPECT_EQ(a->cert_nv, b->cert_nv);
	ASSERT_EQ(a->tpm_len, b->tpm_len);
	ASSERT_EQ(a->name_len, b->name_len);
	ASSERT_EQ(a->spki_len, b->spki_len);
	ASSERT_EQ(a->cert_len, b->cert_len);
	EXPECT_EQ(memcmp(a->tpm, b->tpm, a->tpm_len), 0);
	EXPECT_EQ(memcmp(a->name, b->name, a->name_len), 0);
	EXPECT_EQ(memcmp(a->spki, b->spki, a->spki_len), 0);
	if (a->cert_len)
		EXPECT_EQ(memcmp(a->cert, b->cert, a->cert_len), 0);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ASSERT_NE_NULL(f);
	fputs(text, f);
	ASSERT_EQ(fclose(f), 0);
}

TEST_F(meta_file, round_trips)
{
	struct meta m = { .created = 1700000000 };
	struct meta back;

	/* Lengths 58, 59 and 60 cover all three base64 padding cases. */
	strcpy(m.id, "inst-01_a.b");
	fill_key(&m.ek[0], META_ALG_RSA2048, 0x81010001, 58, true);
	fill_key(&m.ek[1], META_ALG_ECC_P256, 0x81010002, 59, true);
	m.ek[1].cert_nv = 0x01c0000a;
	m.n_ek = 2;
	fill_key(&m.ak, META_ALG_ECC_P256, 0x81008000, 60, false);

	ASSERT_EQ(meta_save(&m, self->path), 0);
	ASSERT_EQ(meta_load(self->path, &back), 0);
	EXPECT_STREQ(back.id, m.id);
	EXPECT_EQ(back.created, m.created);
	ASSERT_EQ(back.n_ek, 2);
	check_key(&back.ek[0], &m.ek[0]);
	check_key(&back.ek[1], &m.ek[1]);
	check_key(&back.ak, &m.ak);

	meta_clear(&back);
	meta_clear(&m);
}

TEST_F(meta_file, round_trips_without_ak)
{
	struct meta m = { .created = -5 };
	struct meta back;

	strcpy(m.id, "x");
	fill_key(&m.ek[0], META_ALG_ECC_P256, 0x81010002, 1, true);
	m.n_ek = 1;

	ASSERT_EQ(meta_save(&m, self->path), 0);
	ASSERT_EQ(meta_load(self->path, &back), 0);
	EXPECT_EQ(back.n_ek, 1);
	EXPECT_EQ(back.ak.alg, META_ALG_NONE);
	EXPECT_EQ(back.created, -5);
	check_key(&back.ek[0], &m.ek[0]);

	meta_clear(&back);
	meta_clear(&m);
}

TEST_F(meta_file, save_rejects_incomplete)
{
	struct meta m = { 0 };

	strcpy(m.id, "a");
	fill_key(&m.ek[0], META_ALG_RSA2048, 0x81010001, 8, false);
	m.n_ek = 1;
	EXPECT_EQ(meta_save(&m, self->path), -EINVAL);	/* EK without certificate */

	strcpy(m.id, "bad id");
	EXPECT_EQ(meta_save(&m, self->path), -EINVAL);
	EXPECT_EQ(access(self->path, F_OK), -1);

	meta_clear(&m);
}

#define GOOD_HEAD "version=1\nid=abc\ncreated=1\n"
#define GOOD_EK "ek.0.alg=rsa2048\nek.0.handle=0x81010001\nek.0.tpm=AAE=\n" \
	"ek.0.name=000b\nek.0.spki=AQID\nek.0.cert=AQ==\nek.0.cert_nv=0x01c00002\n"
#define GOOD_AK "ak.alg=ecc-p256\nak.handle=0x81008000\nak.tpm=AAE=\nak.name=000b\n" \
	"ak.spki=AQID\n"

TEST_F(meta_file, loads_minimal_text)
{
	struct meta m;

	write_text(self->path, GOOD_HEAD GOOD_EK GOOD_AK);
	ASSERT_EQ(meta_load(self->path, &m), 0);
	EXPECT_EQ(m.n_ek, 1);
	EXPECT_EQ(m.ek[0].tpm_len, 2);
	EXPECT_EQ(m.ek[0].spki_len, 3);
	EXPECT_EQ(m.ek[0].cert_len, 1);
	EXPECT_EQ(m.ak.alg, META_ALG_ECC_P256);
	meta_clear(&m);
}

TEST_F(meta_file, rejects_malformed)
{
	static const char *const bad[] = {
		"",
		GOOD_HEAD GOOD_EK "x=1\n",			/* unknown key */
		GOOD_HEAD GOOD_EK "id=abc\n",			/* duplicate key */
		GOOD_HEAD GOOD_EK "ek.0.alg=rsa2048\n",		/* duplicate key field */
		"version=2\nid=abc\ncreated=1\n" GOOD_EK,	/* unknown version */
		"id=abc\ncreated=1\n" GOOD_EK,			/* no version */
		"version=1\nid=a b\ncreated=1\n" GOOD_EK,	/* bad id */
		"version=1\nid=abc\ncreated=1x\n" GOOD_EK,	/* bad number */
		"version=1\nid=abc\ncreated= 1\n" GOOD_EK,
		GOOD_HEAD GOOD_EK "\n",				/* blank line */
		GOOD_HEAD "ek.0.alg=rsa2048\r\n",		/* CR */
		"version=1\nid=abc\ncreated=1",			/* no final newline */
		GOOD_HEAD GOOD_EK "ak.alg=ecc-p256\n",		/* incomplete AK */
		GOOD_HEAD GOOD_EK "ak.alg=none\n",		/* AK "none" spelled out */
		GOOD_HEAD GOOD_EK "ak.cert=AQ==\n",		/* AK has no certificate */
		GOOD_HEAD GOOD_EK "ek.2.alg=rsa2048\n",		/* index out of range */
		GOOD_HEAD "ek.1.alg=rsa2048\n",			/* ek.1 without ek.0 */
		GOOD_HEAD "ek.0.alg=dsa\n",			/* unknown algorithm */
		GOOD_HEAD "ek.0.handle=0x8101001\n",		/* short handle */
		GOOD_HEAD "ek.0.handle=0X81010001\n",
		GOOD_HEAD "ek.0.name=000B\n",			/* uppercase hex */
		GOOD_HEAD "ek.0.name=000\n",			/* odd hex */
		GOOD_HEAD "ek.0.tpm=AAE\n",			/* unpadded base64 */
		GOOD_HEAD "ek.0.tpm=AAF=\n",			/* non-canonical base64 */
		GOOD_HEAD "ek.0.tpm=A=AA\n",			/* padding inside */
		GOOD_HEAD "ek.0.tpm=AA*A\n",			/* bad character */
		GOOD_HEAD "ek.0.tpm=\n",			/* empty value */
		GOOD_HEAD "ek.0.alg\n",				/* no '=' */
		GOOD_HEAD "ek.0.alg=rsa2048\nek.0.handle=0x81010001\n",	/* incomplete EK */
	};
	struct meta m;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r;

		write_text(self->path, bad[i]);
		r = meta_load(self->path, &m);
		if (r == 0)
			meta_clear(&m);
		if (r != -EINVAL)
			TEST_LOG("case %zu accepted or wrong error: r=%d", i, r);
		EXPECT_EQ(r, -EINVAL);
	}
}

TEST_F(meta_file, missing_file_is_enoent)
{
	struct meta m;

	EXPECT_EQ(meta_load(self->path, &m), -ENOENT);
}

TEST(copy_is_deep)
{
	struct meta m = { .created = 1700000000 };
	struct meta c;

	strcpy(m.id, "inst-copy");
	fill_key(&m.ek[0], META_ALG_RSA2048, 0x81010001, 40, true);
	m.n_ek = 1;
	fill_key(&m.ak, META_ALG_ECC_P256, 0x81008000, 41, false);
	ASSERT_EQ(meta_copy(&m, &c), 0);
	EXPECT_STREQ(c.id, m.id);
	EXPECT_EQ(c.created, m.created);
	ASSERT_EQ(c.n_ek, 1);
	check_key(&c.ek[0], &m.ek[0]);
	check_key(&c.ak, &m.ak);
	EXPECT_NE(c.ek[0].tpm, m.ek[0].tpm);
	EXPECT_NE(c.ak.spki, m.ak.spki);
	EXPECT_NULL(c.ak.cert);
	meta_clear(&m);
	/* the copy stands alone once the original is gone */
	EXPECT_EQ(c.ek[0].handle, 0x81010001u);
	meta_clear(&c);
}

TEST(id_charset)
{
	char long_id[META_ID_MAX + 1];

	EXPECT_TRUE(meta_id_is_valid("a"));
	EXPECT_TRUE(meta_id_is_valid("inst-2024.01_x"));
	EXPECT_FALSE(meta_id_is_valid(""));
	EXPECT_FALSE(meta_id_is_valid(NULL));
	EXPECT_FALSE(meta_id_is_valid("a/b"));
	EXPECT_FALSE(meta_id_is_valid("a b"));
	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[META_ID_MAX] = '\0';
	EXPECT_FALSE(meta_id_is_valid(long_id));
	long_id[META_ID_MAX - 1] = '\0';
	EXPECT_TRUE(meta_id_is_valid(long_id));
}

TEST(alg_names_round_trip)
{
	enum meta_alg alg;

	for (int i = META_ALG_NONE; i <= META_ALG_ECC_P256; i++) {
		ASSERT_NE_NULL(meta_alg_name(i));
		ASSERT_EQ(meta_alg_parse(meta_alg_name(i), &alg), 0);
		EXPECT_EQ(alg, i);
	}
	EXPECT_EQ(meta_alg_parse("rsa", &alg), -EINVAL);
	EXPECT_NULL(meta_alg_name(42));
}

TEST_HARNESS_MAIN
