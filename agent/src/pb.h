/* Minimal protobuf (proto3) wire-format codec: a bounds-checked reader and a fixed-buffer writer. */
#ifndef OSB_PB_H
#define OSB_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pb_wire_type {
	PB_WT_VARINT = 0,
	PB_WT_I64 = 1,
	PB_WT_LEN = 2,
	PB_WT_I32 = 5,
};

/* ---- reader ---- */

struct pb_reader {
	const uint8_t *p;
	const uint8_t *end;
};

static inline void pb_reader_init(struct pb_reader *r, const uint8_t *data, size_t len)
{
	r->p = data;
	r->end = data + len;
}

static inline bool pb_at_end(const struct pb_reader *r)
{
	return r->p >= r->end;
}

/* All readers return 0 on success and -1 on malformed or truncated input. */
int pb_read_varint(struct pb_reader *r, uint64_t *out);
/* Reads a field key; rejects field number 0, numbers above 2^29-1 and the group wire types. */
int pb_read_key(struct pb_reader *r, uint32_t *field, uint32_t *wire_type);
/* Reads the body of a length-delimited field (after its key). */
int pb_read_len(struct pb_reader *r, const uint8_t **data, size_t *len);
/* Skips the body of a field of the given wire type (after its key). */
int pb_skip(struct pb_reader *r, uint32_t wire_type);
/* Checks that data[0..len) is a well-formed sequence of fields (no semantics). */
int pb_validate(const uint8_t *data, size_t len);

/* ---- writer ---- */

struct pb_writer {
	uint8_t *buf;
	size_t cap;
	size_t len;
	bool overflow; /* set when a write did not fit; the content is then unusable */
};

static inline void pb_writer_init(struct pb_writer *w, uint8_t *buf, size_t cap)
{
	w->buf = buf;
	w->cap = cap;
	w->len = 0;
	w->overflow = false;
}

void pb_put_raw(struct pb_writer *w, const void *data, size_t len);
void pb_put_varint(struct pb_writer *w, uint64_t v);
void pb_put_key(struct pb_writer *w, uint32_t field, uint32_t wire_type);
/* Length-delimited field (always emitted, also when empty). */
void pb_put_bytes(struct pb_writer *w, uint32_t field, const void *data, size_t len);
/* proto3 scalar fields: omitted when they hold the default value. */
void pb_put_string(struct pb_writer *w, uint32_t field, const char *s);
void pb_put_uint64(struct pb_writer *w, uint32_t field, uint64_t v);
void pb_put_int32(struct pb_writer *w, uint32_t field, int32_t v);
void pb_put_bool(struct pb_writer *w, uint32_t field, bool v);

#endif
