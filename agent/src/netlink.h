/* A minimal rtnetlink client (links, addresses, routes, neighbours). musl ships no kernel headers, so
 * the few structures and constants of the kernel's stable netlink ABI are spelled out here. */
#ifndef OSB_NETLINK_H
#define OSB_NETLINK_H

#include <stddef.h>
#include <stdint.h>

#define RTM_NEWLINK 16
#define RTM_NEWADDR 20
#define RTM_NEWROUTE 24
#define RTM_NEWNEIGH 28

#define NLM_F_REQUEST 0x1
#define NLM_F_ACK 0x4
#define NLM_F_REPLACE 0x100
#define NLM_F_CREATE 0x400

#define IFLA_IFNAME 3
#define IFLA_MTU 4
#define IFA_ADDRESS 1
#define IFA_LOCAL 2
#define RTA_DST 1
#define RTA_OIF 4
#define RTA_GATEWAY 5
#define RTA_PREFSRC 7
#define NDA_DST 1
#define NDA_LLADDR 2

#define RT_TABLE_MAIN 254
#define RTPROT_BOOT 3
#define RTN_UNICAST 1
#define NUD_PERMANENT 0x80

struct nl_ifinfomsg {
	uint8_t family, pad;
	uint16_t type;
	int32_t index;
	uint32_t flags, change;
};

struct nl_ifaddrmsg {
	uint8_t family, prefixlen, flags, scope;
	uint32_t index;
};

struct nl_rtmsg {
	uint8_t family, dst_len, src_len, tos, table, protocol, scope, type;
	uint32_t flags;
};

struct nl_ndmsg {
	uint8_t family, pad1;
	uint16_t pad2;
	int32_t ifindex;
	uint16_t state;
	uint8_t flags, type;
};

#define NL_REQUEST_MAX 1024

struct nl_request {
	uint8_t buf[NL_REQUEST_MAX];
	size_t len;
	int overflow;
};

/* Starts a request: message type, extra flags (NLM_F_CREATE, ...), the fixed header (ifinfomsg...). */
void nl_request_init(struct nl_request *r, uint16_t type, uint16_t flags, const void *hdr, size_t hdr_len);
void nl_request_attr(struct nl_request *r, uint16_t type, const void *data, size_t len);
/* Sends it over a fresh NETLINK_ROUTE socket and waits for the acknowledgement: 0, or -1 with errno
 * set to the kernel's answer. */
int nl_transact(struct nl_request *r);

#endif
