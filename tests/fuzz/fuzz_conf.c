/*
 * libFuzzer target: the configuration parser (conf_load_buffer) on any
 * text.  A file it accepts is printed with conf_dump() and freed; an error
 * must come with a message.
 */
#include <stdio.h>
#include <stdlib.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char err[CONF_ERR_MAX] = "";
	struct conf *c = NULL;
	FILE *null;
	int r;

	r = conf_load_buffer("fuzz.conf", (const char *)data, len, &c, err, sizeof(err));
	if (r < 0) {
		if (!err[0] || c)
			abort();
		return 0;
	}
	null = fopen("/dev/null", "w");
	if (null) {
		(void)conf_dump(c, null);
		(void)fclose(null);
	}
	conf_free(c);

	return 0;
}
