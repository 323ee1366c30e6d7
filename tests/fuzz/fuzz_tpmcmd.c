/*
 * libFuzzer target: the daemon's TPM parsing of what an instance and a
 * client send.  The input is split at a 2-byte length: the first part is
 * fed to tpmcmd_table_add() as a GetCapability(TPM_CAP_COMMANDS) response
 * and to tpmcmd_parse_health(), the rest is a client command for
 * tpmcmd_is_replayable() and the header readers.
 */
#include <stdint.h>
#include <stdlib.h>

#include "tpmcmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct tpmcmd_health h;
	struct tpmcmd_table *t;
	uint32_t next = 0;
	size_t split;

	if (len < 2)
		return 0;
	split = (size_t)(data[0] << 8 | data[1]);
	data += 2;
	len -= 2;
	if (split > len)
		split = len;
	if (tpmcmd_table_new(&t) < 0)
		abort();
	(void)tpmcmd_table_add(t, data, split, &next);
	(void)tpmcmd_parse_health(data, split, &h);
	(void)tpmcmd_rc(data, split);
	(void)tpmcmd_code(data + split, len - split);
	(void)tpmcmd_handle_count(t, tpmcmd_code(data + split, len - split));
	(void)tpmcmd_is_replayable(t, data + split, len - split);
	tpmcmd_table_free(t);

	return 0;
}
