#include "network.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netlink.h"
#include "pbdec.h"
#include "ttrpc.h"
#include "util.h"

#define FIELD_MAX 96

struct ip {
	int family; /* AF_INET, AF_INET6 */
	uint8_t addr[16];
	size_t len;
	int prefix; /* -1: none given */
};

/* ------------------------------------------------------------------ parsing */

static int parse_ip(const char *s, struct ip *ip)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);

	if (n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	ip->prefix = -1;
	if (inet_pton(AF_INET, buf, ip->addr) == 1) {
		ip->family = AF_INET;
		ip->len = 4;
	} else if (inet_pton(AF_INET6, buf, ip->addr) == 1) {
		ip->family = AF_INET6;
		ip->len = 16;
	} else {
		return -1;
	}
	if (slash) {
		char *end;
		long v = strtol(slash + 1, &end, 10);
		if (end == slash + 1 || *end || v < 0 || v > (long)ip->len * 8)
			return -1;
		ip->prefix = (int)v;
	}
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char tail;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

/* The interface with this MAC address (SIOCGIFHWADDR over every interface), or 0. */
static unsigned index_by_mac(const uint8_t mac[6], char *name, size_t cap)
{
	struct if_nameindex *list = if_nameindex();
	unsigned found = 0;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	for (struct if_nameindex *i = list; fd >= 0 && i && i->if_index; i++) {
		struct ifreq ifr;
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", i->if_name);
		if (ioctl(fd, SIOCGIFHWADDR, &ifr) == 0 && memcmp(ifr.ifr_hwaddr.sa_data, mac, 6) == 0) {
			found = i->if_index;
			snprintf(name, cap, "%s", i->if_name);
			break;
		}
	}
	if (fd >= 0)
		close(fd);
	if (list)
		if_freenameindex(list);
	return found;
}

static int netlink_error(struct status *st, const char *field, const char *what)
{
	return fail(st, CODE_FAILED_PRECONDITION, "%s: %s: %s", field, what, strerror(errno));
}

static int link_set(unsigned index, uint32_t flags, uint32_t change, const char *name, uint32_t mtu)
{
	struct nl_ifinfomsg ifi = {AF_UNSPEC, 0, 0, (int32_t)index, flags, change};
	struct nl_request r;

	nl_request_init(&r, RTM_NEWLINK, 0, &ifi, sizeof(ifi));
	if (name)
		nl_request_attr(&r, IFLA_IFNAME, name, strlen(name) + 1);
	if (mtu)
		nl_request_attr(&r, IFLA_MTU, &mtu, sizeof(mtu));
	return nl_transact(&r);
}

/* ------------------------------------------------------------------ UpdateInterface */

struct ipaddress_fields {
	uint32_t family; /* the address says it */
	char *address, *mask;
};

static const struct pbd_field IPADDRESS_FIELDS[] = {
	PBD_FIELD(1, PBD_UINT32, struct ipaddress_fields, family, "family"),
	PBD_FIELD(2, PBD_STRING, struct ipaddress_fields, address, "address"),
	PBD_FIELD(3, PBD_STRING, struct ipaddress_fields, mask, "mask"),
};

static int decode_ipaddress(struct pbdec *d, const char *field, const uint8_t *data, size_t len, struct ip *ip)
{
	struct ipaddress_fields f = {0};

	if (pbd_message(d, data, len, field, IPADDRESS_FIELDS, PBD_COUNT(IPADDRESS_FIELDS), &f, NULL, NULL) < 0)
		return -1;
	if (!f.address || parse_ip(f.address, ip) < 0 || ip->prefix >= 0)
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s.address: \"%s\" is not an IP address", field,
			    f.address ? f.address : "");
	if (f.mask && *f.mask) {
		char *end;
		long v = strtol(f.mask, &end, 10);
		if (*end || v < 0 || v > (long)ip->len * 8)
			return fail(d->st, CODE_INVALID_ARGUMENT, "%s.mask: \"%s\" is not a prefix length", field, f.mask);
		ip->prefix = (int)v;
	} else {
		ip->prefix = (int)ip->len * 8;
	}
	return 0;
}

