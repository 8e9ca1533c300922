/* The single-threaded poll(2) server: listeners, connections, the virtio-serial port, signals. */
#ifndef OSB_SERVER_H
#define OSB_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct server_opts {
	const char *unix_path;   /* --listen-unix: listen on this unix socket (and not on vsock/sysfs port) */
	const char *serial_path; /* --serial-path: use this byte stream as the serial channel */
	bool use_vsock;          /* AF_VSOCK port 1024 */
	bool scan_serial;        /* find the virtio-serial port named channel in sysfs */
	char channel[128];       /* virtio-serial port name */
};

/* Sets up the listeners; exits (or powers off as PID 1) when none can ever be served. */
void server_init(const struct server_opts *opts);

/* Who is waiting for the answer to one request: the connection (slot and generation) and the stream
 * id. A call can be answered later (WaitProcess, ReadStdout, ...): keep the ref and reply then. */
struct call_ref {
	uint32_t conn;
	uint32_t gen;
	uint32_t stream_id;
};

/* Queues the response: st NULL or OK -> payload; else the status. A no-op when the connection the
 * request came on has gone (closed, or the serial port's host side reconnected). */
void server_reply(const struct call_ref *ref, const struct status *st, const uint8_t *payload, size_t len);
/* Whether the connection of ref can still receive the answer. */
bool server_call_alive(const struct call_ref *ref);
/* Shut down (power off / exit) once the reply to ref is flushed (or after a short deadline). */
void server_shutdown_after(const struct call_ref *ref);

/* Serves until DestroySandbox or a termination signal; does not return. */
_Noreturn void server_loop(void);

#endif
