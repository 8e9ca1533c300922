/* The single-threaded poll(2) server: listeners, connections, the virtio-serial port, signals. */
#ifndef OSB_SERVER_H
#define OSB_SERVER_H

#include <stdbool.h>

struct server_opts {
	const char *unix_path;   /* --listen-unix: listen on this unix socket (and not on vsock/sysfs port) */
	const char *serial_path; /* --serial-path: use this byte stream as the serial channel */
	bool use_vsock;          /* AF_VSOCK port 1024 */
	bool scan_serial;        /* find the virtio-serial port named channel in sysfs */
	char channel[128];       /* virtio-serial port name */
};

/* Sets up the listeners; exits (or powers off as PID 1) when none can ever be served. */
void server_init(const struct server_opts *opts);

/* Serves until DestroySandbox or a termination signal; does not return. */
_Noreturn void server_loop(void);

#endif
