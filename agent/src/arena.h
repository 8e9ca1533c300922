/* A region allocator: everything decoded from one request lives in one arena and is freed at once. */
#ifndef OSB_ARENA_H
#define OSB_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
	struct arena_block *head;
};

/* Zeroed, max-aligned memory; NULL when out of memory (or n is absurd). */
void *arena_alloc(struct arena *a, size_t n);
/* NUL-terminated copy of s[0..n). */
char *arena_strndup(struct arena *a, const char *s, size_t n);
/* Grows an array of elem-sized items from *cap to at least need items (doubling); 0 or -1. */
int arena_reserve(struct arena *a, void **items, size_t *cap, size_t need, size_t elem);
void arena_free(struct arena *a);

#endif
