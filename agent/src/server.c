#include "server.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "init.h"
#include "loop.h"
#include "service.h"
#include "transport.h"
#include "ttrpc.h"
#include "util.h"

#define MAX_CONNS 128
#define READ_CHUNK 65536u
#define READ_CHUNKS_PER_EVENT 16    /* fairness between connections */
#define OUT_MAX (16u << 20)         /* unread responses a client may leave queued */
#define IN_KEEP (256u << 10)        /* input buffers above this are released when empty */
#define CLOSE_FLUSH_MS 2000         /* time to flush an error reply before closing */
#define LINGER_MS 1000              /* time to drain the peer's input after our FIN */
#define SHUTDOWN_FLUSH_MS 1000      /* time to flush the DestroySandbox reply */
#define VSOCK_RETRY_MS 2000
#define SERIAL_SCAN_MS 1000         /* re-scan for a missing virtio-serial port */
#define SERIAL_PROBE_MS 100         /* re-check a port whose host side is not connected */
#define SERIAL_QUIET_MS 200         /* resync: silence needed before framing restarts */

enum conn_state { C_FREE = 0, C_OPEN, C_CLOSING, C_LINGER };

struct conn {
	int fd;
	uint32_t gen; /* changes whenever the slot's stream starts over: stale call_refs are ignored */
	enum conn_state state;
	bool abort; /* drop immediately (output overflow, out of memory) */
	uint8_t *in;
	size_t in_len, in_cap, in_need;
	uint8_t *out;
	size_t out_off, out_len, out_cap;
	uint64_t deadline;
};

enum serial_state {
	S_OFF,          /* not configured */
	S_ABSENT,       /* port not found / not openable: re-scan on a timer */
	S_DISCONNECTED, /* open, but the host side is not connected: probe on a timer */
	S_ACTIVE,       /* framing */
	S_CLOSING,      /* protocol error: flushing the error reply */
	S_RESYNC,       /* reopened after an error: discarding input until quiet */
};

static struct {
	const struct server_opts *opts;
	int sigfd;
	int unix_fd;
	int vsock_fd;
	uint64_t vsock_retry_at;
	struct conn conns[MAX_CONNS];

	enum serial_state sstate;
	struct conn serial;
	char serial_dev[160];
	uint64_t serial_timer;
	bool serial_waiting_logged;

	bool shutdown_pending;
	struct conn *shutdown_conn;
	uint64_t shutdown_deadline;

	struct pollfd *pfd; /* poll set, grown with the number of watches */
	size_t pfd_cap;
} S;

/* ------------------------------------------------------------------ buffers */

static void conn_drop_buffers(struct conn *c)
{
	free(c->in);
	free(c->out);
	c->in = c->out = NULL;
	c->in_len = c->in_cap = c->in_need = 0;
	c->out_off = c->out_len = c->out_cap = 0;
	c->abort = false;
	c->gen++;
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	conn_drop_buffers(c);
	c->fd = -1;
	c->state = C_FREE;
}

static void conn_fail(struct conn *c)
{
	c->state = C_CLOSING;
	c->deadline = now_ms() + CLOSE_FLUSH_MS;
	c->in_len = c->in_need = 0; /* whatever follows the bad frame is not looked at */
}

static bool conn_out_pending(const struct conn *c)
{
	return c->out_off < c->out_len;
}

