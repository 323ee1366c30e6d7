/*
 * The daemon's TPM command helpers: response-code classes, the health
 * probe's command and parser, the command-attribute table, and the rule
 * that decides whether a command may be replayed on a fresh instance.
 */
#include "harness.h"

#include <string.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "tpmcmd.h"
#include "util.h"

TEST(exhaustion_codes)
{
	EXPECT_TRUE(tpmcmd_rc_is_exhaustion(0x901));
	EXPECT_TRUE(tpmcmd_rc_is_exhaustion(0x902));
	EXPECT_TRUE(tpmcmd_rc_is_exhaustion(0x903));
	EXPECT_TRUE(tpmcmd_rc_is_exhaustion(0x905));
	EXPECT_TRUE(tpmcmd_rc_is_exhaustion(0x906));
	EXPECT_TRUE(tpmcmd_rc_is_exhaustion(0x921));
	EXPECT_TRUE(tpmcmd_rc_is_exhaustion(0x14b));
	EXPECT_FALSE(tpmcmd_rc_is_exhaustion(0));
	EXPECT_FALSE(tpmcmd_rc_is_exhaustion(0x904));	/* TPM_RC_MEMORY is not ours to cure */
	EXPECT_FALSE(tpmcmd_rc_is_exhaustion(0x922));	/* TPM_RC_RETRY */
	EXPECT_FALSE(tpmcmd_rc_is_exhaustion(0x98e));	/* AUTH_FAIL on session 1 */
}

TEST(auth_failures_any_session)
{
	EXPECT_TRUE(tpmcmd_rc_is_auth_failure(0x98e));
	EXPECT_TRUE(tpmcmd_rc_is_auth_failure(0x18e));
	EXPECT_TRUE(tpmcmd_rc_is_auth_failure(0x9a2));
	EXPECT_TRUE(tpmcmd_rc_is_auth_failure(0x8e));
	EXPECT_FALSE(tpmcmd_rc_is_auth_failure(0x10e));	/* format 0 */
	EXPECT_FALSE(tpmcmd_rc_is_auth_failure(0x99d));
	EXPECT_FALSE(tpmcmd_rc_is_auth_failure(0));
}

TEST(header_fields)
{
	static const uint8_t cmd[] = { 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8 };
	static const uint8_t rsp[] = { 0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x05 };

	EXPECT_EQ(tpmcmd_code(cmd, sizeof(cmd)), 0x17bu);
	EXPECT_EQ(tpmcmd_code(cmd, 9), 0u);
	EXPECT_EQ(tpmcmd_rc(rsp, sizeof(rsp)), 0x905u);
	EXPECT_EQ(tpmcmd_rc(rsp, 4), (uint32_t)TPM2_RC_FAILURE);
}

TEST(getcap_and_shutdown_bytes)
{
	static const uint8_t want[] = {
		0x80, 0x01, 0, 0, 0, 22, 0, 0, 0x01, 0x7a,
		0, 0, 0, 6, 0, 0, 0x02, 0x04, 0, 0, 0, 12,
	};
	static const uint8_t shut[] = { 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 1 };
	uint8_t buf[64];
	size_t len;

	ASSERT_EQ(tpmcmd_build_getcap(TPM2_CAP_TPM_PROPERTIES, 0x204, 12, buf, sizeof(buf),
				      &len), 0);
	ASSERT_EQ(len, sizeof(want));
	EXPECT_EQ(memcmp(buf, want, len), 0);
	EXPECT_EQ(tpmcmd_build_getcap(1, 2, 3, buf, 20, &len), -ENOBUFS);
	ASSERT_EQ(tpmcmd_build_shutdown(true, buf, sizeof(buf), &len), 0);
	ASSERT_EQ(len, sizeof(shut));
	EXPECT_EQ(memcmp(buf, shut, len), 0);
}

TEST(readpublic_bytes)
{
	static const uint8_t want[] = {
		0x80, 0x01, 0, 0, 0, 14, 0, 0, 0x01, 0x73, 0x81, 0x00, 0x80, 0x00,
	};
	uint8_t buf[32];
	size_t len;

	ASSERT_EQ(tpmcmd_build_readpublic(0x81008000, buf, sizeof(buf), &len), 0);
	ASSERT_EQ(len, sizeof(want));
	EXPECT_EQ(memcmp(buf, want, len), 0);
	EXPECT_EQ(tpmcmd_build_readpublic(0x81008000, buf, 13, &len), -ENOBUFS);
}

