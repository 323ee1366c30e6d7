/*
 * Hostile input through tpm0: every malformed command gets the kernel's
 * errno or a well-formed TPM error response, and nothing else changes: the
 * same open file goes on working, the active instance stays, no rotation.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "daemon_util.h"

#define HDR(tag, size, cc) \
	(uint8_t)((tag) >> 8), (uint8_t)(tag), 0, 0, (uint8_t)((size) >> 8), (uint8_t)(size), \
	(uint8_t)((cc) >> 24), (uint8_t)((cc) >> 16), (uint8_t)((cc) >> 8), (uint8_t)(cc)
#define U32(v) (uint8_t)((v) >> 24), (uint8_t)((v) >> 16), (uint8_t)((v) >> 8), (uint8_t)(v)

#define ST_NO 0x8001
#define ST_SES 0x8002
#define CC_READPUBLIC 0x173
#define CC_GETRANDOM 0x17b
#define CC_NVREAD 0x14e
#define RS_PW 0x40000009
#define EK_CERT_NV 0x01c00002	/* the RSA EK certificate: exists in every instance */

#define CASE(name_, ...) { .name = name_, .b = { __VA_ARGS__ }, .len = 0 }

struct hostile {
	const char *name;
	uint8_t b[64];
	size_t len;		/* 0: the whole array up to the size field */
};

/*
 * Malformed commands that pass the framing rules and reach the TPM; each
 * must come back as a TPM error.
 */
static const struct hostile tpm_cases[] = {
	CASE("bad tag 0x1234", HDR(0x1234, 12, CC_GETRANDOM), 0, 8),
	CASE("unknown command code 0x0fff", HDR(ST_NO, 10, 0x0fff)),
	CASE("vendor command code", HDR(ST_NO, 10, 0x20000000)),
	CASE("truncated handle area", HDR(ST_NO, 12, CC_READPUBLIC), 0x80, 0x00),
	CASE("missing parameters", HDR(ST_NO, 10, CC_GETRANDOM)),
	CASE("sessions tag without an auth area", HDR(ST_SES, 18, CC_NVREAD),
		U32(0x40000001), U32(EK_CERT_NV)),
	CASE("truncated auth area", HDR(ST_SES, 24, CC_NVREAD), U32(0x40000001),
		U32(EK_CERT_NV), U32(9), 0x40, 0x00),
	CASE("absurd auth size", HDR(ST_SES, 31, CC_NVREAD), U32(0x40000001),
		U32(EK_CERT_NV), U32(0xffffffff), U32(RS_PW), 0, 0, 0, 0, 0),
	CASE("auth size past the end", HDR(ST_SES, 35, CC_NVREAD), U32(0x40000001),
		U32(EK_CERT_NV), U32(40), U32(RS_PW), 0, 0, 0x01, 0, 0, 0, 8, 0, 0),
	CASE("four sessions", HDR(ST_SES, 58, CC_NVREAD), U32(0x40000001),
		U32(EK_CERT_NV), U32(36),
		U32(RS_PW), 0, 0, 0x01, 0, 0, U32(RS_PW), 0, 0, 0x01, 0, 0,
		U32(RS_PW), 0, 0, 0x01, 0, 0, U32(RS_PW), 0, 0, 0x01, 0, 0,
		0, 8, 0, 0),
	CASE("session handle that is not a session", HDR(ST_SES, 35, CC_NVREAD),
		U32(0x40000001), U32(EK_CERT_NV), U32(9), U32(0x81010001), 0, 0, 0x01, 0, 0,
		0, 8, 0, 0),
	CASE("nested size fields larger than the command", HDR(ST_NO, 14, 0x17e),
		0xff, 0xff, 0xff, 0xff),
};

FIXTURE(hostile) {
	struct vd d;
	int fd;
};

