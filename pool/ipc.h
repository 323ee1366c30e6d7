#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * Framed messages between the daemon and an instance process, over a
 * SOCK_SEQPACKET socketpair (one frame per packet, so a frame is never split
 * or merged).  A frame is an 8-byte header, the message type and the payload
 * length as big-endian 32-bit integers, followed by the payload:
 *
 *   IPC_CMD            locality (1 byte) + TPM command   -> IPC_RSP
 *   IPC_RSP            TPM response bytes
 *   IPC_STARTUP        empty                             -> IPC_STATUS
 *   IPC_DROP_VOLATILE  empty                             -> IPC_STATUS
 *   IPC_SAVE_VOLATILE  empty                             -> IPC_STATUS
 *   IPC_TERMINATE      empty                             -> IPC_STATUS, exit
 *   IPC_STATUS         status, rc, flags (3 x be32): status is 0 or a
 *                      negative errno, rc a TPM response code or 0
 *   IPC_READY          as IPC_STATUS; sent once by the instance after it
 *                      loaded its state, flags IPC_READY_STARTED when the
 *                      state it loaded had TPM2_Startup done
 *
 * Any request may instead be answered with IPC_STATUS carrying an error.
 * An instance that receives a malformed frame answers IPC_STATUS -EBADMSG
 * and exits.
 */

enum ipc_type {
	IPC_CMD = 1,
	IPC_RSP,
	IPC_STATUS,
	IPC_STARTUP,
	IPC_DROP_VOLATILE,
	IPC_SAVE_VOLATILE,
	IPC_TERMINATE,
	IPC_READY,
};

#define IPC_HDR_LEN 8
#define IPC_STATUS_LEN 12
/* Largest payload: a locality byte and a 4096-byte command. */
#define IPC_PAYLOAD_MAX 4097
#define IPC_READY_STARTED 0x1u

struct ipc_status {
	int status;		/* 0 or a negative errno */
	uint32_t rc;		/* TPM response code, 0 if none */
	uint32_t flags;
};

int ipc_send(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen);
int ipc_recv(int fd, uint32_t *ret_type, uint8_t *buf, size_t size, size_t *ret_len);
int ipc_send_status(int fd, uint32_t type, const struct ipc_status *st);
int ipc_status_parse(const uint8_t *p, size_t len, struct ipc_status *ret);
