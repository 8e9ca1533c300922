/* containerd/ttrpc wire format: 10-byte frame header + protobuf Request/Response. */
#ifndef OSB_TTRPC_H
#define OSB_TTRPC_H

#include <stddef.h>
#include <stdint.h>

#include "pb.h"

#define TTRPC_HEADER_LEN 10
#define TTRPC_MAX_MESSAGE (4u << 20) /* payload bytes per frame */

#define TTRPC_TYPE_REQUEST 1
#define TTRPC_TYPE_RESPONSE 2

/* google.rpc.Code values used by the agent */
enum ttrpc_code {
	CODE_OK = 0,
	CODE_INVALID_ARGUMENT = 3,
	CODE_DEADLINE_EXCEEDED = 4,
	CODE_NOT_FOUND = 5,
	CODE_ALREADY_EXISTS = 6,
	CODE_RESOURCE_EXHAUSTED = 8,
	CODE_FAILED_PRECONDITION = 9,
	CODE_UNIMPLEMENTED = 12,
	CODE_INTERNAL = 13,
};

struct ttrpc_header {
	uint32_t length; /* payload length, big-endian on the wire */
	uint32_t stream_id;
	uint8_t type;
	uint8_t flags;
};

void ttrpc_header_decode(const uint8_t *p, struct ttrpc_header *h);
void ttrpc_header_encode(uint8_t *p, const struct ttrpc_header *h);

/* Request { service=1 string, method=2 string, payload=3 bytes, timeout_nano=4 int64,
 *           metadata=5 repeated KeyValue{key=1 string, value=2 string} }
 * The pointers refer into the decoded buffer. */
struct ttrpc_request {
	const uint8_t *service;
	size_t service_len;
	const uint8_t *method;
	size_t method_len;
	const uint8_t *payload;
	size_t payload_len;
	int64_t timeout_nano;
	unsigned metadata_count;
};

/* Returns 0, or -1 when the bytes are not a well-formed Request. */
int ttrpc_request_decode(const uint8_t *data, size_t len, struct ttrpc_request *req);

/* Response { status=1 Status{code=1 int32, message=2 string}, payload=2 bytes } */
void ttrpc_response_encode(struct pb_writer *w, int32_t code, const char *message, const uint8_t *payload,
			   size_t payload_len);

#endif
