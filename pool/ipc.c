#include "ipc.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "internal.h"

/*
 * Send one frame whose payload is a followed by b (either may be empty).
 * Returns 0, -EPIPE when the peer has gone, -EMSGSIZE when the payload is
 * larger than IPC_PAYLOAD_MAX, or another negative errno.  Both sides.
 */
int ipc_send(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen)
{
	uint8_t hdr[IPC_HDR_LEN];
	struct iovec iov[3] = {
		{ .iov_base = hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)a, .iov_len = alen },
		{ .iov_base = (void *)b, .iov_len = blen },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 3 };
	ssize_t n;

	if (alen + blen > IPC_PAYLOAD_MAX)
		return -EMSGSIZE;
	pool_put_be32(hdr, type);
	pool_put_be32(hdr + 4, (uint32_t)(alen + blen));

	do {
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNRESET ? -EPIPE : -errno;
	if ((size_t)n != sizeof(hdr) + alen + blen)
		return -EIO;

	return 0;
}

/*
 * Receive one frame into buf (payload only) and check it: the packet must
 * hold a whole header and exactly the payload length it announces.  Returns
 * 0, -EPIPE when the peer closed the socket, -EMSGSIZE when the packet did
 * not fit buf, -EBADMSG for a malformed frame, or another negative errno.
 * Both sides.
 */
int ipc_recv(int fd, uint32_t *ret_type, uint8_t *buf, size_t size, size_t *ret_len)
{
	uint8_t hdr[IPC_HDR_LEN];
	struct iovec iov[2] = {
		{ .iov_base = hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = buf, .iov_len = size },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n;

	do {
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNRESET ? -EPIPE : -errno;
	if (n == 0)
		return -EPIPE;
	if (msg.msg_flags & MSG_TRUNC)
		return -EMSGSIZE;
	if ((size_t)n < sizeof(hdr) || pool_get_be32(hdr + 4) != (size_t)n - sizeof(hdr))
		return -EBADMSG;

	*ret_type = pool_get_be32(hdr);
	*ret_len = (size_t)n - sizeof(hdr);

	return 0;
}

/*
 * Send an IPC_STATUS or IPC_READY frame.  Returns as ipc_send().
 */
int ipc_send_status(int fd, uint32_t type, const struct ipc_status *st)
{
	uint8_t p[IPC_STATUS_LEN];

	pool_put_be32(p, (uint32_t)st->status);
	pool_put_be32(p + 4, st->rc);
	pool_put_be32(p + 8, st->flags);

	return ipc_send(fd, type, p, sizeof(p), NULL, 0);
}

/*
 * Decode a status payload.  Returns 0, or -EBADMSG when it has the wrong
 * size or a status that is not 0 or a negative errno.
 */
int ipc_status_parse(const uint8_t *p, size_t len, struct ipc_status *ret)
{
	int32_t status;

	if (len != IPC_STATUS_LEN)
		return -EBADMSG;
	status = (int32_t)pool_get_be32(p);
	if (status > 0 || status < -4095)
		return -EBADMSG;

	ret->status = status;
	ret->rc = pool_get_be32(p + 4);
	ret->flags = pool_get_be32(p + 8);

	return 0;
}
