/* Descriptors and timers of the lifecycle (process pipes, sync sockets), served by the server's poll
 * loop next to its own connections. */
#ifndef OSB_LOOP_H
#define OSB_LOOP_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*loop_fn)(void *ctx, short revents);

/* Watches fd for events; returns a watch id (never 0), or 0 when out of memory. */
unsigned loop_watch(int fd, short events, loop_fn fn, void *ctx);
void loop_set_events(unsigned id, short events);
/* Forgets the watch (the caller closes the descriptor). Safe from inside a callback. */
void loop_unwatch(unsigned id);

/* Something that has deadlines: called every loop iteration, returns its next wake-up time
 * (now_ms() clock) or UINT64_MAX. */
typedef uint64_t (*loop_tick_fn)(uint64_t now);
void loop_add_ticker(loop_tick_fn fn);

/* ---- for the server's loop ---- */
size_t loop_count(void);
/* Fills pfd/ids with the active watches (at most cap); returns how many. */
size_t loop_fill(struct pollfd *pfd, unsigned *ids, size_t cap);
/* Runs the callback of watch id if it still exists. */
void loop_dispatch(unsigned id, short revents);
/* Runs the tickers; returns the earliest wake-up time. */
uint64_t loop_tick(uint64_t now);

#endif