static void conn_append_out(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len - c->out_off + len > OUT_MAX) {
		c->abort = true;
		return;
	}
	if (c->out_cap - c->out_len < len) {
		if (c->out_off > 0) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		if (c->out_cap - c->out_len < len) {
			size_t ncap = c->out_len + len + 4096;
			uint8_t *p = realloc(c->out, ncap);
			if (!p) {
				c->abort = true;
				return;
			}
			c->out = p;
			c->out_cap = ncap;
		}
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Response { status=1 Status, payload=2 } with its frame header, appended to the output. */
static void conn_queue_response(struct conn *c, uint32_t stream_id, int32_t code, const char *message,
				const uint8_t *payload, size_t payload_len)
{
	uint8_t status_buf[STATUS_MESSAGE_MAX + 32], head[TTRPC_HEADER_LEN + 32];
	struct pb_writer st, w;
	struct ttrpc_header h;

	pb_writer_init(&st, status_buf, sizeof(status_buf));
	pb_put_int32(&st, 1, code);
	pb_put_string(&st, 2, message);
	if (st.overflow) { /* messages are bounded by STATUS_MESSAGE_MAX; keep the code regardless */
		pb_writer_init(&st, status_buf, sizeof(status_buf));
		pb_put_int32(&st, 1, code);
	}
	size_t body = 1 + varint_len(st.len) + st.len;
	if (payload_len)
		body += 1 + varint_len(payload_len) + payload_len;
	if (body > TTRPC_MAX_MESSAGE) {
		conn_queue_response(c, stream_id, CODE_INTERNAL, "response too large", NULL, 0);
		return;
	}
	h.length = (uint32_t)body;
	h.stream_id = stream_id;
	h.type = TTRPC_TYPE_RESPONSE;
	h.flags = 0;
	ttrpc_header_encode(head, &h);
	pb_writer_init(&w, head + TTRPC_HEADER_LEN, sizeof(head) - TTRPC_HEADER_LEN);
	/* Status is always present (like containerd's server), empty for OK. */
	pb_put_key(&w, 1, PB_WT_LEN);
	pb_put_varint(&w, st.len);
	conn_append_out(c, head, TTRPC_HEADER_LEN + w.len);
	conn_append_out(c, st.buf, st.len);
	if (payload_len) {
		pb_writer_init(&w, head, sizeof(head));
		pb_put_key(&w, 2, PB_WT_LEN);
		pb_put_varint(&w, payload_len);
		conn_append_out(c, head, w.len);
		conn_append_out(c, payload, payload_len);
	}
}

/* ------------------------------------------------------------------ framing */

static uint32_t conn_index(const struct conn *c)
{
	return c == &S.serial ? MAX_CONNS : (uint32_t)(c - S.conns);
}

static struct conn *ref_conn(const struct call_ref *ref)
{
	struct conn *c = ref->conn == MAX_CONNS ? &S.serial : ref->conn < MAX_CONNS ? &S.conns[ref->conn] : NULL;

	if (!c || c->gen != ref->gen || c->fd < 0 || (c->state != C_OPEN && c->state != C_CLOSING))
		return NULL;
	if (c == &S.serial && S.sstate != S_ACTIVE && S.sstate != S_CLOSING)
		return NULL;
	return c;
}

bool server_call_alive(const struct call_ref *ref)
{
	return ref_conn(ref) != NULL;
}

void server_reply(const struct call_ref *ref, const struct status *st, const uint8_t *payload, size_t len)
{
	struct conn *c = ref_conn(ref);

	if (!c)
		return; /* the caller went away: nobody to answer */
	if (st && st->code != CODE_OK)
		conn_queue_response(c, ref->stream_id, st->code, st->message, NULL, 0);
	else
		conn_queue_response(c, ref->stream_id, CODE_OK, NULL, payload, len);
}

void server_shutdown_after(const struct call_ref *ref)
{
	struct conn *c = ref_conn(ref);

	if (S.shutdown_pending)
		return;
	log_msg("DestroySandbox: %s", g_agent.init_daemon ? "powering off" : "exiting");
	S.shutdown_pending = true;
	S.shutdown_conn = c;
	S.shutdown_deadline = now_ms() + SHUTDOWN_FLUSH_MS;
}

static void handle_request(struct conn *c, uint32_t stream_id, const struct ttrpc_request *req)
{
	struct call_ref ref = {conn_index(c), c->gen, stream_id};

	service_call(&ref, req);
}

static void frame_error(struct conn *c, uint32_t stream_id, int32_t code, const char *message)
{
	conn_queue_response(c, stream_id, code, message, NULL, 0);
	conn_fail(c);
}

/* Handles every complete frame in c->in; a malformed one gets an error reply and closes c. */
static void process_frames(struct conn *c)
{
	size_t off = 0;

	c->in_need = 0;
	while (c->state == C_OPEN && !S.shutdown_pending && !c->abort) {
		struct ttrpc_header h;
		struct ttrpc_request req;
		size_t avail = c->in_len - off;

		if (avail < TTRPC_HEADER_LEN)
			break;
		ttrpc_header_decode(c->in + off, &h);
		if (h.length > TTRPC_MAX_MESSAGE) {
			frame_error(c, h.stream_id, CODE_RESOURCE_EXHAUSTED,
				    "message length exceeds the maximum of 4194304 bytes");
			return;
		}
		if (h.type != TTRPC_TYPE_REQUEST) {
			frame_error(c, h.stream_id, CODE_INVALID_ARGUMENT, "unsupported message type");
			return;
		}
		if ((h.stream_id & 1u) == 0) {
			frame_error(c, h.stream_id, CODE_INVALID_ARGUMENT, "stream id must be odd");
			return;
		}
		if (avail - TTRPC_HEADER_LEN < h.length) {
			c->in_need = TTRPC_HEADER_LEN + h.length;
			break;
		}
		if (ttrpc_request_decode(c->in + off + TTRPC_HEADER_LEN, h.length, &req) < 0) {
			frame_error(c, h.stream_id, CODE_INVALID_ARGUMENT, "malformed request protobuf");
			return;
		}
		handle_request(c, h.stream_id, &req);
		off += TTRPC_HEADER_LEN + h.length;
	}
	if (c->state != C_OPEN)
		return;
	if (off > 0) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	if (c->in_len == 0 && c->in_cap > IN_KEEP) {
		free(c->in);
		c->in = NULL;
		c->in_cap = 0;
	}
}

enum read_result { READ_OK, READ_EOF, READ_ERROR };

/* Reads what is available into c->in (or discards it). */
static enum read_result conn_read(struct conn *c, bool discard, bool *got_data)
{
	uint8_t scratch[4096];

	*got_data = false;
	for (int i = 0; i < READ_CHUNKS_PER_EVENT; i++) {
		uint8_t *dst;
		size_t room;

		if (discard) {
			dst = scratch;
			room = sizeof(scratch);
		} else {
			size_t want = READ_CHUNK;
			if (c->in_need > c->in_len && c->in_need - c->in_len > want)
				want = c->in_need - c->in_len;
			if (c->in_cap - c->in_len < want) {
				size_t ncap = c->in_len + want;
				uint8_t *p = realloc(c->in, ncap);
				if (!p) {
					c->abort = true;
					return READ_ERROR;
				}
				c->in = p;
				c->in_cap = ncap;
			}
			dst = c->in + c->in_len;
			room = c->in_cap - c->in_len;
		}
		ssize_t r = read(c->fd, dst, room);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return READ_OK;
			return READ_ERROR;
		}
		if (r == 0)
			return READ_EOF;
		*got_data = true;
		if (!discard)
			c->in_len += (size_t)r;
		if ((size_t)r < room)
			return READ_OK;
	}
	return READ_OK;
}

