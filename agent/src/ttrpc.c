#include "ttrpc.h"

#include <string.h>

void ttrpc_header_decode(const uint8_t *p, struct ttrpc_header *h)
{
	h->length = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	h->stream_id = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
	h->type = p[8];
	h->flags = p[9];
}

void ttrpc_header_encode(uint8_t *p, const struct ttrpc_header *h)
{
	p[0] = (uint8_t)(h->length >> 24);
	p[1] = (uint8_t)(h->length >> 16);
	p[2] = (uint8_t)(h->length >> 8);
	p[3] = (uint8_t)h->length;
	p[4] = (uint8_t)(h->stream_id >> 24);
	p[5] = (uint8_t)(h->stream_id >> 16);
	p[6] = (uint8_t)(h->stream_id >> 8);
	p[7] = (uint8_t)h->stream_id;
	p[8] = h->type;
	p[9] = h->flags;
}

/* KeyValue { string key = 1; string value = 2; } */
static int decode_key_value(const uint8_t *data, size_t len)
{
	struct pb_reader r;
	uint32_t field, wt;
	const uint8_t *d;
	size_t n;

	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pb_read_key(&r, &field, &wt) < 0)
			return -1;
		if (field == 1 || field == 2) {
			if (wt != PB_WT_LEN || pb_read_len(&r, &d, &n) < 0)
				return -1;
		} else if (pb_skip(&r, wt) < 0) {
			return -1;
		}
	}
	return 0;
}

int ttrpc_request_decode(const uint8_t *data, size_t len, struct ttrpc_request *req)
{
	struct pb_reader r;
	uint32_t field, wt;
	const uint8_t *d;
	size_t n;
	uint64_t v;

	memset(req, 0, sizeof(*req));
	req->service = req->method = req->payload = data; /* valid pointers for empty fields */
	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pb_read_key(&r, &field, &wt) < 0)
			return -1;
		switch (field) {
		case 1:
		case 2:
		case 3:
		case 5:
			if (wt != PB_WT_LEN || pb_read_len(&r, &d, &n) < 0)
				return -1;
			if (field == 1) {
				req->service = d;
				req->service_len = n;
			} else if (field == 2) {
				req->method = d;
				req->method_len = n;
			} else if (field == 3) {
				req->payload = d;
				req->payload_len = n;
			} else {
				if (decode_key_value(d, n) < 0)
					return -1;
				req->metadata_count++;
			}
			break;
		case 4:
			if (wt != PB_WT_VARINT || pb_read_varint(&r, &v) < 0)
				return -1;
			req->timeout_nano = (int64_t)v;
			break;
		default:
			if (pb_skip(&r, wt) < 0)
				return -1;
		}
	}
	return 0;
}

void ttrpc_response_encode(struct pb_writer *w, int32_t code, const char *message, const uint8_t *payload,
			   size_t payload_len)
{
	uint8_t status_buf[512];
	struct pb_writer status;

	pb_writer_init(&status, status_buf, sizeof(status_buf));
	pb_put_int32(&status, 1, code);
	pb_put_string(&status, 2, message);
	if (status.overflow) { /* cannot happen with the agent's short messages; keep the code */
		pb_writer_init(&status, status_buf, sizeof(status_buf));
		pb_put_int32(&status, 1, code);
	}
	/* Status is always present (like containerd's server), empty for OK. */
	pb_put_bytes(w, 1, status.buf, status.len);
	if (payload_len)
		pb_put_bytes(w, 2, payload, payload_len);
}
