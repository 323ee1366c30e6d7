#include "fusedev.h"

#include <errno.h>

/* The commandSize field: bytes 2..5 of the header, big-endian. */
static uint32_t framing_size_field(const uint8_t *buf)
{
	return (uint32_t)buf[2] << 24 | (uint32_t)buf[3] << 16 |
	       (uint32_t)buf[4] << 8 | (uint32_t)buf[5];
}

/*
 * Check that buf holds exactly one complete TPM 2.0 command, as one write(2)
 * on the device must.  The rules, in order:
 *
 *   1. len > FUSEDEV_BUF_SIZE (4096): -E2BIG.  The kernel's
 *      tpm_common_write() tests this first, against TPM_BUFSIZE.
 *   2. len < FUSEDEV_HEADER_SIZE (10): -EINVAL.  The kernel only needs the
 *      6 bytes that reach the size field; we are stricter, since no TPM 2.0
 *      command (tag, commandSize, commandCode) is shorter than its header.
 *   3. the header's commandSize (TPM 2.0 Part 1, 18.2) != len: -EINVAL.
 *      The kernel refuses commandSize > len with -EINVAL and lets trailing
 *      bytes through; we refuse both, so one write is one command exactly.
 *
 * The tag is not checked: the TPM answers a bad tag with TPM_RC_BAD_TAG,
 * as behind the kernel.  The kernel tests "busy" (-EBUSY) between rules 1
 * and 2; the caller does that.  Returns 0 or the negative errno above.
 * Pure function, any thread.
 */
int fusedev_framing_check(const uint8_t *buf, size_t len)
{
	if (len > FUSEDEV_BUF_SIZE)
		return -E2BIG;
	if (len < FUSEDEV_HEADER_SIZE)
		return -EINVAL;
	if (framing_size_field(buf) != len)
		return -EINVAL;

	return 0;
}
