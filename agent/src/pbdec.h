/* Typed protobuf field readers for request decoding: values land in an arena, errors name the field. */
#ifndef OSB_PBDEC_H
#define OSB_PBDEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "pb.h"
#include "status.h"

struct pbdec {
	struct arena *arena;
	struct status *st;
};

/* A growable list of NUL-terminated strings. */
struct strv {
	char **v;
	size_t n, cap;
};

/* Each reads the value of the field whose key was just read (wire type wt) and returns 0, or -1 with
 * INVALID_ARGUMENT "<name>: ..." in d->st. Strings must not contain NUL bytes. */
int pbd_string(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, char **out);
int pbd_strv(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, struct strv *v);
int pbd_bytes(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, const uint8_t **p, size_t *n);
int pbd_uint64(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, uint64_t *v);
int pbd_int64(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, int64_t *v);
int pbd_uint32(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, uint32_t *v);
int pbd_int32(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, int32_t *v);
int pbd_bool(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, bool *v);
/* repeated uint32, packed or not */
int pbd_uint32s(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, uint32_t **items, size_t *n,
		size_t *cap);
/* Skips an unknown field. */
int pbd_skip(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name);
/* Reads the next key; -1 with "<name>: malformed" when the bytes are not a field key. */
int pbd_key(struct pbdec *d, struct pb_reader *r, const char *name, uint32_t *field, uint32_t *wt);
/* Out of memory while decoding. */
int pbd_nomem(struct pbdec *d, const char *name);

bool strv_contains(const struct strv *v, const char *s);

/* ---- table-driven messages ---- */

struct pbd_bytes {
	const uint8_t *data;
	size_t len;
	bool present;
};

struct u32v {
	uint32_t *items;
	size_t n, cap;
};

enum pbd_kind {
	PBD_STRING, /* char * (NULL when absent) */
	PBD_STRV,   /* struct strv */
	PBD_BYTES,  /* struct pbd_bytes (also: a nested message to decode later) */
	PBD_BOOL,   /* bool */
	PBD_INT32,  /* int32_t */
	PBD_UINT32, /* uint32_t */
	PBD_INT64,  /* int64_t */
	PBD_UINT64, /* uint64_t */
	PBD_UINT32S /* struct u32v (repeated uint32, packed or not) */
};

struct pbd_field {
	uint32_t number;
	enum pbd_kind kind;
	size_t offset; /* of the member in the output struct */
	const char *name;
};

#define PBD_FIELD(number, kind, type, member, name) {number, kind, offsetof(type, member), name}

/* For fields the table does not list: consume the field and return 0, return 1 to have it skipped,
 * or -1 on an error. */
typedef int (*pbd_other_fn)(struct pbdec *d, struct pb_reader *r, uint32_t number, uint32_t wt, void *ctx);

/* Decodes data into out by the table; errors name "<msg>.<field>". other may be NULL. */
int pbd_message(struct pbdec *d, const uint8_t *data, size_t len, const char *msg, const struct pbd_field *fields,
		size_t nfields, void *out, pbd_other_fn other, void *ctx);

#define PBD_COUNT(table) (sizeof(table) / sizeof((table)[0]))

#endif
