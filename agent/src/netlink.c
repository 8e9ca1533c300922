#include "netlink.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define NLMSG_ERROR 2
#define NETLINK_ROUTE 0
#define ALIGN4(n) (((n) + 3u) & ~3u)

struct nl_msghdr {
	uint32_t len;
	uint16_t type, flags;
	uint32_t seq, pid;
};

struct nl_attr {
	uint16_t len, type;
};

struct nl_sockaddr {
	uint16_t family, pad;
	uint32_t pid, groups;
};

static void put(struct nl_request *r, const void *data, size_t len, size_t padded)
{
	if (r->overflow || r->len + padded > sizeof(r->buf)) {
		r->overflow = 1;
		return;
	}
	memset(r->buf + r->len, 0, padded);
	if (len)
		memcpy(r->buf + r->len, data, len);
	r->len += padded;
}

void nl_request_init(struct nl_request *r, uint16_t type, uint16_t flags, const void *hdr, size_t hdr_len)
{
	struct nl_msghdr h = {0, type, (uint16_t)(NLM_F_REQUEST | NLM_F_ACK | flags), 1, 0};

	r->len = 0;
	r->overflow = 0;
	put(r, &h, sizeof(h), sizeof(h));
	put(r, hdr, hdr_len, ALIGN4(hdr_len));
}

void nl_request_attr(struct nl_request *r, uint16_t type, const void *data, size_t len)
{
	struct nl_attr a = {(uint16_t)(sizeof(a) + len), type};

	put(r, &a, sizeof(a), sizeof(a));
	put(r, data, len, ALIGN4(len));
}

int nl_transact(struct nl_request *r)
{
	struct nl_sockaddr kernel = {16 /* AF_NETLINK */, 0, 0, 0};
	struct timeval tv = {5, 0};
	uint8_t reply[4096];

	if (r->overflow) {
		errno = EMSGSIZE;
		return -1;
	}
	((struct nl_msghdr *)(void *)r->buf)->len = (uint32_t)r->len;
	int fd = socket(16 /* AF_NETLINK */, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (sendto(fd, r->buf, r->len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	for (;;) {
		ssize_t n = recv(fd, reply, sizeof(reply), 0);
		if (n < 0) {
			int saved = errno;
			close(fd);
			errno = saved;
			return -1;
		}
		for (size_t off = 0; off + sizeof(struct nl_msghdr) <= (size_t)n;) {
			struct nl_msghdr h;
			memcpy(&h, reply + off, sizeof(h));
			if (h.len < sizeof(h) || off + h.len > (size_t)n)
				break;
			if (h.type == NLMSG_ERROR && h.len >= sizeof(h) + sizeof(int32_t)) {
				int32_t err;
				memcpy(&err, reply + off + sizeof(h), sizeof(err));
				close(fd);
				if (err == 0)
					return 0;
				errno = -err;
				return -1;
			}
			off += ALIGN4(h.len);
		}
	}
}