static int add_address(unsigned index, const struct ip *ip)
{
	struct nl_ifaddrmsg ifa = {(uint8_t)ip->family, (uint8_t)ip->prefix, 0, 0, index};
	struct nl_request r;

	nl_request_init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &ifa, sizeof(ifa));
	nl_request_attr(&r, IFA_LOCAL, ip->addr, ip->len);
	nl_request_attr(&r, IFA_ADDRESS, ip->addr, ip->len);
	return nl_transact(&r);
}

struct interface_fields {
	char *device, *name, *hwaddr;
	uint64_t mtu;
	struct ip addrs[16];
	size_t naddrs;
};

static const struct pbd_field INTERFACE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct interface_fields, device, "device"),
	PBD_FIELD(2, PBD_STRING, struct interface_fields, name, "name"),
	PBD_FIELD(4, PBD_UINT64, struct interface_fields, mtu, "mtu"),
	PBD_FIELD(5, PBD_STRING, struct interface_fields, hwaddr, "hwAddr"),
};

struct update_interface {
	struct pbd_bytes interface;
};

static const struct pbd_field UPDATE_INTERFACE_FIELDS[] = {
	PBD_FIELD(1, PBD_BYTES, struct update_interface, interface, "interface"),
};

/* IPAddresses=3 (devicePath, type, raw_flags: not used) */
static int interface_nested(struct pbdec *d, struct pb_reader *r, uint32_t number, uint32_t wt, void *ctx)
{
	struct interface_fields *f = ctx;
	const uint8_t *p;
	size_t n;
	char field[FIELD_MAX];

	if (number != 3)
		return 1;
	fmt(field, sizeof(field), "interface.IPAddresses[%zu]", f->naddrs);
	if (f->naddrs == sizeof(f->addrs) / sizeof(f->addrs[0]))
		return fail(d->st, CODE_INVALID_ARGUMENT, "interface.IPAddresses: more than 16 addresses");
	if (pbd_bytes(d, r, wt, field, &p, &n) < 0)
		return -1;
	return decode_ipaddress(d, field, p, n, &f->addrs[f->naddrs++]);
}

