/*
 * Unit tests for vtpmd/conf.c: the config file (STYLE.md section 9).
 * Everything but conf_load_file() is parsed from buffers; every error
 * test checks the whole "name:line: message" diagnostic.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "conf.h"
#include "harness.h"
#include "util.h"

#define MIN_CONF "[vtpmd]\nstate_dir = /var/lib/vtpmd\nmountpoint = /run/vtpm\n"
/* A hook's section line when it follows MIN_CONF. */
#define HOOK_LINE 4

static int parse(struct conf **c, char *err, const char *text)
{
	conf_free(*c);
	*c = NULL;
	return conf_load_buffer("t.conf", text, strlen(text), c, err, CONF_ERR_MAX);
}

FIXTURE(conf) {
	struct conf *c;
	char err[CONF_ERR_MAX];
};

FIXTURE_SETUP(conf)
{
}

FIXTURE_TEARDOWN(conf)
{
	conf_free(self->c);
}

/* Parse text and require success. */
#define LOAD_OK(text) do { \
	int r_ = parse(&self->c, self->err, text); \
	if (r_ < 0) \
		TEST_LOG("unexpected error: %s", self->err); \
	ASSERT_EQ(r_, 0); \
	ASSERT_NE_NULL(self->c); \
} while (0)

/* Parse text and require -EINVAL with exactly this diagnostic. */
#define LOAD_ERR(text, msg) do { \
	ASSERT_EQ(parse(&self->c, self->err, text), -EINVAL); \
	ASSERT_NULL(self->c); \
	ASSERT_STREQ(self->err, msg); \
} while (0)

static gid_t default_gid(void)
{
	struct group *g = getgrnam("tss");

	return g ? g->gr_gid : 0;
}

/* ---- defaults and a full file ---- */

TEST_F(conf, minimal_gets_every_default)
{
	struct conf *c;

	LOAD_OK(MIN_CONF);
	c = self->c;
	EXPECT_STREQ(c->state_dir, "/var/lib/vtpmd");
	EXPECT_STREQ(c->mountpoint, "/run/vtpm");
	EXPECT_EQ(c->log_level, LOG_INFO);
	EXPECT_FALSE(c->allow_other);
	EXPECT_EQ(c->dev_uid, 0);
	EXPECT_EQ(c->dev_gid, default_gid());
	EXPECT_EQ(c->dev_mode, 0660);
	EXPECT_EQ(c->pool_size, 2);
	EXPECT_TRUE(c->ek_rsa);
	EXPECT_TRUE(c->ek_ecc);
	EXPECT_EQ(c->ak_alg, 2);
	EXPECT_EQ(c->ak_handle, 0x81008000);
	EXPECT_EQ(c->workers, 0);
	EXPECT_NULL(c->ca_cert);
	EXPECT_NULL(c->ca_key);
	EXPECT_EQ(c->session_watermark, 8);
	EXPECT_EQ(c->object_watermark, 0);
	EXPECT_EQ(c->lockout_margin, 1);
	EXPECT_EQ(c->max_quotes, 0);
	EXPECT_EQ(c->max_commands, 0);
	EXPECT_EQ(c->max_age_ms, 0);
	EXPECT_TRUE(c->on_exhaustion);
	EXPECT_EQ(c->grace_ms, 60000);
	EXPECT_EQ(c->n_hooks, 0);
}

static const char full_conf[] =
	"# a full configuration\n"
	"[vtpmd]\n"
	"state_dir = /srv/vtpmd\n"
	"mountpoint = /mnt/tpm\n"
	"log_level = debug\n"
	"allow_other = yes\n"
	"device_owner = 1234\n"
	"device_group = 4321\n"
	"device_mode = 0640\n"
	"\n"
	"[pool]\n"
	"size = 8\n"
	"ek = ecc-p256\n"
	"ak = rsa2048\n"
	"ak_handle = 0x81000010\n"
	"workers = 4\n"
	"ca_cert = /etc/vtpmd/ca.pem\n"
	"ca_key = /etc/vtpmd/ca.key\n"
	"\n"
	"[rotate]\n"
	"session_watermark = 16\n"
	"object_watermark = 2\n"
	"lockout_margin = 2\n"
	"max_quotes = 1000\n"
	"max_commands = 100000\n"
	"max_age = 2h\n"
	"on_exhaustion = no\n"
	"grace = 90s\n"
	"\n"
	"[hook.keylime]\n"
	"exec = /usr/libexec/vtpmd/keylime-hook --url \"https://reg:8891/v2\" a\\ b\n"
	"phase = commit\n"
	"timeout = 1500ms\n"
	"\n"
	"[hook.audit]\n"
	"exec = /usr/bin/logger -t vtpmd\n";

TEST_F(conf, full_file_sets_every_key)
{
	struct conf *c;

	LOAD_OK(full_conf);
	c = self->c;
	EXPECT_STREQ(c->state_dir, "/srv/vtpmd");
	EXPECT_STREQ(c->mountpoint, "/mnt/tpm");
	EXPECT_EQ(c->log_level, LOG_DEBUG);
	EXPECT_TRUE(c->allow_other);
	EXPECT_EQ(c->dev_uid, 1234);
	EXPECT_EQ(c->dev_gid, 4321);
	EXPECT_EQ(c->dev_mode, 0640);
	EXPECT_EQ(c->pool_size, 8);
	EXPECT_FALSE(c->ek_rsa);
	EXPECT_TRUE(c->ek_ecc);
	EXPECT_EQ(c->ak_alg, 1);
	EXPECT_EQ(c->ak_handle, 0x81000010);
	EXPECT_EQ(c->workers, 4);
	EXPECT_STREQ(c->ca_cert, "/etc/vtpmd/ca.pem");
	EXPECT_STREQ(c->ca_key, "/etc/vtpmd/ca.key");
	EXPECT_EQ(c->session_watermark, 16);
	EXPECT_EQ(c->object_watermark, 2);
	EXPECT_EQ(c->lockout_margin, 2);
	EXPECT_EQ(c->max_quotes, 1000);
	EXPECT_EQ(c->max_commands, 100000);
	EXPECT_EQ(c->max_age_ms, 2 * 3600 * 1000);
	EXPECT_FALSE(c->on_exhaustion);
	EXPECT_EQ(c->grace_ms, 90000);
	ASSERT_EQ(c->n_hooks, 2);
	EXPECT_STREQ(c->hooks[0].name, "keylime");
	EXPECT_STREQ(c->hooks[0].argv[0], "/usr/libexec/vtpmd/keylime-hook");
	EXPECT_STREQ(c->hooks[0].argv[1], "--url");
	EXPECT_STREQ(c->hooks[0].argv[2], "https://reg:8891/v2");
	EXPECT_STREQ(c->hooks[0].argv[3], "a b");
	EXPECT_NULL(c->hooks[0].argv[4]);
	EXPECT_EQ(c->hooks[0].phases, CONF_PHASE_COMMIT);
	EXPECT_EQ(c->hooks[0].timeout_ms, 1500);
	EXPECT_STREQ(c->hooks[1].name, "audit");
	EXPECT_EQ(c->hooks[1].phases, CONF_PHASE_BOTH);
	EXPECT_EQ(c->hooks[1].timeout_ms, 30000);
}

