#include "loop.h"

#include <stdlib.h>

#define MAX_TICKERS 8

struct watch {
	unsigned id;
	int fd;
	short events;
	loop_fn fn;
	void *ctx;
};

static struct {
	struct watch *w;
	size_t n, cap;
	unsigned next_id;
	loop_tick_fn tickers[MAX_TICKERS];
	size_t ntickers;
} L;

static struct watch *find(unsigned id)
{
	for (size_t i = 0; i < L.n; i++)
		if (L.w[i].id == id)
			return &L.w[i];
	return NULL;
}

unsigned loop_watch(int fd, short events, loop_fn fn, void *ctx)
{
	if (L.n == L.cap) {
		size_t ncap = L.cap ? L.cap * 2 : 16;
		struct watch *p = realloc(L.w, ncap * sizeof(*p));
		if (!p)
			return 0;
		L.w = p;
		L.cap = ncap;
	}
	if (++L.next_id == 0)
		L.next_id = 1;
	L.w[L.n++] = (struct watch){L.next_id, fd, events, fn, ctx};
	return L.next_id;
}

void loop_set_events(unsigned id, short events)
{
	struct watch *w = find(id);

	if (w)
		w->events = events;
}

void loop_unwatch(unsigned id)
{
	struct watch *w = find(id);

	if (w)
		*w = L.w[--L.n];
}

void loop_add_ticker(loop_tick_fn fn)
{
	if (L.ntickers < MAX_TICKERS)
		L.tickers[L.ntickers++] = fn;
}

size_t loop_count(void)
{
	return L.n;
}

size_t loop_fill(struct pollfd *pfd, unsigned *ids, size_t cap)
{
	size_t k = 0;

	for (size_t i = 0; i < L.n && k < cap; i++) {
		if (!L.w[i].events)
			continue;
		pfd[k] = (struct pollfd){.fd = L.w[i].fd, .events = L.w[i].events};
		ids[k++] = L.w[i].id;
	}
	return k;
}

void loop_dispatch(unsigned id, short revents)
{
	struct watch *w = find(id);

	if (w)
		w->fn(w->ctx, revents);
}

uint64_t loop_tick(uint64_t now)
{
	uint64_t wake = UINT64_MAX;

	for (size_t i = 0; i < L.ntickers; i++) {
		uint64_t t = L.tickers[i](now);
		if (t < wake)
			wake = t;
	}
	return wake;
}
