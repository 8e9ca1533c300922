#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "container.h"
#include "network.h"
#include "sandbox.h"
#include "streams.h"
#include "util.h"

#define MEM_BLOCK_SIZE_PATH "/sys/devices/system/memory/block_size_bytes"
#define MEM_HOTPLUG_PROBE_PATH "/sys/devices/system/memory/probe"

struct agent_info g_agent;

static bool bytes_eq(const uint8_t *p, size_t n, const char *s)
{
	return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* CheckRequest { string service = 1; } */
static int decode_check_request(const uint8_t *data, size_t len)
{
	struct pb_reader r;
	uint32_t field, wt;
	const uint8_t *d;
	size_t n;

	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pb_read_key(&r, &field, &wt) < 0)
			return -1;
		if (field == 1) {
			if (wt != PB_WT_LEN || pb_read_len(&r, &d, &n) < 0)
				return -1;
		} else if (pb_skip(&r, wt) < 0) {
			return -1;
		}
	}
	return 0;
}

/* GuestDetailsRequest { bool mem_block_size = 1; bool mem_hotplug_probe = 2; } */
static int decode_guest_details_request(const uint8_t *data, size_t len, bool *block_size, bool *probe)
{
	struct pb_reader r;
	uint32_t field, wt;
	uint64_t v;

	*block_size = *probe = false;
	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pb_read_key(&r, &field, &wt) < 0)
			return -1;
		if (field == 1 || field == 2) {
			if (wt != PB_WT_VARINT || pb_read_varint(&r, &v) < 0)
				return -1;
			if (field == 1)
				*block_size = v != 0;
			else
				*probe = v != 0;
		} else if (pb_skip(&r, wt) < 0) {
			return -1;
		}
	}
	return 0;
}

static void reply_writer(const struct call_ref *ref, struct pb_writer *w)
{
	struct status st;

	if (w->overflow) {
		fail(&st, CODE_INTERNAL, "response too large");
		server_reply(ref, &st, NULL, 0);
		return;
	}
	server_reply(ref, NULL, w->buf, w->len);
}

/* Both health calls take a CheckRequest; false (and the error answered) when it is malformed. */
static bool check_request_ok(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct status st;

	if (decode_check_request(payload, len) == 0)
		return true;
	fail(&st, CODE_INVALID_ARGUMENT, "malformed CheckRequest");
	server_reply(ref, &st, NULL, 0);
	return false;
}

static void health_check(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	uint8_t buf[16];
	struct pb_writer w;

	if (!check_request_ok(ref, payload, len))
		return;
	/* HealthCheckResponse { ServingStatus status = 1; }  SERVING = 1 */
	pb_writer_init(&w, buf, sizeof(buf));
	pb_put_int32(&w, 1, 1);
	reply_writer(ref, &w);
}

static void health_version(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	uint8_t buf[256];
	struct pb_writer w;

	if (!check_request_ok(ref, payload, len))
		return;
	/* VersionCheckResponse { string grpc_version = 1; string agent_version = 2; } */
	pb_writer_init(&w, buf, sizeof(buf));
	pb_put_string(&w, 1, API_VERSION);
	pb_put_string(&w, 2, g_agent.version);
	reply_writer(ref, &w);
}

/* Like Kata: a missing file means "0 / not supported"; any other failure is an error. */
static int read_mem_block_size(uint64_t *size, struct status *st)
{
	char buf[64];
	char *end;

	*size = 0;
	if (read_small_file(MEM_BLOCK_SIZE_PATH, buf, sizeof(buf)) < 0) {
		if (errno == ENOENT)
			return 0;
		return fail(st, CODE_INTERNAL, "reading %s: %s", MEM_BLOCK_SIZE_PATH, strerror(errno));
	}
	char *p = buf;
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	errno = 0;
	unsigned long long v = strtoull(p, &end, 16);
	while (*end == ' ' || *end == '\t' || *end == '\n')
		end++;
	if (end == p || *end != '\0' || errno != 0 || *p == '-')
		return fail(st, CODE_INTERNAL, "invalid memory block size in %s", MEM_BLOCK_SIZE_PATH);
	*size = v;
	return 0;
}