static size_t props_response(uint8_t *buf, size_t size, const TPMS_TAGGED_PROPERTY *p, size_t n)
{
	TPMS_CAPABILITY_DATA cap = { .capability = TPM2_CAP_TPM_PROPERTIES };
	size_t off = 10;

	cap.data.tpmProperties.count = (uint32_t)n;
	memcpy(cap.data.tpmProperties.tpmProperty, p, n * sizeof(*p));
	util_put_be16(buf, TPM2_ST_NO_SESSIONS);
	util_put_be32(buf + 6, 0);
	buf[off++] = 0;	/* moreData */
	if (Tss2_MU_TPMS_CAPABILITY_DATA_Marshal(&cap, buf, size, &off) != TSS2_RC_SUCCESS)
		return 0;
	util_put_be32(buf + 2, (uint32_t)off);

	return off;
}

TEST(health_parse)
{
	static const TPMS_TAGGED_PROPERTY p[] = {
		{ TPM2_PT_HR_LOADED_AVAIL, 3 },
		{ TPM2_PT_HR_ACTIVE_AVAIL, 9 },
		{ TPM2_PT_HR_TRANSIENT_AVAIL, 2 },
		{ TPM2_PT_LOCKOUT_COUNTER, 1 },
		{ TPM2_PT_MAX_AUTH_FAIL, 3 },
	};
	struct tpmcmd_health h;
	uint8_t rsp[512];
	size_t len;

	len = props_response(rsp, sizeof(rsp), p, 5);
	ASSERT_GT(len, 0);
	ASSERT_EQ(tpmcmd_parse_health(rsp, len, &h), 0);
	EXPECT_EQ(h.sessions_avail, 9);
	EXPECT_EQ(h.loaded_avail, 3);
	EXPECT_EQ(h.transient_avail, 2);
	EXPECT_EQ(h.lockout_counter, 1);
	EXPECT_EQ(h.max_auth_fail, 3);

	/* missing properties stay unknown */
	len = props_response(rsp, sizeof(rsp), p, 1);
	ASSERT_EQ(tpmcmd_parse_health(rsp, len, &h), 0);
	EXPECT_EQ(h.sessions_avail, -1);
}

TEST(health_parse_rejects_malformed)
{
	static const TPMS_TAGGED_PROPERTY p[] = { { TPM2_PT_HR_ACTIVE_AVAIL, 9 } };
	struct tpmcmd_health h;
	uint8_t rsp[512];
	size_t len;
	size_t cut;

	len = props_response(rsp, sizeof(rsp), p, 1);
	for (cut = 0; cut < len; cut++) {
		util_put_be32(rsp + 2, (uint32_t)cut);
		EXPECT_EQ(tpmcmd_parse_health(rsp, cut, &h), -EBADMSG);
	}
	util_put_be32(rsp + 2, (uint32_t)len);
	util_put_be32(rsp + 6, 0x101);
	EXPECT_EQ(tpmcmd_parse_health(rsp, len, &h), -EIO);
	util_put_be32(rsp + 6, 0);
	util_put_be32(rsp + 2, (uint32_t)len + 1);
	EXPECT_EQ(tpmcmd_parse_health(rsp, len + 1, &h), -EBADMSG);	/* trailing byte */
}

static struct tpmcmd_table *table_with(const uint32_t *cc, const uint8_t *handles, size_t n)
{
	TPMS_CAPABILITY_DATA cap = { .capability = TPM2_CAP_COMMANDS };
	struct tpmcmd_table *t;
	uint8_t rsp[4096];
	size_t off = 10;
	uint32_t next;
	size_t i;

	for (i = 0; i < n; i++)
		cap.data.command.commandAttributes[i] = cc[i] | (uint32_t)handles[i] << 25;
	cap.data.command.count = (uint32_t)n;
	util_put_be16(rsp, TPM2_ST_NO_SESSIONS);
	util_put_be32(rsp + 6, 0);
	rsp[off++] = 0;
	if (Tss2_MU_TPMS_CAPABILITY_DATA_Marshal(&cap, rsp, sizeof(rsp), &off) != TSS2_RC_SUCCESS)
		return NULL;
	util_put_be32(rsp + 2, (uint32_t)off);
	if (tpmcmd_table_new(&t) < 0)
		return NULL;
	if (tpmcmd_table_add(t, rsp, off, &next) < 0 || next != 0) {
		tpmcmd_table_free(t);
		return NULL;
	}

	return t;
}

