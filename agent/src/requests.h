/* Decoding the container and process requests of agent.proto (every error names the field). */
#ifndef OSB_REQUESTS_H
#define OSB_REQUESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "oci.h"
#include "pbdec.h"
#include "storage.h"

/* The requests made of container_id=1 and maybe exec_id=2 and one value. */
enum ids_layout {
	IDS_CONTAINER,       /* StartContainer { container_id=1 } */
	IDS_CONTAINER_VALUE, /* RemoveContainer { container_id=1, timeout=2 uint32 } */
	IDS_PROCESS,         /* WaitProcess, CloseStdin { container_id=1, exec_id=2 } */
	IDS_PROCESS_VALUE,   /* SignalProcess.signal, ReadStream.len { ..., 3 uint32 } */
	IDS_PROCESS_DATA,    /* WriteStream { ..., data=3 bytes } */
};

struct ids_request {
	char *container_id, *exec_id;
	uint32_t value;
	struct pbd_bytes data;
};

/* need_exec: exec_id must be a valid id (else it may also be empty). */
int decode_ids_request(struct pbdec *d, const uint8_t *payload, size_t len, enum ids_layout layout,
		       bool need_exec, struct ids_request *r);

struct create_request {
	char *container_id, *exec_id;
	struct storage_set storages;
	bool has_spec;
	struct oci_spec spec;
	bool sandbox_pidns;
};

int decode_create_request(struct pbdec *d, const uint8_t *payload, size_t len, struct create_request *r);

struct exec_request {
	char *container_id, *exec_id;
	bool has_process;
	struct oci_process process;
};

int decode_exec_request(struct pbdec *d, const uint8_t *payload, size_t len, struct exec_request *r);

#endif