static void guest_details(const struct call_ref *ref, const uint8_t *data, size_t len)
{
	bool want_block_size, want_probe;
	uint64_t block_size = 0;
	bool probe = false;
	struct stat sb;
	struct status st;

	if (decode_guest_details_request(data, len, &want_block_size, &want_probe) < 0) {
		fail(&st, CODE_INVALID_ARGUMENT, "malformed GuestDetailsRequest");
		server_reply(ref, &st, NULL, 0);
		return;
	}
	if (want_block_size && read_mem_block_size(&block_size, &st) < 0) {
		server_reply(ref, &st, NULL, 0);
		return;
	}
	if (want_probe) {
		if (stat(MEM_HOTPLUG_PROBE_PATH, &sb) == 0) {
			probe = true;
		} else if (errno != ENOENT) {
			fail(&st, CODE_INTERNAL, "stat %s: %s", MEM_HOTPLUG_PROBE_PATH, strerror(errno));
			server_reply(ref, &st, NULL, 0);
			return;
		}
	}

	/* AgentDetails { version=1, init_daemon=2, device_handlers=3, storage_handlers=4,
	 *                supports_seccomp=5, extra_features=6 } -- no handlers, no seccomp. */
	uint8_t details_buf[256], buf[512];
	struct pb_writer details, w;
	pb_writer_init(&details, details_buf, sizeof(details_buf));
	pb_put_string(&details, 1, g_agent.version);
	pb_put_bool(&details, 2, g_agent.init_daemon);

	/* GuestDetailsResponse { mem_block_size_bytes=1, agent_details=2, support_mem_hotplug_probe=3 } */
	pb_writer_init(&w, buf, sizeof(buf));
	pb_put_uint64(&w, 1, block_size);
	pb_put_bytes(&w, 2, details.buf, details.len);
	pb_put_bool(&w, 3, probe);
	if (details.overflow)
		w.overflow = true;
	reply_writer(ref, &w);
}

static void read_stdout(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	stdio_read(ref, payload, len, 0);
}

static void read_stderr(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	stdio_read(ref, payload, len, 1);
}

typedef void (*handler_fn)(const struct call_ref *ref, const uint8_t *payload, size_t len);

static const struct {
	const char *service, *method;
	handler_fn fn;
} METHODS[] = {
	{"grpc.Health", "Check", health_check},
	{"grpc.Health", "Version", health_version},
	{"grpc.AgentService", "GetGuestDetails", guest_details},
	{"grpc.AgentService", "UpdateInterface", network_update_interface},
	{"grpc.AgentService", "UpdateRoutes", network_update_routes},
	{"grpc.AgentService", "AddARPNeighbors", network_add_arp_neighbors},
	{"grpc.AgentService", "CreateSandbox", sandbox_create},
	{"grpc.AgentService", "DestroySandbox", sandbox_destroy},
	{"grpc.AgentService", "CreateContainer", container_create},
	{"grpc.AgentService", "StartContainer", container_start},
	{"grpc.AgentService", "ExecProcess", container_exec},
	{"grpc.AgentService", "WaitProcess", container_wait},
	{"grpc.AgentService", "SignalProcess", container_signal},
	{"grpc.AgentService", "RemoveContainer", container_remove},
	{"grpc.AgentService", "ReadStdout", read_stdout},
	{"grpc.AgentService", "ReadStderr", read_stderr},
	{"grpc.AgentService", "WriteStdin", stdio_write},
	{"grpc.AgentService", "CloseStdin", stdio_close},
};

void service_call(const struct call_ref *ref, const struct ttrpc_request *req)
{
	char svc[96], meth[96];
	bool known_service = false;
	struct status st;

	for (size_t i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]); i++) {
		if (!bytes_eq(req->service, req->service_len, METHODS[i].service))
			continue;
		known_service = true;
		if (bytes_eq(req->method, req->method_len, METHODS[i].method)) {
			METHODS[i].fn(ref, req->payload, req->payload_len);
			return;
		}
	}
	sanitize_ascii(svc, sizeof(svc), req->service, req->service_len);
	sanitize_ascii(meth, sizeof(meth), req->method, req->method_len);
	if (known_service)
		fail(&st, CODE_UNIMPLEMENTED, "%s/%s is not implemented", svc, meth);
	else
		fail(&st, CODE_UNIMPLEMENTED, "unknown service %s", svc);
	server_reply(ref, &st, NULL, 0);
}
