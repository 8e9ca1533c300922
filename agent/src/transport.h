/* Listening sockets (AF_VSOCK, AF_UNIX) and the virtio-serial port. */
#ifndef OSB_TRANSPORT_H
#define OSB_TRANSPORT_H

#include <stddef.h>

#define AGENT_VSOCK_PORT 1024u
#define DEFAULT_CHANNEL_NAME "agent.channel.0"
#define CHANNEL_PARAM "agent.channel="

/* Each returns a non-blocking, close-on-exec listening socket, or -1 with errno set. */
int transport_listen_vsock(unsigned port);
int transport_listen_unix(const char *path);

/* The virtio-serial port name: "agent.channel=<name>" from /proc/cmdline (last one wins),
 * else DEFAULT_CHANNEL_NAME. */
void transport_channel_name(char *buf, size_t cap);

/* Scans /sys/class/virtio-ports/<vportXpY>/name for a port called name and stores "/dev/<vportXpY>"
 * in path (creating the device node from .../dev if devtmpfs has not). Returns 0, or -1 if absent. */
int transport_find_serial_port(const char *name, char *path, size_t cap);

/* Opens a serial byte stream read-write, non-blocking; a tty is put into raw mode.
 * Returns the descriptor or -1 with errno set. */
int transport_open_serial(const char *path);

#endif
