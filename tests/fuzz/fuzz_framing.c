/*
 * libFuzzer target: the device's framing rules (fusedev_framing_check) on
 * any write.  Besides not crashing, an accepted write must be one whole
 * command: at least a header, at most 4096 bytes, and its size field equal
 * to its length.
 */
#include <stdint.h>
#include <stdlib.h>

#include "fusedev.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	uint32_t size;

	if (fusedev_framing_check(data, len) != 0)
		return 0;
	size = (uint32_t)data[2] << 24 | (uint32_t)data[3] << 16 | (uint32_t)data[4] << 8 | data[5];
	if (len < FUSEDEV_HEADER_SIZE || len > FUSEDEV_BUF_SIZE || size != len)
		abort();

	return 0;
}