FIXTURE_SETUP(hostile)
{
	const char *why = vd_unsupported();

	self->fd = -1;
	if (why)
		TEST_SKIP("%s", why);
	ASSERT_EQ(vd_init(&self->d), 0);
	ASSERT_EQ(vd_write_conf(&self->d, NULL, NULL), 0);
	if (vd_start(&self->d) != 0) {
		vd_sh("cat '%s'", self->d.log);
		ASSERT_TRUE(false);
	}
	self->fd = open(self->d.tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(self->fd, 0);
}

FIXTURE_TEARDOWN(hostile)
{
	if (self->fd >= 0)
		close(self->fd);
	if (self->d.pid > 0)
		(void)vd_stop(&self->d, SIGTERM);
	if (self->d.dir[0])
		EXPECT_TRUE(vd_sanitizer_clean(&self->d));
	vd_cleanup(&self->d);
}

static size_t case_len(const struct hostile *h)
{
	return h->len ? h->len : (size_t)(h->b[4] << 8 | h->b[5]);
}

/* The header's size field (bytes 2..5, big-endian) of a buffer of 6 or more bytes. */
static uint32_t size_field(const uint8_t *b)
{
	return (uint32_t)b[2] << 24 | (uint32_t)b[3] << 16 | (uint32_t)b[4] << 8 | b[5];
}

/* A TPM error response: header, size field equal to its length, rc not 0. */
static bool is_tpm_error(const uint8_t *rsp, ssize_t n)
{
	uint16_t tag;

	if (n < 10)
		return false;
	tag = (uint16_t)(rsp[0] << 8 | rsp[1]);

	return (tag == ST_NO || tag == 0x00c4) && size_field(rsp) == (uint32_t)n &&
	       vd_rc(rsp, n) != 0;
}

static void still_works(int fd, const char *after)
{
	uint8_t rsp[64];
	ssize_t n;

	n = vd_xfer(fd, vd_getrandom8, sizeof(vd_getrandom8), rsp, sizeof(rsp), 10000);
	if (n != 20 || vd_rc(rsp, n) != 0)
		TEST_LOG("GetRandom after \"%s\": len %zd rc 0x%x", after, n, vd_rc(rsp, n));
	EXPECT_EQ(n, 20);
	EXPECT_EQ(vd_rc(rsp, n), 0u);
}

TEST_F_TIMEOUT(hostile, malformed_commands_get_tpm_errors, 120)
{
	char active[128];
	char now[128];
	uint8_t rsp[4096];
	long long commands;
	size_t i;
	ssize_t n;

	vd_status_active(&self->d, active, sizeof(active));
	commands = vd_status_num(&self->d, "commands");
	for (i = 0; i < sizeof(tpm_cases) / sizeof(tpm_cases[0]); i++) {
		const struct hostile *h = &tpm_cases[i];

		n = vd_xfer(self->fd, h->b, case_len(h), rsp, sizeof(rsp), 10000);
		TEST_LOG("%s: len %zd rc 0x%x", h->name, n, vd_rc(rsp, n));
		EXPECT_TRUE(is_tpm_error(rsp, n));
		EXPECT_EQ(read(self->fd, rsp, sizeof(rsp)), 0);
		still_works(self->fd, h->name);
	}
	vd_status_active(&self->d, now, sizeof(now));
	EXPECT_STREQ(active, now);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
	EXPECT_EQ(vd_status_num(&self->d, "commands"), commands + 2 * (long long)i);
	EXPECT_EQ(waitpid(self->d.pid, NULL, WNOHANG), 0);
}

/* The same through tpmrm0, whose resource manager parses handles and sessions itself. */
TEST_F_TIMEOUT(hostile, malformed_commands_through_tpmrm0_get_tpm_errors, 120)
{
	char path[400];
	uint8_t rsp[4096];
	size_t i;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/tpmrm0", self->d.mnt);
	fd = open(path, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	for (i = 0; i < sizeof(tpm_cases) / sizeof(tpm_cases[0]); i++) {
		const struct hostile *h = &tpm_cases[i];

		n = vd_xfer(fd, h->b, case_len(h), rsp, sizeof(rsp), 10000);
		TEST_LOG("tpmrm0: %s: len %zd rc 0x%x", h->name, n, vd_rc(rsp, n));
		EXPECT_TRUE(is_tpm_error(rsp, n));
		still_works(fd, h->name);
	}
	close(fd);
	still_works(self->fd, "tpmrm0 cases");
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
}

TEST_F_TIMEOUT(hostile, malformed_framing_gets_the_kernel_errno, 120)
{
	uint8_t big[4097] = { HDR(ST_NO, 0, CC_GETRANDOM) };
	uint8_t cmd[64] = { HDR(ST_NO, 12, CC_GETRANDOM), 0, 8 };
	long long commands = vd_status_num(&self->d, "commands");
	static const struct {
		const char *name;
		uint32_t size_field;
		size_t len;
		int err;
	} cases[] = {
		{ "size field smaller than the write", 10, 12, EINVAL },
		{ "size field larger than the write", 14, 12, EINVAL },
		{ "size field zero", 0, 12, EINVAL },
		{ "size field 0xffffffff", 0xffffffff, 12, EINVAL },
		{ "shorter than a header", 6, 6, EINVAL },
		{ "one byte", 1, 1, EINVAL },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cmd[2] = (uint8_t)(cases[i].size_field >> 24);
		cmd[3] = (uint8_t)(cases[i].size_field >> 16);
		cmd[4] = (uint8_t)(cases[i].size_field >> 8);
		cmd[5] = (uint8_t)cases[i].size_field;
		errno = 0;
		EXPECT_EQ(write(self->fd, cmd, cases[i].len), -1);
		TEST_LOG("%s: %s", cases[i].name, strerror(errno));
		EXPECT_EQ(errno, cases[i].err);
		still_works(self->fd, cases[i].name);
	}
	big[4] = 0x10;
	big[5] = 0x01;
	EXPECT_EQ(write(self->fd, big, sizeof(big)), -1);
	EXPECT_EQ(errno, E2BIG);
	EXPECT_EQ(write(self->fd, big, 0), 0);
	still_works(self->fd, "4097 bytes");
	/* only the GetRandoms reached the TPM */
	EXPECT_EQ(vd_status_num(&self->d, "commands"), commands + (long long)i + 1);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
}

TEST_F_TIMEOUT(hostile, random_garbage_never_hurts_the_daemon, 300)
{
	uint8_t cmd[512];
	uint8_t rsp[4096];
	unsigned seed = (unsigned)getpid();
	int i;
	size_t len;
	ssize_t n;

	TEST_LOG("seed %u", seed);
	srand(seed);
	for (i = 0; i < 300; i++) {
		len = 10 + (size_t)(rand() % (int)(sizeof(cmd) - 10));
		for (size_t j = 0; j < len; j++)
			cmd[j] = (uint8_t)rand();
		cmd[0] = 0x80;
		cmd[1] = (uint8_t)(rand() % 2 ? 0x01 : 0x02);
		cmd[2] = 0;
		cmd[3] = 0;
		cmd[4] = (uint8_t)(len >> 8);
		cmd[5] = (uint8_t)len;
		cmd[6] = 0;
		cmd[7] = 0;
		cmd[8] = 0x01;		/* a real command code range, random parameters */
		n = vd_xfer(self->fd, cmd, len, rsp, sizeof(rsp), 10000);
		ASSERT_GE(n, 10);
		EXPECT_EQ((ssize_t)size_field(rsp), n);
	}
	still_works(self->fd, "random commands");
	EXPECT_EQ(waitpid(self->d.pid, NULL, WNOHANG), 0);
}

TEST_HARNESS_MAIN
