/*
 * libFuzzer target: the rotation event decoder (event_rotation_decode),
 * which reads events back from the outbox.  An event it accepts must
 * encode again.
 */
#include <stdlib.h>

#include "event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct event_decoded d;
	char *json = NULL;

	if (event_rotation_decode((const char *)data, len, &d) < 0)
		return 0;
	if (event_rotation_encode(&d.ev, &json) < 0)
		abort();
	free(json);
	event_decoded_clear(&d);

	return 0;
}