/* Returns 0 (possibly with output left for POLLOUT) or -1 on a write error. */
static int conn_flush(struct conn *c)
{
	while (conn_out_pending(c)) {
		ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		c->out_off += (size_t)w;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

/* ------------------------------------------------------------------ socket connections */

static void accept_all(int lfd)
{
	for (;;) {
		struct conn *slot = NULL;
		for (int i = 0; i < MAX_CONNS; i++) {
			if (S.conns[i].state == C_FREE) {
				slot = &S.conns[i];
				break;
			}
		}
		if (!slot)
			return; /* the backlog keeps the rest until a slot frees up */
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		uint32_t gen = slot->gen + 1;
		memset(slot, 0, sizeof(*slot));
		slot->gen = gen;
		slot->fd = fd;
		slot->state = C_OPEN;
	}
}

/* Closing a socket: flush, send FIN, drain until the peer closes, so it reads our reply (no RST). */
static void socket_progress_close(struct conn *c, uint64_t now)
{
	if (c->state == C_CLOSING && !conn_out_pending(c)) {
		shutdown(c->fd, SHUT_WR);
		c->state = C_LINGER;
		c->deadline = now + LINGER_MS;
	}
}

static void socket_event(struct conn *c, short revents)
{
	bool got;

	if (revents & POLLNVAL) {
		conn_close(c);
		return;
	}
	if (c->state == C_OPEN && (revents & (POLLIN | POLLHUP | POLLERR))) {
		enum read_result r = conn_read(c, false, &got);
		if (got)
			process_frames(c);
		if (r == READ_ERROR) {
			conn_close(c);
			return;
		}
		if (r == READ_EOF && c->state == C_OPEN) {
			/* the peer is done sending: a partial frame is dropped, replies still go out */
			c->state = C_CLOSING;
			c->deadline = now_ms() + CLOSE_FLUSH_MS;
			c->in_len = 0;
		}
	} else if (c->state == C_LINGER && (revents & (POLLIN | POLLHUP | POLLERR))) {
		if (conn_read(c, true, &got) != READ_OK) {
			conn_close(c);
			return;
		}
	}
	if (c->abort || conn_flush(c) < 0) {
		conn_close(c);
		return;
	}
	socket_progress_close(c, now_ms());
}

/* ------------------------------------------------------------------ serial port */

static void serial_set_absent(uint64_t now)
{
	if (S.serial.fd >= 0)
		close(S.serial.fd);
	S.serial.fd = -1;
	conn_drop_buffers(&S.serial);
	S.serial.state = C_FREE;
	S.sstate = S_ABSENT;
	S.serial_timer = now + SERIAL_SCAN_MS;
}

/* The host closed its end: forget the stream state and wait for the next host connection. */
static void serial_set_disconnected(uint64_t now)
{
	conn_drop_buffers(&S.serial);
	S.serial.state = C_OPEN;
	S.sstate = S_DISCONNECTED;
	S.serial_timer = now + SERIAL_PROBE_MS;
}

static void serial_try_open(uint64_t now)
{
	const char *path = S.opts->serial_path;

	if (!path) {
		if (transport_find_serial_port(S.opts->channel, S.serial_dev, sizeof(S.serial_dev)) < 0) {
			if (!S.serial_waiting_logged)
				log_msg("waiting for virtio-serial port %s", S.opts->channel);
			S.serial_waiting_logged = true;
			S.serial_timer = now + SERIAL_SCAN_MS;
			return;
		}
	} else {
		snprintf(S.serial_dev, sizeof(S.serial_dev), "%s", path);
	}
	int fd = transport_open_serial(S.serial_dev);
	if (fd < 0) {
		if (!S.serial_waiting_logged)
			log_msg("cannot open serial port %s: %s; retrying", S.serial_dev, strerror(errno));
		S.serial_waiting_logged = true;
		S.serial_timer = now + SERIAL_SCAN_MS;
		return;
	}
	log_msg("serving on serial port %s (%s)", S.serial_dev, path ? "--serial-path" : S.opts->channel);
	S.serial_waiting_logged = false;
	uint32_t gen = S.serial.gen + 1;
	memset(&S.serial, 0, sizeof(S.serial));
	S.serial.gen = gen;
	S.serial.fd = fd;
	S.serial.state = C_OPEN;
	S.sstate = S_ACTIVE;
}

/* After a protocol error: close, reopen, and discard input until SERIAL_QUIET_MS of silence. */
static void serial_reopen(uint64_t now)
{
	close(S.serial.fd);
	S.serial.fd = -1;
	conn_drop_buffers(&S.serial);
	int fd = transport_open_serial(S.serial_dev);
	if (fd < 0) {
		serial_set_absent(now);
		return;
	}
	S.serial.fd = fd;
	S.serial.state = C_OPEN;
	S.sstate = S_RESYNC;
	S.serial_timer = now + SERIAL_QUIET_MS;
}

static void serial_timers(uint64_t now)
{
	struct pollfd p;

	switch (S.sstate) {
	case S_ABSENT:
		if (now >= S.serial_timer)
			serial_try_open(now);
		break;
	case S_DISCONNECTED:
		if (now < S.serial_timer)
			break;
		p.fd = S.serial.fd;
		p.events = POLLIN;
		p.revents = 0;
		if (poll(&p, 1, 0) < 0 || (p.revents & (POLLNVAL | POLLERR))) {
			serial_set_absent(now);
		} else if ((p.revents & POLLHUP) && !(p.revents & POLLIN)) {
			S.serial_timer = now + SERIAL_PROBE_MS;
		} else {
			S.sstate = S_ACTIVE;
		}
		break;
	case S_CLOSING:
		if (now >= S.serial.deadline)
			serial_reopen(now);
		break;
	case S_RESYNC:
		if (now >= S.serial_timer)
			S.sstate = S_ACTIVE;
		break;
	default:
		break;
	}
}

static void serial_event(short revents)
{
	uint64_t now;
	bool got;

	if (revents & POLLNVAL) {
		serial_set_absent(now_ms());
		return;
	}
	if (S.sstate == S_CLOSING && (revents & (POLLHUP | POLLERR))) {
		serial_reopen(now_ms()); /* the host went away: nothing left to flush the error reply to */
		return;
	}
	if ((S.sstate == S_ACTIVE || S.sstate == S_RESYNC) && (revents & (POLLIN | POLLHUP | POLLERR))) {
		bool discard = S.sstate == S_RESYNC;
		enum read_result r = conn_read(&S.serial, discard, &got);
		now = now_ms();
		if (got && discard)
			S.serial_timer = now + SERIAL_QUIET_MS;
		else if (got)
			process_frames(&S.serial);
		if (r == READ_EOF || (r == READ_ERROR && errno == EIO)) {
			/* EOF: virtio-serial reports a disconnected host like this (a pty: EIO) */
			serial_set_disconnected(now);
			return;
		}
		if (r == READ_ERROR) {
			log_msg("serial port %s: read: %s", S.serial_dev, strerror(errno));
			serial_set_absent(now);
			return;
		}
	}
	if (S.serial.abort) {
		serial_set_disconnected(now_ms());
		return;
	}
	if (conn_flush(&S.serial) < 0) {
		/* ENODEV: the host side went away; the data is lost either way */
		serial_set_disconnected(now_ms());
		return;
	}
	if (S.sstate == S_ACTIVE && S.serial.state == C_CLOSING) {
		S.sstate = S_CLOSING;
		log_msg("serial port %s: protocol error; resynchronising", S.serial_dev);
	}
	if (S.sstate == S_CLOSING && !conn_out_pending(&S.serial))
		serial_reopen(now_ms());
}

/* ------------------------------------------------------------------ signals and shutdown */

static void cleanup_and_shutdown(int status)
{
	if (S.opts->unix_path && S.unix_fd >= 0)
		unlink(S.opts->unix_path);
	init_shutdown(status);
}

static void signal_event(void)
{
	struct signalfd_siginfo si;

	while (read(S.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD) {
			init_reap_children();
		} else if (!g_agent.init_daemon && (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)) {
			cleanup_and_shutdown(0);
		}
	}
	init_reap_children();
}

static void check_shutdown(uint64_t now)
{
	if (!S.shutdown_pending)
		return;
	struct conn *c = S.shutdown_conn;
	bool flushed = !c || c->state == C_FREE || !conn_out_pending(c) || c->fd < 0;
	if (c == &S.serial && S.sstate != S_ACTIVE && S.sstate != S_CLOSING)
		flushed = true;
	if (flushed || now >= S.shutdown_deadline)
		cleanup_and_shutdown(0);
}

/* ------------------------------------------------------------------ setup and loop */

void server_init(const struct server_opts *opts)
{
	sigset_t mask;

	memset(&S, 0, sizeof(S));
	S.opts = opts;
	S.unix_fd = S.vsock_fd = S.serial.fd = -1;
	for (int i = 0; i < MAX_CONNS; i++)
		S.conns[i].fd = -1;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	S.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (S.sigfd < 0)
		init_fatal("signalfd: %s", strerror(errno));

	if (opts->unix_path) {
		S.unix_fd = transport_listen_unix(opts->unix_path);
		if (S.unix_fd < 0)
			init_fatal("cannot listen on unix socket %s: %s", opts->unix_path, strerror(errno));
		log_msg("listening on unix socket %s", opts->unix_path);
	}
	if (opts->use_vsock) {
		S.vsock_fd = transport_listen_vsock(AGENT_VSOCK_PORT);
		if (S.vsock_fd >= 0)
			log_msg("listening on vsock port %u", AGENT_VSOCK_PORT);
		else
			log_msg("vsock port %u unavailable (%s); retrying in the background", AGENT_VSOCK_PORT,
				strerror(errno));
	}
	S.sstate = (opts->scan_serial || opts->serial_path) ? S_ABSENT : S_OFF;
	if (S.sstate == S_ABSENT)
		serial_try_open(now_ms());
}

_Noreturn void server_loop(void)
{
	enum { K_SIG, K_UNIX, K_VSOCK, K_SERIAL, K_CONN };
	static int kind[4 + MAX_CONNS];
	static struct conn *obj[4 + MAX_CONNS];
	static unsigned *watch_ids;

	for (;;) {
		uint64_t now = now_ms();
		uint64_t wake = loop_tick(now);
		bool have_free = false;
		nfds_t n = 0;
		size_t need = 4 + MAX_CONNS + loop_count();

		if (need > S.pfd_cap) {
			struct pollfd *p = realloc(S.pfd, need * sizeof(*p));
			unsigned *ids = realloc(watch_ids, need * sizeof(*ids));
			if (p)
				S.pfd = p;
			if (ids)
				watch_ids = ids;
			if (!p || !ids)
				init_fatal("out of memory for the poll set");
			S.pfd_cap = need;
		}
		struct pollfd *pfd = S.pfd;

		/* timers */
		check_shutdown(now);
		if (S.opts->use_vsock && S.vsock_fd < 0 && now >= S.vsock_retry_at) {
			S.vsock_fd = transport_listen_vsock(AGENT_VSOCK_PORT);
			if (S.vsock_fd >= 0)
				log_msg("listening on vsock port %u", AGENT_VSOCK_PORT);
			S.vsock_retry_at = now + VSOCK_RETRY_MS;
		}
		if (S.opts->use_vsock && S.vsock_fd < 0 && S.vsock_retry_at < wake)
			wake = S.vsock_retry_at;
		serial_timers(now);
		if (S.sstate == S_ABSENT || S.sstate == S_DISCONNECTED || S.sstate == S_RESYNC)
			wake = S.serial_timer < wake ? S.serial_timer : wake;
		if (S.sstate == S_CLOSING && S.serial.deadline < wake)
			wake = S.serial.deadline;
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &S.conns[i];
			if (c->state == C_FREE) {
				have_free = true;
				continue;
			}
			if ((c->state == C_CLOSING || c->state == C_LINGER) && now >= c->deadline) {
				conn_close(c);
				have_free = true;
				continue;
			}
			if ((c->state == C_CLOSING || c->state == C_LINGER) && c->deadline < wake)
				wake = c->deadline;
		}
		if (S.shutdown_pending && S.shutdown_deadline < wake)
			wake = S.shutdown_deadline;

		/* descriptors */
		pfd[n] = (struct pollfd){.fd = S.sigfd, .events = POLLIN};
		kind[n++] = K_SIG;
		if (have_free && S.unix_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = S.unix_fd, .events = POLLIN};
			kind[n++] = K_UNIX;
		}
		if (have_free && S.vsock_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = S.vsock_fd, .events = POLLIN};
			kind[n++] = K_VSOCK;
		}
		if (S.sstate == S_ACTIVE || S.sstate == S_RESYNC || S.sstate == S_CLOSING) {
			short ev = S.sstate == S_CLOSING ? 0 : POLLIN;
			if (conn_out_pending(&S.serial))
				ev |= POLLOUT;
			if (ev) {
				pfd[n] = (struct pollfd){.fd = S.serial.fd, .events = ev};
				kind[n++] = K_SERIAL;
			}
		}
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &S.conns[i];
			if (c->state == C_FREE)
				continue;
			short ev = (c->state == C_OPEN || c->state == C_LINGER) ? POLLIN : 0;
			if (conn_out_pending(c))
				ev |= POLLOUT;
			pfd[n] = (struct pollfd){.fd = c->fd, .events = ev};
			obj[n] = c;
			kind[n++] = K_CONN;
		}

		nfds_t first_watch = n;
		n += loop_fill(pfd + n, watch_ids + n, S.pfd_cap - n);

		int timeout = -1;
		if (wake != UINT64_MAX)
			timeout = wake <= now ? 0 : (wake - now > 60000 ? 60000 : (int)(wake - now));
		int ready = poll(pfd, n, timeout);
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			init_fatal("poll: %s", strerror(errno));
		}
		for (nfds_t i = 0; i < n && ready > 0; i++) {
			if (!pfd[i].revents)
				continue;
			if (i >= first_watch) {
				loop_dispatch(watch_ids[i], pfd[i].revents);
				continue;
			}
			switch (kind[i]) {
			case K_SIG:
				signal_event();
				break;
			case K_UNIX:
				accept_all(S.unix_fd);
				break;
			case K_VSOCK:
				accept_all(S.vsock_fd);
				break;
			case K_SERIAL:
				serial_event(pfd[i].revents);
				break;
			default:
				if (obj[i]->state != C_FREE)
					socket_event(obj[i], pfd[i].revents);
				break;
			}
		}
		/* Closing serial port with nothing to flush (no POLLOUT registered): finish it now. */
		if (S.sstate == S_ACTIVE && S.serial.state == C_CLOSING)
			serial_event(0);
		if (S.sstate == S_CLOSING && !conn_out_pending(&S.serial))
			serial_reopen(now_ms());
	}
}