TEST_F(conf, sections_in_any_order)
{
	LOAD_OK("[rotate]\ngrace = 1s\n[pool]\nsize = 3\n" MIN_CONF);
	EXPECT_EQ(self->c->grace_ms, 1000);
	EXPECT_EQ(self->c->pool_size, 3);
}

TEST_F(conf, empty_sections_allowed)
{
	LOAD_OK("[pool]\n[rotate]\n" MIN_CONF);
	EXPECT_EQ(self->c->pool_size, 2);
}

/* ---- [vtpmd] ---- */

TEST_F(conf, state_dir_must_be_absolute)
{
	LOAD_ERR("[vtpmd]\nstate_dir = var/lib/vtpmd\nmountpoint = /run/vtpm\n",
		 "t.conf:2: state_dir: 'var/lib/vtpmd' is not an absolute path");
}

TEST_F(conf, mountpoint_empty_rejected)
{
	LOAD_ERR("[vtpmd]\nstate_dir = /a\nmountpoint =\n",
		 "t.conf:3: mountpoint: '' is not an absolute path");
}

TEST_F(conf, path_keeps_hash_and_equals_inside)
{
	LOAD_OK("[vtpmd]\nstate_dir = /var/lib/a#b=c;d\nmountpoint = /run/vtpm\n");
	EXPECT_STREQ(self->c->state_dir, "/var/lib/a#b=c;d");
}

TEST_F(conf, mountpoint_must_differ_from_state_dir)
{
	LOAD_ERR("[vtpmd]\nstate_dir = /a\n\nmountpoint = /a\n",
		 "t.conf:4: mountpoint must differ from state_dir");
}

TEST_F(conf, log_level_names)
{
	static const struct {
		const char *name;
		int level;
	} cases[] = {
		{ "err", LOG_ERR }, { "warn", LOG_WARNING }, { "notice", LOG_NOTICE },
		{ "info", LOG_INFO }, { "debug", LOG_DEBUG },
	};
	char text[256];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(text, sizeof(text), MIN_CONF "log_level = %s\n", cases[i].name);
		LOAD_OK(text);
		EXPECT_EQ(self->c->log_level, cases[i].level);
	}
}

TEST_F(conf, log_level_unknown)
{
	LOAD_ERR(MIN_CONF "log_level = verbose\n",
		 "t.conf:4: log_level: expected one of: err warn notice info debug");
}

TEST_F(conf, bool_forms)
{
	static const char *const yes[] = { "yes", "true", "on", "1", "YES", "True" };
	static const char *const no[] = { "no", "false", "off", "0", "No", "OFF" };
	char text[256];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(yes); i++) {
		snprintf(text, sizeof(text), MIN_CONF "allow_other = %s\n", yes[i]);
		LOAD_OK(text);
		EXPECT_TRUE(self->c->allow_other);
		snprintf(text, sizeof(text), MIN_CONF "allow_other = %s\n", no[i]);
		LOAD_OK(text);
		EXPECT_FALSE(self->c->allow_other);
	}
}

TEST_F(conf, bool_malformed)
{
	LOAD_ERR(MIN_CONF "allow_other = maybe\n",
		 "t.conf:4: allow_other: expected one of: yes true on 1 no false off 0");
	LOAD_ERR(MIN_CONF "allow_other =\n",
		 "t.conf:4: allow_other: expected one of: yes true on 1 no false off 0");
}

TEST_F(conf, device_owner_by_name_and_number)
{
	struct passwd *pw = getpwnam("nobody");

	LOAD_OK(MIN_CONF "device_owner = root\n");
	EXPECT_EQ(self->c->dev_uid, 0);
	LOAD_OK(MIN_CONF "device_owner = 1000\n");
	EXPECT_EQ(self->c->dev_uid, 1000);
	if (!pw)
		TEST_SKIP("no user nobody");
	LOAD_OK(MIN_CONF "device_owner = nobody\n");
	EXPECT_EQ(self->c->dev_uid, pw->pw_uid);
}

TEST_F(conf, device_owner_malformed)
{
	LOAD_ERR(MIN_CONF "device_owner = no-such-user-vtpmd\n",
		 "t.conf:4: device_owner: unknown user 'no-such-user-vtpmd'");
	LOAD_ERR(MIN_CONF "device_owner = 4294967295\n",
		 "t.conf:4: device_owner: invalid user id '4294967295'");
	LOAD_ERR(MIN_CONF "device_owner = 12ab\n",
		 "t.conf:4: device_owner: invalid user id '12ab'");
}

TEST_F(conf, device_group_by_name_and_number)
{
	LOAD_OK(MIN_CONF "device_group = root\n");
	EXPECT_EQ(self->c->dev_gid, 0);
	LOAD_OK(MIN_CONF "device_group = 0x10\n");
	EXPECT_EQ(self->c->dev_gid, 16);
	LOAD_ERR(MIN_CONF "device_group = no-such-group-vtpmd\n",
		 "t.conf:4: device_group: unknown group 'no-such-group-vtpmd'");
}

TEST_F(conf, device_mode_octal)
{
	LOAD_OK(MIN_CONF "device_mode = 0600\n");
	EXPECT_EQ(self->c->dev_mode, 0600);
	LOAD_OK(MIN_CONF "device_mode = 666\n");
	EXPECT_EQ(self->c->dev_mode, 0666);
	LOAD_OK(MIN_CONF "device_mode = 0\n");
	EXPECT_EQ(self->c->dev_mode, 0);
	LOAD_OK(MIN_CONF "device_mode = 000640\n");
	EXPECT_EQ(self->c->dev_mode, 0640);
}

TEST_F(conf, device_mode_malformed)
{
	LOAD_ERR(MIN_CONF "device_mode = 0680\n",
		 "t.conf:4: device_mode: invalid octal mode '0680'");
	LOAD_ERR(MIN_CONF "device_mode = 04755\n",
		 "t.conf:4: device_mode: mode '04755' has bits beyond 0777");
	LOAD_ERR(MIN_CONF "device_mode = 0000660\n",
		 "t.conf:4: device_mode: invalid octal mode '0000660'");
	LOAD_ERR(MIN_CONF "device_mode = -660\n",
		 "t.conf:4: device_mode: invalid octal mode '-660'");
	LOAD_ERR(MIN_CONF "device_mode = rw-rw----\n",
		 "t.conf:4: device_mode: invalid octal mode 'rw-rw----'");
}

