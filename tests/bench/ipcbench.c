/*
 * vtpmd-ipcbench: the instance process round trip on its own, for the
 * "where the time goes" table of scripts/bench: the daemon's side of
 * pool/inst.c sends TPM2_GetRandom(16) frames to a vtpmd-instance serving
 * a manufactured instance, without FUSE or the multiplexer.
 *
 *   vtpmd-ipcbench HELPER DIR N    (DIR: a manufactured instance; it is
 *                                   started without its volatile state)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inst.h"

static const uint8_t ipcbench_getrandom16[] = {
	0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x10,
};

static uint64_t ipcbench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);

	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int ipcbench_run(struct inst *in, uint64_t *ns, size_t n)
{
	uint8_t rsp[INST_BUF_MAX];
	uint64_t t0;
	size_t len;
	size_t i;
	int r = 0;

	for (i = 0; r == 0 && i < n / 20 + 1; i++)
		r = inst_transmit(in, 0, ipcbench_getrandom16, sizeof(ipcbench_getrandom16), rsp,
				  sizeof(rsp), &len);
	for (i = 0; r == 0 && i < n; i++) {
		t0 = ipcbench_now_ns();
		r = inst_transmit(in, 0, ipcbench_getrandom16, sizeof(ipcbench_getrandom16), rsp,
				  sizeof(rsp), &len);
		ns[i] = ipcbench_now_ns() - t0;
	}

	return r;
}

int main(int argc, char **argv)
{
	struct inst *in = NULL;
	uint64_t *ns;
	size_t n;
	size_t i;
	int r;

	if (argc != 4) {
		fprintf(stderr, "usage: vtpmd-ipcbench HELPER DIR N\n");
		return 2;
	}
	n = strtoul(argv[3], NULL, 10);
	ns = calloc(n ? n : 1, sizeof(*ns));
	if (!ns)
		return 1;
	r = inst_start(argv[1], NULL, argv[2], false, &in);
	if (r == 0 && !inst_is_started(in))
		r = inst_startup(in);
	if (r == 0)
		r = ipcbench_run(in, ns, n);
	inst_stop(in);
	if (r < 0) {
		fprintf(stderr, "vtpmd-ipcbench: %s\n", strerror(-r));
		free(ns);
		return 1;
	}
	printf("{\"op\": \"ipc_getrandom\", \"samples_us\": [");
	for (i = 0; i < n; i++)
		printf("%s%.2f", i ? ", " : "", (double)ns[i] / 1000.0);
	printf("]}\n");
	free(ns);

	return 0;
}
