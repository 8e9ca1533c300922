#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define MEM_BLOCK_SIZE_PATH "/sys/devices/system/memory/block_size_bytes"
#define MEM_HOTPLUG_PROBE_PATH "/sys/devices/system/memory/probe"

struct agent_info g_agent;

static bool bytes_eq(const uint8_t *p, size_t n, const char *s)
{
	return n == strlen(s) && memcmp(p, s, n) == 0;
}

static void set_error(struct call_result *res, int32_t code, const char *fmt, const char *a, const char *b)
{
	res->code = code;
	snprintf(res->message, sizeof(res->message), fmt, a, b);
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

static void health_check(struct pb_writer *out)
{
	/* HealthCheckResponse { ServingStatus status = 1; }  SERVING = 1 */
	pb_put_int32(out, 1, 1);
}

static void health_version(struct pb_writer *out)
{
	/* VersionCheckResponse { string grpc_version = 1; string agent_version = 2; } */
	pb_put_string(out, 1, API_VERSION);
	pb_put_string(out, 2, g_agent.version);
}

/* Like Kata: a missing file means "0 / not supported"; any other failure is an error. */
static int read_mem_block_size(uint64_t *size, char *err, size_t errcap)
{
	char buf[64];
	char *end;

	*size = 0;
	if (read_small_file(MEM_BLOCK_SIZE_PATH, buf, sizeof(buf)) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errcap, "reading %s: %s", MEM_BLOCK_SIZE_PATH, strerror(errno));
		return -1;
	}
	char *p = buf;
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	errno = 0;
	unsigned long long v = strtoull(p, &end, 16);
	while (*end == ' ' || *end == '\t' || *end == '\n')
		end++;
	if (end == p || *end != '\0' || errno != 0 || *p == '-') {
		snprintf(err, errcap, "invalid memory block size in %s", MEM_BLOCK_SIZE_PATH);
		return -1;
	}
	*size = v;
	return 0;
}

static void guest_details(const uint8_t *data, size_t len, struct pb_writer *out, struct call_result *res)
{
	bool want_block_size, want_probe;
	uint64_t block_size = 0;
	bool probe = false;
	struct stat st;

	if (decode_guest_details_request(data, len, &want_block_size, &want_probe) < 0) {
		set_error(res, CODE_INVALID_ARGUMENT, "malformed %s%s", "GuestDetailsRequest", "");
		return;
	}
	if (want_block_size && read_mem_block_size(&block_size, res->message, sizeof(res->message)) < 0) {
		res->code = CODE_INTERNAL;
		return;
	}
	if (want_probe) {
		if (stat(MEM_HOTPLUG_PROBE_PATH, &st) == 0) {
			probe = true;
		} else if (errno != ENOENT) {
			set_error(res, CODE_INTERNAL, "stat %s: %s", MEM_HOTPLUG_PROBE_PATH, strerror(errno));
			return;
		}
	}

	/* AgentDetails { version=1, init_daemon=2, device_handlers=3, storage_handlers=4,
	 *                supports_seccomp=5, extra_features=6 } -- no handlers, no seccomp. */
	uint8_t details_buf[256];
	struct pb_writer details;
	pb_writer_init(&details, details_buf, sizeof(details_buf));
	pb_put_string(&details, 1, g_agent.version);
	pb_put_bool(&details, 2, g_agent.init_daemon);

	/* GuestDetailsResponse { mem_block_size_bytes=1, agent_details=2, support_mem_hotplug_probe=3 } */
	pb_put_uint64(out, 1, block_size);
	pb_put_bytes(out, 2, details.buf, details.len);
	pb_put_bool(out, 3, probe);
	if (details.overflow)
		out->overflow = true;
}

void service_call(const struct ttrpc_request *req, struct pb_writer *out, struct call_result *res)
{
	char svc[96], meth[96];

	res->code = CODE_OK;
	res->message[0] = '\0';
	res->destroy = false;

	if (bytes_eq(req->service, req->service_len, "grpc.Health")) {
		if (bytes_eq(req->method, req->method_len, "Check") ||
		    bytes_eq(req->method, req->method_len, "Version")) {
			if (decode_check_request(req->payload, req->payload_len) < 0) {
				set_error(res, CODE_INVALID_ARGUMENT, "malformed %s%s", "CheckRequest", "");
				return;
			}
			if (req->method_len == 5)
				health_check(out);
			else
				health_version(out);
			goto done;
		}
	} else if (bytes_eq(req->service, req->service_len, "grpc.AgentService")) {
		if (bytes_eq(req->method, req->method_len, "GetGuestDetails")) {
			guest_details(req->payload, req->payload_len, out, res);
			goto done;
		}
		if (bytes_eq(req->method, req->method_len, "DestroySandbox")) {
			/* DestroySandboxRequest {} -> google.protobuf.Empty */
			if (pb_validate(req->payload, req->payload_len) < 0) {
				set_error(res, CODE_INVALID_ARGUMENT, "malformed %s%s", "DestroySandboxRequest", "");
				return;
			}
			res->destroy = true;
			goto done;
		}
	} else {
		sanitize_ascii(svc, sizeof(svc), req->service, req->service_len);
		set_error(res, CODE_UNIMPLEMENTED, "unknown service %s%s", svc, "");
		return;
	}
	sanitize_ascii(svc, sizeof(svc), req->service, req->service_len);
	sanitize_ascii(meth, sizeof(meth), req->method, req->method_len);
	set_error(res, CODE_UNIMPLEMENTED, "%s/%s is not implemented", svc, meth);
	return;
done:
	if (res->code == CODE_OK && out->overflow)
		set_error(res, CODE_INTERNAL, "response too large%s%s", "", "");
}