/* ---- [pool] ---- */

TEST_F(conf, pool_size_bounds)
{
	LOAD_OK(MIN_CONF "[pool]\nsize = 1\n");
	EXPECT_EQ(self->c->pool_size, 1);
	LOAD_OK(MIN_CONF "[pool]\nsize = 256\n");
	EXPECT_EQ(self->c->pool_size, 256);
	LOAD_OK(MIN_CONF "[pool]\nsize = 0x10\n");
	EXPECT_EQ(self->c->pool_size, 16);
	LOAD_ERR(MIN_CONF "[pool]\nsize = 0\n",
		 "t.conf:5: size: '0' is out of range (1 to 256)");
	LOAD_ERR(MIN_CONF "[pool]\nsize = 257\n",
		 "t.conf:5: size: '257' is out of range (1 to 256)");
}

TEST_F(conf, uint_malformed)
{
	static const char *const bad[] = { "-1", "+2", "abc", "1e3", "2k", "0x", "0x0x10",
					   "1 2", "010a", "" };
	char text[256];
	char want[256];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(text, sizeof(text), MIN_CONF "[pool]\nsize = %s\n", bad[i]);
		snprintf(want, sizeof(want), "t.conf:5: size: invalid unsigned number '%s'",
			 bad[i]);
		LOAD_ERR(text, want);
	}
}

TEST_F(conf, uint_leading_zero_is_decimal)
{
	LOAD_OK(MIN_CONF "[pool]\nsize = 010\n");
	EXPECT_EQ(self->c->pool_size, 10);
}

TEST_F(conf, uint_overflow)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize = 99999999999999999999999\n",
		 "t.conf:5: size: '99999999999999999999999' is out of range (1 to 256)");
	LOAD_ERR(MIN_CONF "[rotate]\nlockout_margin = 4294967296\n",
		 "t.conf:5: lockout_margin: '4294967296' is out of range (0 to 4294967295)");
}

TEST_F(conf, u64_limits)
{
	LOAD_OK(MIN_CONF "[rotate]\nmax_quotes = 18446744073709551615\nmax_commands = 0xffff\n");
	EXPECT_EQ(self->c->max_quotes, UINT64_MAX);
	EXPECT_EQ(self->c->max_commands, 0xffff);
	LOAD_ERR(MIN_CONF "[rotate]\nmax_quotes = 18446744073709551616\n",
		 "t.conf:5: max_quotes: '18446744073709551616' is out of range "
		 "(0 to 18446744073709551615)");
}

TEST_F(conf, ek_lists)
{
	LOAD_OK(MIN_CONF "[pool]\nek = rsa2048\n");
	EXPECT_TRUE(self->c->ek_rsa);
	EXPECT_FALSE(self->c->ek_ecc);
	LOAD_OK(MIN_CONF "[pool]\nek = ecc-p256\n");
	EXPECT_FALSE(self->c->ek_rsa);
	EXPECT_TRUE(self->c->ek_ecc);
	LOAD_OK(MIN_CONF "[pool]\nek = ecc-p256 , rsa2048\n");
	EXPECT_TRUE(self->c->ek_rsa);
	EXPECT_TRUE(self->c->ek_ecc);
}

TEST_F(conf, ek_malformed)
{
	LOAD_ERR(MIN_CONF "[pool]\nek =\n",
		 "t.conf:5: ek: at least one EK type is needed (rsa2048, ecc-p256)");
	LOAD_ERR(MIN_CONF "[pool]\nek = rsa4096\n",
		 "t.conf:5: ek: unknown EK type 'rsa4096' (expected rsa2048, ecc-p256)");
	LOAD_ERR(MIN_CONF "[pool]\nek = rsa2048,\n",
		 "t.conf:5: ek: unknown EK type '' (expected rsa2048, ecc-p256)");
	LOAD_ERR(MIN_CONF "[pool]\nek = rsa2048, rsa2048\n",
		 "t.conf:5: ek: EK type 'rsa2048' listed twice");
}

TEST_F(conf, ak_algorithms)
{
	LOAD_OK(MIN_CONF "[pool]\nak = none\n");
	EXPECT_EQ(self->c->ak_alg, 0);
	LOAD_OK(MIN_CONF "[pool]\nak = rsa2048\n");
	EXPECT_EQ(self->c->ak_alg, 1);
	LOAD_OK(MIN_CONF "[pool]\nak = ecc-p256\n");
	EXPECT_EQ(self->c->ak_alg, 2);
	LOAD_ERR(MIN_CONF "[pool]\nak = ecc\n",
		 "t.conf:5: ak: expected one of: none rsa2048 ecc-p256");
}

TEST_F(conf, ak_handle_persistent_range)
{
	LOAD_OK(MIN_CONF "[pool]\nak_handle = 0x81000000\n");
	EXPECT_EQ(self->c->ak_handle, 0x81000000);
	LOAD_OK(MIN_CONF "[pool]\nak_handle = 0x81FFFFFF\n");
	EXPECT_EQ(self->c->ak_handle, 0x81ffffff);
	LOAD_OK(MIN_CONF "[pool]\nak_handle = 2164293633\n");
	EXPECT_EQ(self->c->ak_handle, 0x81008001);
	LOAD_ERR(MIN_CONF "[pool]\nak_handle = 0x80000001\n",
		 "t.conf:5: ak_handle: '0x80000001' is not a persistent handle "
		 "(0x81000000 to 0x81ffffff)");
	LOAD_ERR(MIN_CONF "[pool]\nak_handle = 0x181008000\n",
		 "t.conf:5: ak_handle: '0x181008000' is not a persistent handle "
		 "(0x81000000 to 0x81ffffff)");
	LOAD_ERR(MIN_CONF "[pool]\nak_handle = handle\n",
		 "t.conf:5: ak_handle: invalid handle 'handle'");
}

TEST_F(conf, ak_handle_not_an_ek_handle)
{
	LOAD_ERR(MIN_CONF "[pool]\nak_handle = 0x81010001\n",
		 "t.conf:5: ak_handle: 0x81010001 is reserved for an EK");
	LOAD_ERR(MIN_CONF "[pool]\nak_handle = 0x81010002\n",
		 "t.conf:5: ak_handle: 0x81010002 is reserved for an EK");
}

TEST_F(conf, workers_bounds)
{
	LOAD_OK(MIN_CONF "[pool]\nworkers = 64\n");
	EXPECT_EQ(self->c->workers, 64);
	LOAD_ERR(MIN_CONF "[pool]\nworkers = 65\n",
		 "t.conf:5: workers: '65' is out of range (0 to 64)");
}

