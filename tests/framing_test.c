#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fusedev.h"
#include "harness.h"

/* A command of len bytes whose header says size. */
static void cmd_fill(uint8_t *buf, size_t len, uint32_t size)
{
	memset(buf, 0xa5, len);
	if (len >= 2) {
		buf[0] = 0x80;
		buf[1] = 0x01;
	}
	if (len >= 6) {
		buf[2] = size >> 24;
		buf[3] = size >> 16;
		buf[4] = size >> 8;
		buf[5] = size;
	}
}

static int check(size_t len, uint32_t size)
{
	static uint8_t buf[3 * FUSEDEV_BUF_SIZE];

	cmd_fill(buf, len, size);
	return fusedev_framing_check(buf, len);
}

TEST(accepts_bare_header)
{
	EXPECT_EQ(check(FUSEDEV_HEADER_SIZE, FUSEDEV_HEADER_SIZE), 0);
}

TEST(accepts_getrandom)
{
	static const uint8_t cmd[] = {
		0x80, 0x01, 0x00, 0x00, 0x00, 0x0c,
		0x00, 0x00, 0x01, 0x7b, 0x00, 0x08,
	};

	EXPECT_EQ(fusedev_framing_check(cmd, sizeof(cmd)), 0);
}

TEST(accepts_full_buffer)
{
	EXPECT_EQ(check(FUSEDEV_BUF_SIZE, FUSEDEV_BUF_SIZE), 0);
	EXPECT_EQ(check(FUSEDEV_BUF_SIZE - 1, FUSEDEV_BUF_SIZE - 1), 0);
}

TEST(accepts_every_size_in_range)
{
	size_t len;
	int bad = 0;

	for (len = FUSEDEV_HEADER_SIZE; len <= FUSEDEV_BUF_SIZE; len++)
		bad += check(len, len) != 0;
	EXPECT_EQ(bad, 0);
}

TEST(oversize_is_e2big)
{
	EXPECT_EQ(check(FUSEDEV_BUF_SIZE + 1, FUSEDEV_BUF_SIZE + 1), -E2BIG);
	EXPECT_EQ(check(2 * FUSEDEV_BUF_SIZE, 2 * FUSEDEV_BUF_SIZE), -E2BIG);
	EXPECT_EQ(check(3 * FUSEDEV_BUF_SIZE, 12), -E2BIG);
}

TEST(e2big_wins_over_bad_header)
{
	/* the kernel tests the length first, before it looks at the header */
	EXPECT_EQ(check(FUSEDEV_BUF_SIZE + 1, 0), -E2BIG);
	EXPECT_EQ(check(FUSEDEV_BUF_SIZE + 1, 0xffffffff), -E2BIG);
}

TEST(empty_is_einval)
{
	EXPECT_EQ(fusedev_framing_check(NULL, 0), -EINVAL);
}

TEST(shorter_than_header_is_einval)
{
	size_t len;

	/* even when the size field is there and agrees (len 6 to 9) */
	for (len = 1; len < FUSEDEV_HEADER_SIZE; len++) {
		EXPECT_EQ(check(len, len), -EINVAL);
		EXPECT_EQ(check(len, FUSEDEV_HEADER_SIZE), -EINVAL);
	}
}

TEST(header_size_larger_than_write_is_einval)
{
	EXPECT_EQ(check(12, 13), -EINVAL);
	EXPECT_EQ(check(12, FUSEDEV_BUF_SIZE), -EINVAL);
	EXPECT_EQ(check(FUSEDEV_BUF_SIZE, FUSEDEV_BUF_SIZE + 1), -EINVAL);
	EXPECT_EQ(check(12, 0xffffffff), -EINVAL);
}

TEST(header_size_smaller_than_write_is_einval)
{
	/* the kernel lets trailing bytes through; we do not */
	EXPECT_EQ(check(13, 12), -EINVAL);
	EXPECT_EQ(check(FUSEDEV_BUF_SIZE, FUSEDEV_BUF_SIZE - 1), -EINVAL);
	EXPECT_EQ(check(12, FUSEDEV_HEADER_SIZE), -EINVAL);
	EXPECT_EQ(check(12, 0), -EINVAL);
}

TEST(size_field_is_big_endian)
{
	uint8_t buf[0x102];

	cmd_fill(buf, sizeof(buf), 0x102);
	EXPECT_EQ(fusedev_framing_check(buf, sizeof(buf)), 0);
	buf[2] = 0x02;
	buf[3] = 0x01;
	buf[4] = 0x00;
	buf[5] = 0x00;
	EXPECT_EQ(fusedev_framing_check(buf, sizeof(buf)), -EINVAL);
}

TEST(tag_is_not_checked)
{
	uint8_t buf[12];

	/* a bad tag is the TPM's to answer (TPM_RC_BAD_TAG), not an errno */
	cmd_fill(buf, sizeof(buf), sizeof(buf));
	buf[0] = 0x12;
	buf[1] = 0x34;
	EXPECT_EQ(fusedev_framing_check(buf, sizeof(buf)), 0);
}

TEST_HARNESS_MAIN