/* A command with handles and an optional password-only or session auth area. */
static size_t make_cmd(uint8_t *buf, uint32_t cc, const uint32_t *h, size_t nh, uint32_t auth)
{
	size_t off = 10;
	size_t i;

	util_put_be16(buf, auth ? TPM2_ST_SESSIONS : TPM2_ST_NO_SESSIONS);
	util_put_be32(buf + 6, cc);
	for (i = 0; i < nh; i++, off += 4)
		util_put_be32(buf + off, h[i]);
	if (auth) {
		util_put_be32(buf + off, 9);	/* one empty-nonce, empty-hmac auth */
		off += 4;
		util_put_be32(buf + off, auth);
		off += 4;
		util_put_be16(buf + off, 0);
		off += 2;
		buf[off++] = 1;
		util_put_be16(buf + off, 0);
		off += 2;
	}
	util_put_be32(buf + 2, (uint32_t)off);

	return off;
}

TEST(replayable_rule)
{
	static const uint32_t cc[] = { TPM2_CC_CreatePrimary, TPM2_CC_StartAuthSession,
				       TPM2_CC_Quote, TPM2_CC_ContextLoad, TPM2_CC_GetRandom };
	static const uint8_t hs[] = { 1, 2, 1, 0, 0 };
	struct tpmcmd_table *t = table_with(cc, hs, 5);
	uint32_t h[2];
	uint8_t cmd[128];
	size_t len;

	ASSERT_NE_NULL(t);
	EXPECT_EQ(tpmcmd_handle_count(t, TPM2_CC_StartAuthSession), 2);
	EXPECT_EQ(tpmcmd_handle_count(t, TPM2_CC_Load), -ENOENT);

	h[0] = TPM2_RH_OWNER;
	len = make_cmd(cmd, TPM2_CC_CreatePrimary, h, 1, TPM2_RH_PW);
	EXPECT_TRUE(tpmcmd_is_replayable(t, cmd, len));
	len = make_cmd(cmd, TPM2_CC_CreatePrimary, h, 1, 0x02000000);	/* HMAC session */
	EXPECT_FALSE(tpmcmd_is_replayable(t, cmd, len));
	h[0] = h[1] = TPM2_RH_NULL;
	len = make_cmd(cmd, TPM2_CC_StartAuthSession, h, 2, 0);
	EXPECT_TRUE(tpmcmd_is_replayable(t, cmd, len));
	h[0] = 0x80000001;	/* salted with a transient key */
	len = make_cmd(cmd, TPM2_CC_StartAuthSession, h, 2, 0);
	EXPECT_FALSE(tpmcmd_is_replayable(t, cmd, len));
	h[0] = 0x81008000;	/* persistent AK: survives in the fresh instance */
	len = make_cmd(cmd, TPM2_CC_Quote, h, 1, TPM2_RH_PW);
	EXPECT_TRUE(tpmcmd_is_replayable(t, cmd, len));
	len = make_cmd(cmd, TPM2_CC_ContextLoad, h, 0, 0);
	EXPECT_FALSE(tpmcmd_is_replayable(t, cmd, len));
	len = make_cmd(cmd, TPM2_CC_Load, h, 0, 0);	/* unknown to the table */
	EXPECT_FALSE(tpmcmd_is_replayable(t, cmd, len));
	/* truncated handle and auth areas */
	h[0] = TPM2_RH_NULL;
	len = make_cmd(cmd, TPM2_CC_StartAuthSession, h, 2, 0);
	EXPECT_FALSE(tpmcmd_is_replayable(t, cmd, 14));
	h[0] = TPM2_RH_OWNER;
	len = make_cmd(cmd, TPM2_CC_CreatePrimary, h, 1, TPM2_RH_PW);
	EXPECT_FALSE(tpmcmd_is_replayable(t, cmd, len - 1));
	util_put_be32(cmd + 14, 0xffffff00);	/* absurd auth size */
	EXPECT_FALSE(tpmcmd_is_replayable(t, cmd, len));
	tpmcmd_table_free(t);
}

TEST(failure_response)
{
	uint8_t buf[16];
	size_t len;

	ASSERT_EQ(tpmcmd_failure_response(0x101, buf, sizeof(buf), &len), 0);
	EXPECT_EQ(len, 10);
	EXPECT_EQ(tpmcmd_rc(buf, len), 0x101u);
	EXPECT_EQ(tpmcmd_failure_response(0x101, buf, 9, &len), -ENOBUFS);
}

TEST_HARNESS_MAIN