TEST_F(conf, ca_cert_needs_ca_key)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2\nca_cert = /etc/ca.pem\n",
		 "t.conf:6: ca_cert is set but ca_key is not (set both or neither)");
}

TEST_F(conf, ca_key_needs_ca_cert)
{
	LOAD_ERR(MIN_CONF "[pool]\nca_key = /etc/ca.key\n",
		 "t.conf:5: ca_key is set but ca_cert is not (set both or neither)");
}

TEST_F(conf, ca_paths_checked)
{
	LOAD_ERR(MIN_CONF "[pool]\nca_cert = ca.pem\nca_key = /etc/ca.key\n",
		 "t.conf:5: ca_cert: 'ca.pem' is not an absolute path");
	LOAD_ERR(MIN_CONF "[pool]\nca_cert = /etc/ca\nca_key = /etc/ca\n",
		 "t.conf:6: ca_key must differ from ca_cert");
}

/* ---- [rotate] ---- */

TEST_F(conf, watermark_bounds)
{
	LOAD_OK(MIN_CONF "[rotate]\nsession_watermark = 63\nobject_watermark = 3\n");
	EXPECT_EQ(self->c->session_watermark, 63);
	EXPECT_EQ(self->c->object_watermark, 3);
	LOAD_ERR(MIN_CONF "[rotate]\nsession_watermark = 64\n",
		 "t.conf:5: session_watermark: '64' is out of range (0 to 63)");
	LOAD_ERR(MIN_CONF "[rotate]\nobject_watermark = 4\n",
		 "t.conf:5: object_watermark: '4' is out of range (0 to 3)");
}

TEST_F(conf, duration_units)
{
	static const struct {
		const char *text;
		uint64_t ms;
	} cases[] = {
		{ "0", 0 }, { "100ms", 100 }, { "30", 30000 }, { "30s", 30000 },
		{ "5m", 300000 }, { "2h", 7200000 }, { "1d", 86400000 },
	};
	char text[256];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(text, sizeof(text), MIN_CONF "[rotate]\nmax_age = %s\ngrace = %s\n",
			 cases[i].text, cases[i].text);
		LOAD_OK(text);
		EXPECT_EQ(self->c->max_age_ms, cases[i].ms);
		EXPECT_EQ(self->c->grace_ms, cases[i].ms);
	}
}

TEST_F(conf, duration_malformed)
{
	static const char *const bad[] = { "5 m", "5min", "-1", "m", "1.5s", "5M", "s5", "" };
	char text[256];
	char want[256];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(text, sizeof(text), MIN_CONF "[rotate]\nmax_age = %s\n", bad[i]);
		snprintf(want, sizeof(want), "t.conf:5: max_age: invalid duration '%s'", bad[i]);
		LOAD_ERR(text, want);
	}
}

TEST_F(conf, duration_overflow)
{
	LOAD_ERR(MIN_CONF "[rotate]\nmax_age = 999999999999999999d\n",
		 "t.conf:5: max_age: '999999999999999999d' is out of range (0 to 18446744073709551615ms)");
}

TEST_F(conf, on_exhaustion_bool)
{
	LOAD_OK(MIN_CONF "[rotate]\non_exhaustion = off\n");
	EXPECT_FALSE(self->c->on_exhaustion);
}

/* ---- [hook.NAME] ---- */

TEST_F(conf, hook_defaults)
{
	LOAD_OK(MIN_CONF "[hook.a]\nexec = /bin/true\n");
	ASSERT_EQ(self->c->n_hooks, 1);
	EXPECT_STREQ(self->c->hooks[0].name, "a");
	EXPECT_STREQ(self->c->hooks[0].argv[0], "/bin/true");
	EXPECT_NULL(self->c->hooks[0].argv[1]);
	EXPECT_EQ(self->c->hooks[0].phases, CONF_PHASE_BOTH);
	EXPECT_EQ(self->c->hooks[0].timeout_ms, 30000);
}

TEST_F(conf, webhook_urls)
{
	static const struct {
		const char *url;
		const char *kept;	/* NULL: refused with why */
		const char *why;
	} cases[] = {
		{ "https://h", "https://h", NULL },
		{ "https://h:8443/a/", "https://h:8443/a", NULL },
		{ "https://[::1]:65535/x?y=1", "https://[::1]:65535/x?y=1", NULL },
		{ "HTTPS://H/", "HTTPS://H", NULL },
		{ "http://h/", NULL, "'http://h/' is not an https:// URL" },
		{ "https:///x", NULL, "invalid URL: No host part in the URL" },
		{ "https://?x", NULL, "invalid URL: No host part in the URL" },
		{ "https://h:99999/x", NULL,
		  "invalid URL: Port number was not a decimal number between 0 and 65535" },
		{ "https://h:65536/", NULL,
		  "invalid URL: Port number was not a decimal number between 0 and 65535" },
		{ "https://h:0/", NULL, "invalid URL: port 0" },
		{ "https://h:x/", NULL,
		  "invalid URL: Port number was not a decimal number between 0 and 65535" },
		{ "https://u:p@h/", NULL,
		  "invalid URL: user info is not allowed (use token_file or tls_cert)" },
		{ "https://h/#f", NULL, "invalid URL: a fragment is not allowed" },
		{ "https://h/a b", NULL, "invalid URL (no spaces or quotes; at most 2047 bytes)" },
		{ "https://h%00/", NULL, "invalid URL: Bad hostname" },
	};
	char text[512];
	char want[512];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(text, sizeof(text), MIN_CONF "[hook.w]\nurl = %s\n", cases[i].url);
		if (cases[i].kept) {
			LOAD_OK(text);
			EXPECT_STREQ(self->c->hooks[0].url, cases[i].kept);
			continue;
		}
		snprintf(want, sizeof(want), "t.conf:%d: url: %s", HOOK_LINE + 1, cases[i].why);
		LOAD_ERR(text, want);
	}
}

TEST_F(conf, hook_phases)
{
	LOAD_OK(MIN_CONF "[hook.a]\nexec = /bin/true\nphase = prepare\n"
		"[hook.b]\nexec = /bin/true\nphase = commit\n"
		"[hook.c]\nexec = /bin/true\nphase = both\n");
	ASSERT_EQ(self->c->n_hooks, 3);
	EXPECT_EQ(self->c->hooks[0].phases, CONF_PHASE_PREPARE);
	EXPECT_EQ(self->c->hooks[1].phases, CONF_PHASE_COMMIT);
	EXPECT_EQ(self->c->hooks[2].phases, CONF_PHASE_BOTH);
	LOAD_ERR(MIN_CONF "[hook.a]\nexec = /bin/true\nphase = after\n",
		 "t.conf:6: phase: expected one of: prepare commit both");
}

