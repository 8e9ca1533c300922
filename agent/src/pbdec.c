#include "pbdec.h"

#include <string.h>

#include "ttrpc.h"
#include "util.h"

static int malformed(struct pbdec *d, const char *name)
{
	return fail(d->st, CODE_INVALID_ARGUMENT, "%s: malformed protobuf field", name);
}

int pbd_nomem(struct pbdec *d, const char *name)
{
	return fail(d->st, CODE_RESOURCE_EXHAUSTED, "%s: out of memory", name);
}

int pbd_key(struct pbdec *d, struct pb_reader *r, const char *name, uint32_t *field, uint32_t *wt)
{
	if (pb_read_key(r, field, wt) < 0)
		return malformed(d, name);
	return 0;
}

int pbd_skip(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name)
{
	if (pb_skip(r, wt) < 0)
		return malformed(d, name);
	return 0;
}

int pbd_bytes(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, const uint8_t **p, size_t *n)
{
	if (wt != PB_WT_LEN || pb_read_len(r, p, n) < 0)
		return malformed(d, name);
	return 0;
}

int pbd_string(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, char **out)
{
	const uint8_t *p;
	size_t n;

	if (pbd_bytes(d, r, wt, name, &p, &n) < 0)
		return -1;
	if (memchr(p, 0, n))
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s: contains a NUL byte", name);
	*out = arena_strndup(d->arena, (const char *)p, n);
	return *out ? 0 : pbd_nomem(d, name);
}

int pbd_strv(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, struct strv *v)
{
	char *s;

	if (pbd_string(d, r, wt, name, &s) < 0)
		return -1;
	/* one spare slot keeps the list NULL-terminated (execve wants that) */
	if (arena_reserve(d->arena, (void **)&v->v, &v->cap, v->n + 2, sizeof(char *)) < 0)
		return pbd_nomem(d, name);
	v->v[v->n++] = s;
	v->v[v->n] = NULL;
	return 0;
}

int pbd_uint64(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, uint64_t *v)
{
	if (wt != PB_WT_VARINT || pb_read_varint(r, v) < 0)
		return malformed(d, name);
	return 0;
}

int pbd_int64(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, int64_t *v)
{
	uint64_t u;

	if (pbd_uint64(d, r, wt, name, &u) < 0)
		return -1;
	*v = (int64_t)u;
	return 0;
}

int pbd_uint32(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, uint32_t *v)
{
	uint64_t u;

	if (pbd_uint64(d, r, wt, name, &u) < 0)
		return -1;
	*v = (uint32_t)u; /* protobuf truncates wider varints to 32 bits */
	return 0;
}

int pbd_int32(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, int32_t *v)
{
	uint64_t u;

	if (pbd_uint64(d, r, wt, name, &u) < 0)
		return -1;
	*v = (int32_t)(uint32_t)u;
	return 0;
}

int pbd_bool(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, bool *v)
{
	uint64_t u;

	if (pbd_uint64(d, r, wt, name, &u) < 0)
		return -1;
	*v = u != 0;
	return 0;
}

static int push_u32(struct pbdec *d, const char *name, uint32_t **items, size_t *n, size_t *cap, uint64_t v)
{
	if (arena_reserve(d->arena, (void **)items, cap, *n + 1, sizeof(uint32_t)) < 0)
		return pbd_nomem(d, name);
	(*items)[(*n)++] = (uint32_t)v;
	return 0;
}

int pbd_uint32s(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, uint32_t **items, size_t *n,
		size_t *cap)
{
	uint64_t v;

	if (wt == PB_WT_VARINT) {
		if (pb_read_varint(r, &v) < 0)
			return malformed(d, name);
		return push_u32(d, name, items, n, cap, v);
	}
	const uint8_t *p;
	size_t len;
	if (pbd_bytes(d, r, wt, name, &p, &len) < 0)
		return -1;
	struct pb_reader sub;
	pb_reader_init(&sub, p, len);
	while (!pb_at_end(&sub)) {
		if (pb_read_varint(&sub, &v) < 0)
			return malformed(d, name);
		if (push_u32(d, name, items, n, cap, v) < 0)
			return -1;
	}
	return 0;
}

bool strv_contains(const struct strv *v, const char *s)
{
	for (size_t i = 0; i < v->n; i++)
		if (strcmp(v->v[i], s) == 0)
			return true;
	return false;
}

#define NAME_MAX_LEN 192

static int decode_field(struct pbdec *d, struct pb_reader *r, uint32_t wt, const struct pbd_field *f,
			const char *name, void *dst)
{
	switch (f->kind) {
	case PBD_STRING:
		return pbd_string(d, r, wt, name, dst);
	case PBD_STRV:
		return pbd_strv(d, r, wt, name, dst);
	case PBD_BYTES: {
		struct pbd_bytes *b = dst;
		b->present = true;
		return pbd_bytes(d, r, wt, name, &b->data, &b->len);
	}
	case PBD_BOOL:
		return pbd_bool(d, r, wt, name, dst);
	case PBD_INT32:
		return pbd_int32(d, r, wt, name, dst);
	case PBD_UINT32:
		return pbd_uint32(d, r, wt, name, dst);
	case PBD_INT64:
		return pbd_int64(d, r, wt, name, dst);
	case PBD_UINT64:
		return pbd_uint64(d, r, wt, name, dst);
	case PBD_UINT32S: {
		struct u32v *v = dst;
		return pbd_uint32s(d, r, wt, name, &v->items, &v->n, &v->cap);
	}
	}
	return pbd_skip(d, r, wt, name);
}

int pbd_message(struct pbdec *d, const uint8_t *data, size_t len, const char *msg, const struct pbd_field *fields,
		size_t nfields, void *out, pbd_other_fn other, void *ctx)
{
	struct pb_reader r;
	uint32_t number, wt;
	char name[NAME_MAX_LEN];

	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pbd_key(d, &r, msg, &number, &wt) < 0)
			return -1;
		const struct pbd_field *f = NULL;
		for (size_t i = 0; i < nfields && !f; i++)
			if (fields[i].number == number)
				f = &fields[i];
		int rc;
		if (f) {
			fmt(name, sizeof(name), "%s.%s", msg, f->name);
			rc = decode_field(d, &r, wt, f, name, (char *)out + f->offset);
		} else {
			rc = other ? other(d, &r, number, wt, ctx) : 1;
			if (rc > 0)
				rc = pbd_skip(d, &r, wt, msg);
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}