void network_update_interface(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct update_interface req = {0};
	struct pbd_bytes *iface = &req.interface;
	struct interface_fields f;
	char field[FIELD_MAX], current[IF_NAMESIZE + 1] = "";
	unsigned index = 0;

	memset(&f, 0, sizeof(f));
	if (pbd_message(&d, payload, len, "UpdateInterfaceRequest", UPDATE_INTERFACE_FIELDS,
			PBD_COUNT(UPDATE_INTERFACE_FIELDS), &req, NULL, NULL) < 0)
		goto error;
	if (!iface->present) {
		fail(&st, CODE_INVALID_ARGUMENT, "interface: missing");
		goto error;
	}
	if (pbd_message(&d, iface->data, iface->len, "interface", INTERFACE_FIELDS, PBD_COUNT(INTERFACE_FIELDS), &f,
			interface_nested, &f) < 0)
		goto error;
	char *device = f.device, *name = f.name, *hwaddr = f.hwaddr;
	uint64_t mtu = f.mtu;
	if (mtu > UINT32_MAX) {
		fail(&st, CODE_INVALID_ARGUMENT, "interface.mtu: %llu is too large", (unsigned long long)mtu);
		goto error;
	}
	if (hwaddr && *hwaddr) {
		uint8_t mac[6];
		if (parse_mac(hwaddr, mac) < 0) {
			fail(&st, CODE_INVALID_ARGUMENT, "interface.hwAddr: \"%s\" is not a MAC address", hwaddr);
			goto error;
		}
		index = index_by_mac(mac, current, sizeof(current));
		if (!index) {
			fail(&st, CODE_NOT_FOUND, "interface.hwAddr \"%s\": no interface with this address in the guest",
			     hwaddr);
			goto error;
		}
	} else {
		const char *want = device && *device ? device : name;
		if (!want || !*want) {
			fail(&st, CODE_INVALID_ARGUMENT, "interface: neither hwAddr nor device nor name is given");
			goto error;
		}
		index = if_nametoindex(want);
		if (!index) {
			fail(&st, CODE_NOT_FOUND, "interface.%s \"%s\": no such interface in the guest",
			     device && *device ? "device" : "name", want);
			goto error;
		}
		snprintf(current, sizeof(current), "%s", want);
	}
	if (name && *name && strcmp(name, current) != 0) {
		if (strlen(name) >= IF_NAMESIZE) {
			fail(&st, CODE_INVALID_ARGUMENT, "interface.name: \"%s\" is too long", name);
			goto error;
		}
		if (link_set(index, 0, IFF_UP, NULL, 0) < 0 || link_set(index, 0, 0, name, 0) < 0) {
			netlink_error(&st, "interface.name", "renaming the interface");
			goto error;
		}
	}
	if (mtu && link_set(index, 0, 0, NULL, (uint32_t)mtu) < 0) {
		netlink_error(&st, "interface.mtu", "setting the MTU");
		goto error;
	}
	for (size_t i = 0; i < f.naddrs; i++) {
		if (add_address(index, &f.addrs[i]) < 0) {
			snprintf(field, sizeof(field), "interface.IPAddresses[%zu]", i);
			netlink_error(&st, field, "adding the address");
			goto error;
		}
	}
	if (link_set(index, IFF_UP, IFF_UP, NULL, 0) < 0) {
		netlink_error(&st, "interface", "bringing the interface up");
		goto error;
	}
	server_reply(ref, NULL, iface->data, iface->len); /* types.Interface: as applied */
	arena_free(&a);
	return;
error:
	status_prefix(&st, "UpdateInterface");
	server_reply(ref, &st, NULL, 0);
	arena_free(&a);
}

/* ------------------------------------------------------------------ UpdateRoutes */

/* UpdateRoutesRequest and AddARPNeighborsRequest both wrap a list: {1: List {1: repeated item}}.
 * Calls fn for each item ("<list>[i]"); list and list_len: the wrapped list as it came. */
typedef int (*item_fn)(struct pbdec *d, const char *field, const uint8_t *data, size_t len, void *ctx);

static int for_each_item(struct pbdec *d, const uint8_t *payload, size_t len, const char *request,
			 const char *list_name, const char *item_name, item_fn fn, void *ctx, const uint8_t **list,
			 size_t *list_len)
{
	struct pb_reader r, lr;
	uint32_t f, wt;
	const uint8_t *p;
	size_t n, count = 0;
	char field[FIELD_MAX];

	*list = NULL;
	*list_len = 0;
	pb_reader_init(&r, payload, len);
	while (!pb_at_end(&r)) {
		if (pbd_key(d, &r, request, &f, &wt) < 0 ||
		    (f == 1 ? pbd_bytes(d, &r, wt, list_name, list, list_len) : pbd_skip(d, &r, wt, request)) < 0)
			return -1;
	}
	pb_reader_init(&lr, *list ? *list : payload, *list_len);
	while (!pb_at_end(&lr)) {
		if (pbd_key(d, &lr, list_name, &f, &wt) < 0)
			return -1;
		if (f != 1) {
			if (pbd_skip(d, &lr, wt, list_name) < 0)
				return -1;
			continue;
		}
		fmt(field, sizeof(field), "%s.%s[%zu]", list_name, item_name, count++);
		if (pbd_bytes(d, &lr, wt, field, &p, &n) < 0 || fn(d, field, p, n, ctx) < 0)
			return -1;
	}
	return 0;
}