TEST_F(conf, hook_timeout_bounds)
{
	LOAD_OK(MIN_CONF "[hook.a]\nexec = /bin/true\ntimeout = 1ms\n");
	EXPECT_EQ(self->c->hooks[0].timeout_ms, 1);
	LOAD_ERR(MIN_CONF "[hook.a]\nexec = /bin/true\ntimeout = 0\n",
		 "t.conf:6: timeout: '0' is out of range (1ms to 1d)");
	LOAD_ERR(MIN_CONF "[hook.a]\nexec = /bin/true\ntimeout = 25h\n",
		 "t.conf:6: timeout: '25h' is out of range (1ms to 1d)");
}

/* Parse "exec = <exec>" in one hook and check its words. */
static void check_exec(struct conf **c, char *err, const char *exec, const char *const *want)
{
	char text[4096];
	char *const *argv;
	size_t i;
	int r;

	snprintf(text, sizeof(text), MIN_CONF "[hook.h]\nexec = %s\n", exec);
	r = parse(c, err, text);
	if (r < 0)
		TEST_LOG("exec = %s: %s", exec, err);
	ASSERT_EQ(r, 0);
	argv = (*c)->hooks[0].argv;
	for (i = 0; want[i]; i++) {
		ASSERT_NE_NULL(argv[i]);
		EXPECT_STREQ(argv[i], want[i]);
	}
	EXPECT_NULL(argv[i]);
}

TEST_F(conf, exec_splits_on_blanks)
{
	static const char *const want[] = { "/usr/bin/prog", "a", "b", "c", NULL };

	check_exec(&self->c, self->err, "/usr/bin/prog a  b\t\tc", want);
}

TEST_F(conf, exec_double_quotes)
{
	static const char *const want[] = { "/opt/my prog", "a b", "", "it's", NULL };

	check_exec(&self->c, self->err, "\"/opt/my prog\" \"a b\" \"\" \"it's\"", want);
}

TEST_F(conf, exec_backslash)
{
	static const char *const want[] = { "/bin/x", "a b", "say \"hi\"", "c\\d", NULL };

	check_exec(&self->c, self->err, "/bin/x a\\ b \"say \\\"hi\\\"\" c\\\\d", want);
}

TEST_F(conf, exec_adjacent_parts_join)
{
	static const char *const want[] = { "/bin/x", "ab cd", NULL };

	check_exec(&self->c, self->err, "/bin/x a\"b c\"d", want);
}

TEST_F(conf, exec_escaped_comment_characters)
{
	static const char *const want[] = { "/bin/x", "#not", "a;b", "c#d", "x ;y", NULL };

	check_exec(&self->c, self->err, "/bin/x \\#not a;b c#d \"x \\;y\"", want);
}

TEST_F(conf, exec_no_shell_expansion)
{
	static const char *const want[] = { "/bin/echo", "$HOME", "*", "~", "`id`", "a|b", NULL };

	check_exec(&self->c, self->err, "/bin/echo $HOME * ~ `id` a|b", want);
}

TEST_F(conf, exec_long_line_beyond_inih_buffer)
{
	char exec[2048];
	char arg[1001];
	const char *want[3] = { "/bin/x", arg, NULL };

	memset(arg, 'q', sizeof(arg) - 1);
	arg[sizeof(arg) - 1] = '\0';
	snprintf(exec, sizeof(exec), "/bin/x %s", arg);
	check_exec(&self->c, self->err, exec, want);
}

TEST_F(conf, exec_max_words)
{
	const char *want[CONF_MAX_ARGS + 1] = { "/bin/x" };
	char exec[512] = "/bin/x";
	size_t i;

	for (i = 1; i < CONF_MAX_ARGS; i++) {
		strcat(exec, " a");
		want[i] = "a";
	}
	check_exec(&self->c, self->err, exec, want);
}

TEST_F(conf, exec_malformed)
{
	LOAD_ERR(MIN_CONF "[hook.h]\nexec = /bin/x 'a b'\n",
		 "t.conf:5: exec: single quotes are not supported (use double quotes)");
	LOAD_ERR(MIN_CONF "[hook.h]\nexec = /bin/x \"a b\n",
		 "t.conf:5: exec: unterminated double quote");
	LOAD_ERR(MIN_CONF "[hook.h]\nexec = /bin/x a\\\n",
		 "t.conf:5: exec: backslash at the end");
	LOAD_ERR(MIN_CONF "[hook.h]\nexec = prog a\n",
		 "t.conf:5: exec: the program 'prog' is not an absolute path");
	LOAD_ERR(MIN_CONF "[hook.h]\nexec =\n", "t.conf:5: exec: no program given");
	LOAD_ERR(MIN_CONF "[hook.h]\nexec = \"\"\n",
		 "t.conf:5: exec: the program '' is not an absolute path");
}

TEST_F(conf, exec_too_many_words)
{
	char text[512] = MIN_CONF "[hook.h]\nexec = /bin/x";
	size_t i;

	for (i = 0; i < CONF_MAX_ARGS; i++)
		strcat(text, " a");
	strcat(text, "\n");
	LOAD_ERR(text, "t.conf:5: exec: too many words (at most 32)");
}

TEST_F(conf, hook_without_exec)
{
	LOAD_ERR(MIN_CONF "[hook.h]\nphase = commit\n", "t.conf:4: [hook.h] has no 'exec' key");
	LOAD_ERR(MIN_CONF "[hook.h]\n\n[pool]\nsize = 2\n", "t.conf:4: [hook.h] has no 'exec' key");
}

TEST_F(conf, hook_names)
{
	LOAD_OK(MIN_CONF "[hook.Keylime_reg-1]\nexec = /bin/true\n"
		"[hook.abcdefghijklmnopqrstuvwxyz012345]\nexec = /bin/true\n");
	EXPECT_STREQ(self->c->hooks[0].name, "Keylime_reg-1");
	EXPECT_EQ(strlen(self->c->hooks[1].name), 32);
}

TEST_F(conf, hook_bad_names)
{
	LOAD_ERR(MIN_CONF "[hook.]\nexec = /bin/true\n",
		 "t.conf:4: invalid hook name '' (1 to 32 of A-Z a-z 0-9 _ -)");
	LOAD_ERR(MIN_CONF "[hook.a.b]\nexec = /bin/true\n",
		 "t.conf:4: invalid hook name 'a.b' (1 to 32 of A-Z a-z 0-9 _ -)");
	LOAD_ERR(MIN_CONF "[hook.a b]\nexec = /bin/true\n",
		 "t.conf:4: invalid hook name 'a b' (1 to 32 of A-Z a-z 0-9 _ -)");
	LOAD_ERR(MIN_CONF "[hook.abcdefghijklmnopqrstuvwxyz0123456]\nexec = /bin/true\n",
		 "t.conf:4: invalid hook name 'abcdefghijklmnopqrstuvwxyz0123456' "
		 "(1 to 32 of A-Z a-z 0-9 _ -)");
	LOAD_ERR(MIN_CONF "[hook]\nexec = /bin/true\n", "t.conf:4: unknown section [hook]");
}

