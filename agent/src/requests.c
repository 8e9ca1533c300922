#include "requests.h"

#include <stdio.h>
#include <string.h>

#include "container.h"
#include "ttrpc.h"

int decode_ids_request(struct pbdec *d, const uint8_t *payload, size_t len, enum ids_layout layout,
		       bool need_exec, struct ids_request *r)
{
	struct pb_reader rd;
	uint32_t field, wt;
	bool has_exec = layout >= IDS_PROCESS;
	uint32_t value_field = layout == IDS_CONTAINER_VALUE ? 2 : layout >= IDS_PROCESS_VALUE ? 3 : 0;

	memset(r, 0, sizeof(*r));
	pb_reader_init(&rd, payload, len);
	while (!pb_at_end(&rd)) {
		if (pbd_key(d, &rd, "request", &field, &wt) < 0)
			return -1;
		int rc;
		if (field == 1)
			rc = pbd_string(d, &rd, wt, "container_id", &r->container_id);
		else if (field == 2 && has_exec)
			rc = pbd_string(d, &rd, wt, "exec_id", &r->exec_id);
		else if (field == value_field && layout == IDS_PROCESS_DATA)
			rc = pbd_bytes(d, &rd, wt, "data", &r->data, &r->data_len);
		else if (field == value_field)
			rc = pbd_uint32(d, &rd, wt, layout == IDS_CONTAINER_VALUE ? "timeout" : "request field 3", &r->value);
		else
			rc = pbd_skip(d, &rd, wt, "request");
		if (rc < 0)
			return -1;
	}
	if (!r->container_id)
		r->container_id = "";
	if (!r->exec_id)
		r->exec_id = "";
	if (validate_id("container_id", r->container_id, d->st) < 0)
		return -1;
	if (has_exec && (need_exec || *r->exec_id) && validate_id("exec_id", r->exec_id, d->st) < 0)
		return -1;
	return 0;
}

static int validate_ids(struct pbdec *d, const char *container_id, const char *exec_id)
{
	if (validate_id("container_id", container_id ? container_id : "", d->st) < 0 ||
	    validate_id("exec_id", exec_id ? exec_id : "", d->st) < 0)
		return -1;
	return 0;
}

int decode_create_request(struct pbdec *d, const uint8_t *payload, size_t len, struct create_request *r)
{
	struct pb_reader rd;
	uint32_t field, wt;
	const uint8_t *p;
	size_t n;
	char name[32];

	memset(r, 0, sizeof(*r));
	pb_reader_init(&rd, payload, len);
	while (!pb_at_end(&rd)) {
		if (pbd_key(d, &rd, "CreateContainerRequest", &field, &wt) < 0)
			return -1;
		int rc;
		switch (field) {
		case 1:
			rc = pbd_string(d, &rd, wt, "container_id", &r->container_id);
			break;
		case 2:
			rc = pbd_string(d, &rd, wt, "exec_id", &r->exec_id);
			break;
		case 4:
			rc = pbd_bytes(d, &rd, wt, "devices", &p, &n);
			if (rc == 0)
				rc = fail(d->st, CODE_INVALID_ARGUMENT,
					  "devices: hotplugged devices are not supported by this agent");
			break;
		case 5:
			snprintf(name, sizeof(name), "storages[%zu]", r->storages.n);
			rc = pbd_bytes(d, &rd, wt, name, &p, &n) < 0 ? -1 : storage_decode(d, name, p, n, &r->storages);
			break;
		case 6:
			r->has_spec = true;
			rc = pbd_bytes(d, &rd, wt, "OCI", &p, &n) < 0 ? -1 : oci_decode_spec(d, p, n, &r->spec);
			break;
		case 7:
			rc = pbd_bool(d, &rd, wt, "sandbox_pidns", &r->sandbox_pidns);
			break;
		default: /* string_user (the spec has the numeric user), shared_mounts, stdio ports */
			rc = pbd_skip(d, &rd, wt, "CreateContainerRequest");
		}
		if (rc < 0)
			return -1;
	}
	if (validate_ids(d, r->container_id, r->exec_id) < 0)
		return -1;
	if (!r->has_spec)
		return fail(d->st, CODE_INVALID_ARGUMENT, "OCI: missing; CreateContainer needs the container's spec");
	if (r->sandbox_pidns)
		return fail(d->st, CODE_INVALID_ARGUMENT,
			    "sandbox_pidns: a pid namespace shared by the sandbox is not supported by this agent");
	return 0;
}

int decode_exec_request(struct pbdec *d, const uint8_t *payload, size_t len, struct exec_request *r)
{
	struct pb_reader rd;
	uint32_t field, wt;
	const uint8_t *p;
	size_t n;

	memset(r, 0, sizeof(*r));
	pb_reader_init(&rd, payload, len);
	while (!pb_at_end(&rd)) {
		if (pbd_key(d, &rd, "ExecProcessRequest", &field, &wt) < 0)
			return -1;
		int rc;
		if (field == 1) {
			rc = pbd_string(d, &rd, wt, "container_id", &r->container_id);
		} else if (field == 2) {
			rc = pbd_string(d, &rd, wt, "exec_id", &r->exec_id);
		} else if (field == 4) {
			r->has_process = true;
			rc = pbd_bytes(d, &rd, wt, "process", &p, &n) < 0
				     ? -1 : oci_decode_process(d, "process", p, n, &r->process);
		} else {
			rc = pbd_skip(d, &rd, wt, "ExecProcessRequest");
		}
		if (rc < 0)
			return -1;
	}
	if (validate_ids(d, r->container_id, r->exec_id) < 0)
		return -1;
	if (!r->has_process)
		return fail(d->st, CODE_INVALID_ARGUMENT, "process: missing; ExecProcess needs the process to run");
	return 0;
}
