#include "requests.h"

#include <string.h>

#include "container.h"
#include "ttrpc.h"
#include "util.h"

/* The field tables of the id-based requests, by layout (field 3 differs; RemoveContainer's 2 is a
 * timeout). */
static const struct pbd_field CONTAINER_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct ids_request, container_id, "container_id"),
};
static const struct pbd_field CONTAINER_VALUE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct ids_request, container_id, "container_id"),
	PBD_FIELD(2, PBD_UINT32, struct ids_request, value, "timeout"),
};
static const struct pbd_field PROCESS_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct ids_request, container_id, "container_id"),
	PBD_FIELD(2, PBD_STRING, struct ids_request, exec_id, "exec_id"),
};
static const struct pbd_field PROCESS_VALUE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct ids_request, container_id, "container_id"),
	PBD_FIELD(2, PBD_STRING, struct ids_request, exec_id, "exec_id"),
	PBD_FIELD(3, PBD_UINT32, struct ids_request, value, "value"),
};
static const struct pbd_field PROCESS_DATA_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct ids_request, container_id, "container_id"),
	PBD_FIELD(2, PBD_STRING, struct ids_request, exec_id, "exec_id"),
	PBD_FIELD(3, PBD_BYTES, struct ids_request, data, "data"),
};

static const struct {
	const struct pbd_field *fields;
	size_t n;
} LAYOUTS[] = {
	[IDS_CONTAINER] = {CONTAINER_FIELDS, PBD_COUNT(CONTAINER_FIELDS)},
	[IDS_CONTAINER_VALUE] = {CONTAINER_VALUE_FIELDS, PBD_COUNT(CONTAINER_VALUE_FIELDS)},
	[IDS_PROCESS] = {PROCESS_FIELDS, PBD_COUNT(PROCESS_FIELDS)},
	[IDS_PROCESS_VALUE] = {PROCESS_VALUE_FIELDS, PBD_COUNT(PROCESS_VALUE_FIELDS)},
	[IDS_PROCESS_DATA] = {PROCESS_DATA_FIELDS, PBD_COUNT(PROCESS_DATA_FIELDS)},
};

static int validate_ids(struct pbdec *d, const char *container_id, const char *exec_id)
{
	if (validate_id("container_id", container_id ? container_id : "", d->st) < 0 ||
	    validate_id("exec_id", exec_id ? exec_id : "", d->st) < 0)
		return -1;
	return 0;
}

int decode_ids_request(struct pbdec *d, const uint8_t *payload, size_t len, enum ids_layout layout,
		       bool need_exec, struct ids_request *r)
{
	memset(r, 0, sizeof(*r));
	if (pbd_message(d, payload, len, "request", LAYOUTS[layout].fields, LAYOUTS[layout].n, r, NULL, NULL) < 0)
		return -1;
	if (!r->container_id)
		r->container_id = "";
	if (!r->exec_id)
		r->exec_id = "";
	if (validate_id("container_id", r->container_id, d->st) < 0)
		return -1;
	if (layout >= IDS_PROCESS && (need_exec || *r->exec_id) && validate_id("exec_id", r->exec_id, d->st) < 0)
		return -1;
	return 0;
}

static const struct pbd_field CREATE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct create_request, container_id, "container_id"),
	PBD_FIELD(2, PBD_STRING, struct create_request, exec_id, "exec_id"),
	PBD_FIELD(7, PBD_BOOL, struct create_request, sandbox_pidns, "sandbox_pidns"),
};

/* devices=4, storages=5, OCI=6 (string_user: the spec has the numeric user; shared_mounts and the
 * stdio ports are not used) */
static int create_nested(struct pbdec *d, struct pb_reader *rd, uint32_t number, uint32_t wt, void *ctx)
{
	struct create_request *r = ctx;
	const uint8_t *p;
	size_t n;
	char name[32];

	if (number == 4) {
		if (pbd_bytes(d, rd, wt, "devices", &p, &n) < 0)
			return -1;
		return fail(d->st, CODE_INVALID_ARGUMENT, "devices: hotplugged devices are not supported by this agent");
	}
	if (number == 5) {
		fmt(name, sizeof(name), "storages[%zu]", r->storages.n);
		return pbd_bytes(d, rd, wt, name, &p, &n) < 0 ? -1 : storage_decode(d, name, p, n, &r->storages);
	}
	if (number == 6) {
		r->has_spec = true;
		return pbd_bytes(d, rd, wt, "OCI", &p, &n) < 0 ? -1 : oci_decode_spec(d, p, n, &r->spec);
	}
	return 1;
}

int decode_create_request(struct pbdec *d, const uint8_t *payload, size_t len, struct create_request *r)
{
	memset(r, 0, sizeof(*r));
	if (pbd_message(d, payload, len, "CreateContainerRequest", CREATE_FIELDS, PBD_COUNT(CREATE_FIELDS), r,
			create_nested, r) < 0 ||
	    validate_ids(d, r->container_id, r->exec_id) < 0)
		return -1;
	if (!r->has_spec)
		return fail(d->st, CODE_INVALID_ARGUMENT, "OCI: missing; CreateContainer needs the container's spec");
	if (r->sandbox_pidns)
		return fail(d->st, CODE_INVALID_ARGUMENT,
			    "sandbox_pidns: a pid namespace shared by the sandbox is not supported by this agent");
	return 0;
}

static const struct pbd_field EXEC_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct exec_request, container_id, "container_id"),
	PBD_FIELD(2, PBD_STRING, struct exec_request, exec_id, "exec_id"),
};

static int exec_nested(struct pbdec *d, struct pb_reader *rd, uint32_t number, uint32_t wt, void *ctx)
{
	struct exec_request *r = ctx;
	const uint8_t *p;
	size_t n;

	if (number != 4)
		return 1;
	r->has_process = true;
	return pbd_bytes(d, rd, wt, "process", &p, &n) < 0 ? -1 : oci_decode_process(d, "process", p, n, &r->process);
}

int decode_exec_request(struct pbdec *d, const uint8_t *payload, size_t len, struct exec_request *r)
{
	memset(r, 0, sizeof(*r));
	if (pbd_message(d, payload, len, "ExecProcessRequest", EXEC_FIELDS, PBD_COUNT(EXEC_FIELDS), r, exec_nested,
			r) < 0 ||
	    validate_ids(d, r->container_id, r->exec_id) < 0)
		return -1;
	if (!r->has_process)
		return fail(d->st, CODE_INVALID_ARGUMENT, "process: missing; ExecProcess needs the process to run");
	return 0;
}