TEST_F(conf, too_many_hooks)
{
	char text[4096] = MIN_CONF;
	char sec[64];
	int i;

	for (i = 0; i < CONF_MAX_HOOKS; i++) {
		snprintf(sec, sizeof(sec), "[hook.h%d]\nexec = /bin/true\n", i);
		strcat(text, sec);
	}
	LOAD_OK(text);
	EXPECT_EQ(self->c->n_hooks, CONF_MAX_HOOKS);
	strcat(text, "[hook.last]\nexec = /bin/true\n");
	/* 3 lines of MIN_CONF, 2 per hook: the extra header is line 36. */
	LOAD_ERR(text, "t.conf:36: too many hooks (at most 16)");
}

TEST_F(conf, duplicate_hook)
{
	LOAD_ERR(MIN_CONF "[hook.a]\nexec = /bin/true\n[hook.a]\nexec = /bin/false\n",
		 "t.conf:6: duplicate section [hook.a] (first on line 4)");
}

/* ---- strictness ---- */

TEST_F(conf, unknown_key)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2\npoolsize = 3\n",
		 "t.conf:6: unknown key 'poolsize' in [pool]");
	LOAD_ERR(MIN_CONF "[hook.h]\nexec = /bin/true\nretry = 3\n",
		 "t.conf:6: unknown key 'retry' in [hook.h]");
}

TEST_F(conf, keys_are_case_sensitive)
{
	LOAD_ERR(MIN_CONF "[pool]\nSize = 2\n", "t.conf:5: unknown key 'Size' in [pool]");
}

TEST_F(conf, unknown_section)
{
	LOAD_ERR(MIN_CONF "[pools]\nsize = 2\n", "t.conf:4: unknown section [pools]");
	LOAD_ERR("[Vtpmd]\n", "t.conf:1: unknown section [Vtpmd]");
}

TEST_F(conf, duplicate_key)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2\n\nsize = 2\n",
		 "t.conf:7: duplicate key 'size' (first set on line 5)");
	LOAD_ERR("[vtpmd]\nstate_dir = /a\nstate_dir = /b\n",
		 "t.conf:3: duplicate key 'state_dir' (first set on line 2)");
}

TEST_F(conf, duplicate_section)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2\n[pool]\nworkers = 2\n",
		 "t.conf:6: duplicate section [pool] (first on line 4)");
}

TEST_F(conf, x_keys_ignored)
{
	LOAD_OK(MIN_CONF "x-note = anything at all;even#this = too\n"
		"[pool]\nx-note = 1\nx-note = 2\n"
		"[hook.h]\nexec = /bin/true\nx-owner = ops\n");
	EXPECT_EQ(self->c->n_hooks, 1);
}

TEST_F(conf, x_key_still_needs_valid_line)
{
	LOAD_ERR(MIN_CONF "x-note = a # b\n",
		 "t.conf:4: inline comments are not supported (a '#' starts the value or follows "
		 "a space; put comments on their own line)");
}

TEST_F(conf, bad_section_headers)
{
	LOAD_ERR(MIN_CONF "[pool\n", "t.conf:4: invalid section header");
	LOAD_ERR(MIN_CONF "[pool] x\n", "t.conf:4: invalid section header");
	LOAD_ERR(MIN_CONF "[]\n", "t.conf:4: invalid section header");
	LOAD_ERR(MIN_CONF "[po[ol]\n", "t.conf:4: invalid section header");
	LOAD_ERR(MIN_CONF "[[pool]]\n", "t.conf:4: invalid section header");
	LOAD_ERR(MIN_CONF "[ pool ]\n", "t.conf:4: unknown section [ pool ]");
}

TEST_F(conf, trailing_blanks_after_header_allowed)
{
	LOAD_OK(MIN_CONF "[pool] \t\nsize = 3\n");
	EXPECT_EQ(self->c->pool_size, 3);
}

TEST_F(conf, key_outside_section)
{
	LOAD_ERR("state_dir = /a\n" MIN_CONF, "t.conf:1: key outside of any section");
}

TEST_F(conf, missing_equals)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize 2\n", "t.conf:5: expected 'key = value'");
	LOAD_ERR(MIN_CONF "[pool]\nsize: 2\n", "t.conf:5: expected 'key = value'");
	LOAD_ERR(MIN_CONF "[pool]\n= 2\n", "t.conf:5: invalid key name ''");
	LOAD_ERR(MIN_CONF "[pool]\nsize : 3 = 2\n", "t.conf:5: invalid key name 'size : 3'");
}

TEST_F(conf, blanks_around_equals_optional)
{
	LOAD_OK(MIN_CONF "[pool]\nsize=3\nworkers\t=\t5  \n");
	EXPECT_EQ(self->c->pool_size, 3);
	EXPECT_EQ(self->c->workers, 5);
}

TEST_F(conf, continuation_lines_rejected)
{
	LOAD_ERR(MIN_CONF "[hook.h]\nexec = /bin/x\n  --more\n",
		 "t.conf:6: line starts with whitespace (continuation lines are not supported)");
	LOAD_ERR(MIN_CONF "[pool]\n\tsize = 2\n",
		 "t.conf:5: line starts with whitespace (continuation lines are not supported)");
}

TEST_F(conf, comments_and_blank_lines)
{
	LOAD_OK("# leading comment\n\n   \n\t# indented comment\n" MIN_CONF "#\n[pool]\n#size = 9\n");
	EXPECT_EQ(self->c->pool_size, 2);
}

TEST_F(conf, semicolon_comment_lines_rejected)
{
	LOAD_ERR(MIN_CONF "; old style\n", "t.conf:4: comments start with '#', not ';'");
}

TEST_F(conf, inline_comments_rejected)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2 # two\n",
		 "t.conf:5: inline comments are not supported (a '#' starts the value or follows "
		 "a space; put comments on their own line)");
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2\t; two\n",
		 "t.conf:5: inline comments are not supported (a ';' starts the value or follows "
		 "a space; put comments on their own line)");
	LOAD_ERR(MIN_CONF "[pool]\nca_cert = # none\n",
		 "t.conf:5: inline comments are not supported (a '#' starts the value or follows "
		 "a space; put comments on their own line)");
}

TEST_F(conf, comment_characters_inside_value_are_data)
{
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2;two\n",
		 "t.conf:5: size: invalid unsigned number '2;two'");
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2#two\n",
		 "t.conf:5: size: invalid unsigned number '2#two'");
}