struct route {
	char *dest, *gateway, *device, *source;
	uint32_t scope;
};

static const struct pbd_field ROUTE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct route, dest, "dest"),
	PBD_FIELD(2, PBD_STRING, struct route, gateway, "gateway"),
	PBD_FIELD(3, PBD_STRING, struct route, device, "device"),
	PBD_FIELD(4, PBD_STRING, struct route, source, "source"),
	PBD_FIELD(5, PBD_UINT32, struct route, scope, "scope"),
};

static int add_route(const struct route *rt, const char *field, struct status *st)
{
	struct ip dst = {0}, gw = {0}, src = {0};
	bool is_default = !rt->dest || !*rt->dest || strcmp(rt->dest, "default") == 0;
	unsigned index = 0;
	int family = 0;

	if (!is_default && parse_ip(rt->dest, &dst) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "%s.dest: \"%s\" is not an address/prefix", field, rt->dest);
	if (!is_default) {
		family = dst.family;
		if (dst.prefix < 0)
			dst.prefix = (int)dst.len * 8;
	}
	if (rt->gateway && *rt->gateway) {
		if (parse_ip(rt->gateway, &gw) < 0 || gw.prefix >= 0 || (family && gw.family != family))
			return fail(st, CODE_INVALID_ARGUMENT, "%s.gateway: \"%s\" is not an address of the route's family",
				    field, rt->gateway);
		family = gw.family;
	}
	if (rt->source && *rt->source && (parse_ip(rt->source, &src) < 0 || src.prefix >= 0))
		return fail(st, CODE_INVALID_ARGUMENT, "%s.source: \"%s\" is not an address", field, rt->source);
	if (!family)
		family = src.family ? src.family : AF_INET;
	if (rt->device && *rt->device) {
		index = if_nametoindex(rt->device);
		if (!index)
			return fail(st, CODE_NOT_FOUND, "%s.device \"%s\": no such interface in the guest", field, rt->device);
	}
	if (!index && !gw.family)
		return fail(st, CODE_INVALID_ARGUMENT, "%s: neither a device nor a gateway", field);
	struct nl_rtmsg m = {(uint8_t)family, (uint8_t)(is_default ? 0 : dst.prefix), 0, 0, RT_TABLE_MAIN,
			     RTPROT_BOOT, (uint8_t)rt->scope, RTN_UNICAST, 0};
	struct nl_request r;
	nl_request_init(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &m, sizeof(m));
	if (!is_default)
		nl_request_attr(&r, RTA_DST, dst.addr, dst.len);
	if (gw.family)
		nl_request_attr(&r, RTA_GATEWAY, gw.addr, gw.len);
	if (index)
		nl_request_attr(&r, RTA_OIF, &index, sizeof(index));
	if (src.family)
		nl_request_attr(&r, RTA_PREFSRC, src.addr, src.len);
	if (nl_transact(&r) < 0)
		return netlink_error(st, field, "adding the route");
	return 0;
}

struct route_list {
	struct route *items;
	size_t n, cap;
};

static int collect_route(struct pbdec *d, const char *field, const uint8_t *data, size_t len, void *ctx)
{
	struct route_list *l = ctx;

	if (arena_reserve(d->arena, (void **)&l->items, &l->cap, l->n + 1, sizeof(*l->items)) < 0)
		return pbd_nomem(d, field);
	memset(&l->items[l->n], 0, sizeof(*l->items));
	return pbd_message(d, data, len, field, ROUTE_FIELDS, PBD_COUNT(ROUTE_FIELDS), &l->items[l->n++], NULL, NULL);
}

