/* Decoding the container and process requests of agent.proto (every error names the field). */
#ifndef OSB_REQUESTS_H
#define OSB_REQUESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "oci.h"
#include "pbdec.h"
#include "storage.h"

/* The requests made of container_id=1, exec_id=2 and an optional field 3. */
enum field3 {
	F3_NONE,   /* StartContainer, WaitProcess, CloseStdin */
	F3_UINT32, /* RemoveContainer.timeout, SignalProcess.signal, ReadStream.len */
	F3_BYTES,  /* WriteStream.data */
};

struct ids_request {
	char *container_id, *exec_id;
	uint32_t value;
	const uint8_t *data;
	size_t data_len;
};

/* need_exec: exec_id must be a valid id (else it may be empty). */
int decode_ids_request(struct pbdec *d, const uint8_t *payload, size_t len, enum field3 f3, bool need_exec,
		       struct ids_request *r);

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