TEST_F(conf, line_too_long)
{
	size_t len = 4097;
	char *text = malloc(sizeof(MIN_CONF) + len + 2);

	ASSERT_NE_NULL(text);
	strcpy(text, MIN_CONF);
	memset(text + strlen(MIN_CONF), '#', len);
	strcpy(text + strlen(MIN_CONF) + len, "\n");
	EXPECT_EQ(parse(&self->c, self->err, text), -EINVAL);
	EXPECT_STREQ(self->err, "t.conf:4: line too long (more than 4096 bytes)");
	free(text);
}

TEST_F(conf, line_of_4096_bytes_accepted)
{
	char *text = malloc(sizeof(MIN_CONF) + 4096 + 2);
	char *line;

	ASSERT_NE_NULL(text);
	strcpy(text, MIN_CONF);
	line = text + strlen(MIN_CONF);
	memset(line, 'v', 4096);
	memcpy(line, "x-pad = ", 8);
	strcpy(line + 4096, "\n");
	EXPECT_EQ(parse(&self->c, self->err, text), 0);
	free(text);
}

TEST_F(conf, missing_required_keys)
{
	LOAD_ERR("[vtpmd]\nmountpoint = /run/vtpm\n",
		 "t.conf:1: missing required key 'state_dir' in [vtpmd]");
	LOAD_ERR("# c\n[vtpmd]\nstate_dir = /a\n[pool]\nsize = 2\n",
		 "t.conf:2: missing required key 'mountpoint' in [vtpmd]");
	LOAD_ERR("[pool]\nsize = 2\n\n", "t.conf:3: missing required key 'state_dir' in [vtpmd]");
	LOAD_ERR("", "t.conf:1: missing required key 'state_dir' in [vtpmd]");
}

TEST_F(conf, control_characters_rejected)
{
	static const char text[] = MIN_CONF "[pool]\nsize = 2\0x\n";

	ASSERT_EQ(conf_load_buffer("t.conf", text, sizeof(text) - 1, &self->c, self->err,
				   sizeof(self->err)), -EINVAL);
	EXPECT_STREQ(self->err, "t.conf:5: control character 0x00 in line");
	LOAD_ERR(MIN_CONF "[pool]\nsize = \0332\n", "t.conf:5: control character 0x1b in line");
	LOAD_ERR(MIN_CONF "[pool]\nsize = 2\r3\n", "t.conf:5: control character 0x0d in line");
}

TEST_F(conf, utf8_checked)
{
	LOAD_OK("[vtpmd]\nstate_dir = /srv/\xc3\xa9t\xc3\xa9\nmountpoint = /run/\xe2\x82\xac"
		"\xf0\x9f\x94\x91\n");
	EXPECT_STREQ(self->c->state_dir, "/srv/\xc3\xa9t\xc3\xa9");
	LOAD_ERR(MIN_CONF "x-a = \xe9t\xe9\n", "t.conf:4: invalid UTF-8 at byte 7 of the line");
	LOAD_ERR(MIN_CONF "x-a = \xc0\xaf\n", "t.conf:4: invalid UTF-8 at byte 7 of the line");
	LOAD_ERR(MIN_CONF "x-a = \xed\xa0\x80\n", "t.conf:4: invalid UTF-8 at byte 7 of the line");
	LOAD_ERR(MIN_CONF "x-a = \xf4\x90\x80\x80\n",
		 "t.conf:4: invalid UTF-8 at byte 7 of the line");
	LOAD_ERR(MIN_CONF "x-a = ab\xe2\x82\n", "t.conf:4: invalid UTF-8 at byte 9 of the line");
}

TEST_F(conf, crlf_bom_and_no_final_newline)
{
	LOAD_OK("\xef\xbb\xbf[vtpmd]\r\nstate_dir = /a\r\nmountpoint = /b\r\n[pool]\r\nsize = 5");
	EXPECT_STREQ(self->c->mountpoint, "/b");
	EXPECT_EQ(self->c->pool_size, 5);
}

TEST_F(conf, buffer_need_not_be_terminated)
{
	static const char text[] = MIN_CONF "[pool]\nsize = 42";

	/* Cut "42" to "4": the parser must not read past len. */
	ASSERT_EQ(conf_load_buffer("t.conf", text, sizeof(text) - 2, &self->c, self->err,
				   sizeof(self->err)), 0);
	EXPECT_EQ(self->c->pool_size, 4);
}

TEST_F(conf, default_name_and_no_err_buffer)
{
	struct conf *c = NULL;
	char small[12];

	EXPECT_EQ(conf_load_buffer(NULL, "[x]\n", 4, &c, self->err, sizeof(self->err)), -EINVAL);
	EXPECT_STREQ(self->err, "<buffer>:1: unknown section [x]");
	EXPECT_EQ(conf_load_buffer("t.conf", "[x]\n", 4, &c, NULL, 0), -EINVAL);
	EXPECT_EQ(conf_load_buffer("t.conf", "[x]\n", 4, &c, small, sizeof(small)), -EINVAL);
	EXPECT_STREQ(small, "t.conf:1: u");
	EXPECT_NULL(c);
}

TEST_F(conf, err_cleared_on_success)
{
	strcpy(self->err, "stale");
	LOAD_OK(MIN_CONF);
	EXPECT_STREQ(self->err, "");
}

TEST(conf_free_accepts_null)
{
	conf_free(NULL);
}

/* ---- dump ---- */

static char *dump_to_string(const struct conf *c)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);

	ASSERT_NE_NULL(f);
	EXPECT_EQ(conf_dump(c, f), 0);
	fclose(f);
	return s;
}

TEST_F(conf, dump_minimal_shows_defaults)
{
	char *s;

	LOAD_OK(MIN_CONF);
	s = dump_to_string(self->c);
	EXPECT_NE_NULL(strstr(s, "[vtpmd]\nstate_dir = /var/lib/vtpmd\nmountpoint = /run/vtpm\n"
				 "log_level = info\nallow_other = no\ndevice_owner = root\n"));
	EXPECT_NE_NULL(strstr(s, getgrnam("tss") ? "device_group = tss\n" : "device_group = root\n"));
	EXPECT_NE_NULL(strstr(s, "device_mode = 0660\n"));
	EXPECT_NE_NULL(strstr(s, "[pool]\nsize = 2\nek = rsa2048,ecc-p256\nak = ecc-p256\n"
				 "ak_handle = 0x81008000\nworkers = 0\n# ca_cert is not set\n"));
	EXPECT_NE_NULL(strstr(s, "max_age = 0\non_exhaustion = yes\ngrace = 1m\n"));
	free(s);
}