void network_update_routes(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct route_list l = {0};
	const uint8_t *routes;
	size_t routes_len;
	char field[FIELD_MAX];

	if (for_each_item(&d, payload, len, "UpdateRoutesRequest", "routes", "Routes", collect_route, &l, &routes,
			  &routes_len) < 0)
		goto error;
	/* routes to a link first: a gateway must be reachable before a route through it is added */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < l.n; i++) {
			bool has_gw = l.items[i].gateway && *l.items[i].gateway;
			if (has_gw != (pass == 1))
				continue;
			fmt(field, sizeof(field), "routes.Routes[%zu]", i);
			if (add_route(&l.items[i], field, &st) < 0)
				goto error;
		}
	}
	server_reply(ref, NULL, routes, routes_len); /* Routes: as applied */
	arena_free(&a);
	return;
error:
	status_prefix(&st, "UpdateRoutes");
	server_reply(ref, &st, NULL, 0);
	arena_free(&a);
}

/* ------------------------------------------------------------------ AddARPNeighbors */

struct neighbor_fields {
	struct pbd_bytes ip;
	char *device, *lladdr;
	int32_t state, flags;
};

static const struct pbd_field NEIGHBOR_FIELDS[] = {
	PBD_FIELD(1, PBD_BYTES, struct neighbor_fields, ip, "toIPAddress"),
	PBD_FIELD(2, PBD_STRING, struct neighbor_fields, device, "device"),
	PBD_FIELD(3, PBD_STRING, struct neighbor_fields, lladdr, "lladdr"),
	PBD_FIELD(4, PBD_INT32, struct neighbor_fields, state, "state"),
	PBD_FIELD(5, PBD_INT32, struct neighbor_fields, flags, "flags"),
};

static int add_neighbor(struct pbdec *d, const char *field, const uint8_t *data, size_t len, void *ctx)
{
	struct neighbor_fields f;
	char ipfield[FIELD_MAX];
	struct ip ip;
	uint8_t mac[6];

	(void)ctx;
	memset(&f, 0, sizeof(f));
	if (pbd_message(d, data, len, field, NEIGHBOR_FIELDS, PBD_COUNT(NEIGHBOR_FIELDS), &f, NULL, NULL) < 0)
		return -1;
	const uint8_t *ipmsg = f.ip.present ? f.ip.data : NULL;
	size_t iplen = f.ip.len;
	char *device = f.device, *lladdr = f.lladdr;
	int32_t state = f.state, flags = f.flags;
	fmt(ipfield, sizeof(ipfield), "%s.toIPAddress", field);
	if (!ipmsg)
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s: missing", ipfield);
	if (decode_ipaddress(d, ipfield, ipmsg, iplen, &ip) < 0)
		return -1;
	if (!lladdr || parse_mac(lladdr, mac) < 0)
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s.lladdr: \"%s\" is not a MAC address", field,
			    lladdr ? lladdr : "");
	unsigned index = device && *device ? if_nametoindex(device) : 0;
	if (!index)
		return fail(d->st, CODE_NOT_FOUND, "%s.device \"%s\": no such interface in the guest", field,
			    device ? device : "");
	struct nl_ndmsg nd = {(uint8_t)ip.family, 0, 0, (int32_t)index, (uint16_t)(state ? state : NUD_PERMANENT),
			      (uint8_t)flags, 0};
	struct nl_request req;
	nl_request_init(&req, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, &nd, sizeof(nd));
	nl_request_attr(&req, NDA_DST, ip.addr, ip.len);
	nl_request_attr(&req, NDA_LLADDR, mac, sizeof(mac));
	if (nl_transact(&req) < 0)
		return netlink_error(d->st, field, "adding the neighbour");
	return 0;
}

void network_add_arp_neighbors(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	const uint8_t *neighbors;
	size_t neighbors_len;

	if (for_each_item(&d, payload, len, "AddARPNeighborsRequest", "neighbors", "ARPNeighbors", add_neighbor, NULL,
			  &neighbors, &neighbors_len) < 0) {
		status_prefix(&st, "AddARPNeighbors");
		server_reply(ref, &st, NULL, 0);
	} else {
		server_reply(ref, NULL, NULL, 0);
	}
	arena_free(&a);
}
