#include "pb.h"

#include <string.h>

#define PB_MAX_FIELD ((1u << 29) - 1)

int pb_read_varint(struct pb_reader *r, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 10; i++) {
		if (r->p >= r->end)
			return -1;
		uint8_t b = *r->p++;
		if (i == 9 && b > 1)
			return -1; /* more than 64 bits */
		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return -1;
}

int pb_read_key(struct pb_reader *r, uint32_t *field, uint32_t *wire_type)
{
	uint64_t key;

	if (pb_read_varint(r, &key) < 0)
		return -1;
	uint64_t num = key >> 3;
	uint32_t wt = (uint32_t)(key & 7);
	if (num == 0 || num > PB_MAX_FIELD)
		return -1;
	if (wt != PB_WT_VARINT && wt != PB_WT_I64 && wt != PB_WT_LEN && wt != PB_WT_I32)
		return -1; /* groups (3, 4) and reserved types are not accepted */
	*field = (uint32_t)num;
	*wire_type = wt;
	return 0;
}

int pb_read_len(struct pb_reader *r, const uint8_t **data, size_t *len)
{
	uint64_t n;

	if (pb_read_varint(r, &n) < 0)
		return -1;
	if (n > (uint64_t)(r->end - r->p))
		return -1;
	*data = r->p;
	*len = (size_t)n;
	r->p += n;
	return 0;
}

int pb_skip(struct pb_reader *r, uint32_t wire_type)
{
	uint64_t v;
	const uint8_t *d;
	size_t n;

	switch (wire_type) {
	case PB_WT_VARINT:
		return pb_read_varint(r, &v);
	case PB_WT_I64:
		if (r->end - r->p < 8)
			return -1;
		r->p += 8;
		return 0;
	case PB_WT_I32:
		if (r->end - r->p < 4)
			return -1;
		r->p += 4;
		return 0;
	case PB_WT_LEN:
		return pb_read_len(r, &d, &n);
	default:
		return -1;
	}
}

int pb_validate(const uint8_t *data, size_t len)
{
	struct pb_reader r;
	uint32_t field, wt;

	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pb_read_key(&r, &field, &wt) < 0 || pb_skip(&r, wt) < 0)
			return -1;
	}
	return 0;
}

void pb_put_raw(struct pb_writer *w, const void *data, size_t len)
{
	if (w->overflow || len > w->cap - w->len) {
		w->overflow = true;
		return;
	}
	if (len)
		memcpy(w->buf + w->len, data, len);
	w->len += len;
}

void pb_put_varint(struct pb_writer *w, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	do {
		uint8_t b = v & 0x7f;
		v >>= 7;
		tmp[n++] = b | (v ? 0x80 : 0);
	} while (v);
	pb_put_raw(w, tmp, n);
}

void pb_put_key(struct pb_writer *w, uint32_t field, uint32_t wire_type)
{
	pb_put_varint(w, ((uint64_t)field << 3) | wire_type);
}

void pb_put_bytes(struct pb_writer *w, uint32_t field, const void *data, size_t len)
{
	pb_put_key(w, field, PB_WT_LEN);
	pb_put_varint(w, len);
	pb_put_raw(w, data, len);
}

void pb_put_string(struct pb_writer *w, uint32_t field, const char *s)
{
	if (s && *s)
		pb_put_bytes(w, field, s, strlen(s));
}

void pb_put_uint64(struct pb_writer *w, uint32_t field, uint64_t v)
{
	if (v) {
		pb_put_key(w, field, PB_WT_VARINT);
		pb_put_varint(w, v);
	}
}

void pb_put_int32(struct pb_writer *w, uint32_t field, int32_t v)
{
	if (v) {
		pb_put_key(w, field, PB_WT_VARINT);
		/* negative int32 values are sign-extended to 64 bits on the wire */
		pb_put_varint(w, (uint64_t)(int64_t)v);
	}
}

void pb_put_bool(struct pb_writer *w, uint32_t field, bool v)
{
	if (v) {
		pb_put_key(w, field, PB_WT_VARINT);
		pb_put_varint(w, 1);
	}
}