TEST_F(conf, dump_round_trips)
{
	struct conf *again = NULL;
	char *first;
	char *second;

	LOAD_OK(full_conf);
	first = dump_to_string(self->c);
	EXPECT_NE_NULL(strstr(first, "[hook.keylime]\nexec = /usr/libexec/vtpmd/keylime-hook "
				     "--url https://reg:8891/v2 \"a b\"\nphase = commit\n"
				     "timeout = 1500ms\n"));
	ASSERT_EQ(parse(&again, self->err, first), 0);
	second = dump_to_string(again);
	EXPECT_STREQ(first, second);
	conf_free(again);
	free(first);
	free(second);
}

/* Ids without a name, or with a name that would read back as a number, print as numbers. */
TEST_F(conf, dump_users_and_groups_by_name_when_they_read_back)
{
	char *s;

	LOAD_OK(MIN_CONF "device_owner = nobody\ndevice_group = 4000000000\n"
		"[hook.h]\nexec = /bin/true\nuser = 65534\n");
	s = dump_to_string(self->c);
	EXPECT_NE_NULL(strstr(s, "device_owner = nobody\ndevice_group = 4000000000\n"));
	EXPECT_NE_NULL(strstr(s, "\nuser = nobody\n"));
	free(s);
}

TEST_F(conf, dump_quotes_exec_words)
{
	char *s;

	LOAD_OK(MIN_CONF "[hook.h]\nexec = /bin/x \"\" \"a b\" \\#c d;e \"q\\\"\" back\\\\slash \"it's\"\n");
	s = dump_to_string(self->c);
	EXPECT_NE_NULL(strstr(s, "exec = /bin/x \"\" \"a b\" \\#c d\\;e q\\\" back\\\\slash it\\'s\n"));
	free(s);
}

/* ---- parsers ---- */

TEST(conf_parse_duration_forms)
{
	uint64_t ms = 7;

	EXPECT_EQ(conf_parse_duration("250ms", &ms), 0);
	EXPECT_EQ(ms, 250);
	EXPECT_EQ(conf_parse_duration("3", &ms), 0);
	EXPECT_EQ(ms, 3000);
	EXPECT_EQ(conf_parse_duration("3x", &ms), -EINVAL);
	EXPECT_EQ(conf_parse_duration("", &ms), -EINVAL);
	EXPECT_EQ(conf_parse_duration("99999999999999999999", &ms), -ERANGE);
	EXPECT_EQ(ms, 3000);
}

TEST(conf_parse_size_forms)
{
	uint64_t b = 7;

	EXPECT_EQ(conf_parse_size("4096", &b), 0);
	EXPECT_EQ(b, 4096);
	EXPECT_EQ(conf_parse_size("4k", &b), 0);
	EXPECT_EQ(b, 4096);
	EXPECT_EQ(conf_parse_size("4K", &b), 0);
	EXPECT_EQ(b, 4096);
	EXPECT_EQ(conf_parse_size("1M", &b), 0);
	EXPECT_EQ(b, 1 << 20);
	EXPECT_EQ(conf_parse_size("2G", &b), 0);
	EXPECT_EQ(b, 2ull << 30);
	EXPECT_EQ(conf_parse_size("1m", &b), -EINVAL);
	EXPECT_EQ(conf_parse_size("k", &b), -EINVAL);
	EXPECT_EQ(conf_parse_size("17179869184G", &b), -ERANGE);
	EXPECT_EQ(b, 2ull << 30);
}

/* ---- files ---- */

FIXTURE(conf_file) {
	char dir[64];
	char path[PATH_MAX];
	struct conf *c;
	char err[CONF_ERR_MAX];
};

FIXTURE_SETUP(conf_file)
{
	snprintf(self->dir, sizeof(self->dir), "/tmp/conf_test.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->dir));
	snprintf(self->path, sizeof(self->path), "%s/vtpmd.conf", self->dir);
}

FIXTURE_TEARDOWN(conf_file)
{
	conf_free(self->c);
	if (self->path[0]) {
		(void)unlink(self->path);
		(void)rmdir(self->path);
	}
	if (self->dir[0])
		(void)rmdir(self->dir);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ASSERT_NE_NULL(f);
	ASSERT_EQ(fputs(text, f) >= 0, 1);
	ASSERT_EQ(fclose(f), 0);
}

TEST_F(conf_file, loads_regular_file)
{
	write_file(self->path, MIN_CONF "[pool]\nsize = 7\n");
	ASSERT_EQ(conf_load_file(self->path, &self->c, self->err, sizeof(self->err)), 0);
	EXPECT_EQ(self->c->pool_size, 7);
}

TEST_F(conf_file, diagnostics_name_the_path)
{
	char want[PATH_MAX + 64];

	write_file(self->path, MIN_CONF "[pool]\nsize = 0\n");
	ASSERT_EQ(conf_load_file(self->path, &self->c, self->err, sizeof(self->err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:5: size: '0' is out of range (1 to 256)", self->path);
	EXPECT_STREQ(self->err, want);
	EXPECT_NULL(self->c);
}

TEST_F(conf_file, missing_file)
{
	char want[PATH_MAX + 64];

	EXPECT_EQ(conf_load_file(self->path, &self->c, self->err, sizeof(self->err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: No such file or directory", self->path);
	EXPECT_STREQ(self->err, want);
	EXPECT_NULL(self->c);
}

TEST_F(conf_file, directory_rejected)
{
	char want[PATH_MAX + 64];

	ASSERT_EQ(mkdir(self->path, 0700), 0);
	EXPECT_EQ(conf_load_file(self->path, &self->c, self->err, sizeof(self->err)), -EISDIR);
	snprintf(want, sizeof(want), "%s: Is a directory", self->path);
	EXPECT_STREQ(self->err, want);
}

TEST_F(conf_file, fifo_rejected_without_blocking)
{
	char want[PATH_MAX + 64];

	ASSERT_EQ(mkfifo(self->path, 0600), 0);
	EXPECT_EQ(conf_load_file(self->path, &self->c, self->err, sizeof(self->err)), -EINVAL);
	snprintf(want, sizeof(want), "%s: not a regular file", self->path);
	EXPECT_STREQ(self->err, want);
}

TEST_F(conf_file, unreadable_file)
{
	write_file(self->path, MIN_CONF);
	ASSERT_EQ(chmod(self->path, 0), 0);
	if (geteuid() == 0)
		TEST_SKIP("root reads files whatever their mode");
	EXPECT_EQ(conf_load_file(self->path, &self->c, self->err, sizeof(self->err)), -EACCES);
}

TEST_F(conf_file, too_large)
{
	FILE *f = fopen(self->path, "w");
	int i;

	ASSERT_NE_NULL(f);
	for (i = 0; i < 1024 * 1024 / 16 + 1; i++)
		fputs("# 16 byte line\n\n", f);
	ASSERT_EQ(fclose(f), 0);
	EXPECT_EQ(conf_load_file(self->path, &self->c, self->err, sizeof(self->err)), -EFBIG);
}

TEST_HARNESS_MAIN
