#include "streams.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "loop.h"
#include "requests.h"
#include "ttrpc.h"
#include "util.h"

#define HEADROOM 16 /* room for the ReadStreamResponse field header in front of the data */

static void close_stream(struct stream *s)
{
	if (s->watch)
		loop_unwatch(s->watch);
	s->watch = 0;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static void reply_data(const struct call_ref *ref, uint8_t *buf, size_t n)
{
	/* ReadStreamResponse { bytes data = 1; }: the header goes right in front of the data */
	uint8_t head[HEADROOM];
	struct pb_writer w;

	if (n == 0) { /* end of the stream: data is empty (proto3 leaves it out) */
		server_reply(ref, NULL, NULL, 0);
		return;
	}
	pb_writer_init(&w, head, sizeof(head));
	pb_put_key(&w, 1, PB_WT_LEN);
	pb_put_varint(&w, n);
	memcpy(buf + HEADROOM - w.len, head, w.len);
	server_reply(ref, NULL, buf + HEADROOM - w.len, w.len + n);
}

static struct pending *pop(struct pending **list)
{
	struct pending *p = *list;

	if (p)
		*list = p->next;
	return p;
}

static void append(struct pending **list, struct pending *item)
{
	while (*list)
		list = &(*list)->next;
	*list = item;
}

static bool drained(const struct process *p, uint64_t now)
{
	return p->exited && now >= p->exit_ms + STREAM_DRAIN_MS;
}

/* Answers queued reads from the stream while it has data; returns when it would block. */
static void serve_reads(struct stream *s)
{
	struct pending *r;

	while ((r = s->reads)) {
		if (!server_call_alive(&r->ref)) { /* nobody waits for it: do not consume output */
			free(pop(&s->reads));
			continue;
		}
		if (s->fd < 0) {
			reply_data(&r->ref, NULL, 0);
			free(pop(&s->reads));
			continue;
		}
		size_t want = r->len > STREAM_READ_MAX ? STREAM_READ_MAX : r->len;
		int queued = 0;
		if (ioctl(s->fd, FIONREAD, &queued) == 0 && queued > 0 && (size_t)queued < want)
			want = (size_t)queued; /* no bigger buffer than what is there */
		uint8_t *buf = malloc(HEADROOM + want);
		if (!buf)
			return; /* try again on the next event */
		ssize_t n = read(s->fd, buf + HEADROOM, want);
		int err = errno;
		if (n > 0)
			reply_data(&r->ref, buf, (size_t)n);
		free(buf);
		if (n < 0 && err == EINTR)
			continue;
		if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK) && !drained(s->proc, now_ms()))
			break;
		if (n <= 0) {
			/* end of file, an error, or the process is gone and the pipe stayed empty: the end of
			 * the stream for this read and those queued behind it */
			close_stream(s);
			continue;
		}
		free(pop(&s->reads));
	}
	if (s->watch)
		loop_set_events(s->watch, s->reads ? POLLIN : 0);
}

static void stream_event(void *ctx, short revents)
{
	(void)revents;
	serve_reads(ctx);
}

void stdio_read(const struct call_ref *ref, const uint8_t *payload, size_t len, int which)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct ids_request r;
	struct process *p;

	if (decode_ids_request(&d, payload, len, IDS_PROCESS_VALUE, true, &r) < 0 ||
	    !(p = process_lookup(r.container_id, r.exec_id, &st))) {
		goto error;
	}
	if (r.value == 0) {
		fail(&st, CODE_INVALID_ARGUMENT, "len: 0; ask for at least one byte");
		goto error;
	}
	struct pending *rd = calloc(1, sizeof(*rd));
	if (!rd) {
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		goto error;
	}
	rd->ref = *ref;
	rd->len = r.value;
	struct stream *s = &p->out[which];
	append(&s->reads, rd);
	if (s->fd >= 0 && !s->watch)
		s->watch = loop_watch(s->fd, POLLIN, stream_event, s);
	serve_reads(s);
	arena_free(&a);
	return;
error:
	status_prefix(&st, which ? "ReadStderr" : "ReadStdout");
	server_reply(ref, &st, NULL, 0);
	arena_free(&a);
}

/* ------------------------------------------------------------------ stdin */

static void stdin_closed_fd(struct process *p)
{
	if (p->stdin_watch)
		loop_unwatch(p->stdin_watch);
	p->stdin_watch = 0;
	if (p->stdin_fd >= 0)
		close(p->stdin_fd);
	p->stdin_fd = -1;
}

static void serve_stdin(struct process *p);

static void stdin_event(void *ctx, short revents)
{
	(void)revents;
	serve_stdin(ctx);
}

static void serve_stdin(struct process *p)
{
	struct pending *op;
	struct status st;

	while ((op = p->stdin_ops)) {
		if (op->close) {
			stdin_closed_fd(p);
			server_reply(&op->ref, NULL, NULL, 0);
		} else if (p->stdin_fd < 0) {
			fail(&st, CODE_FAILED_PRECONDITION, "WriteStdin: the stdin of exec_id \"%s\" is closed", p->exec_id);
			server_reply(&op->ref, &st, NULL, 0);
		} else {
			ssize_t n = write(p->stdin_fd, op->data + op->off, op->data_len - op->off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				if (!p->stdin_watch)
					p->stdin_watch = loop_watch(p->stdin_fd, POLLOUT, stdin_event, p);
				return;
			}
			if (n < 0) {
				fail(&st, CODE_FAILED_PRECONDITION, "WriteStdin: exec_id \"%s\" no longer reads its stdin (%s)",
				     p->exec_id, strerror(errno));
				server_reply(&op->ref, &st, NULL, 0);
				stdin_closed_fd(p);
			} else {
				op->off += (size_t)n;
				if (op->off < op->data_len)
					continue;
				uint8_t buf[16];
				struct pb_writer w;
				pb_writer_init(&w, buf, sizeof(buf));
				pb_put_uint64(&w, 1, op->data_len); /* WriteStreamResponse.len */
				server_reply(&op->ref, NULL, buf, w.len);
			}
		}
		op = pop(&p->stdin_ops);
		free(op->data);
		free(op);
	}
	if (p->stdin_watch) {
		loop_unwatch(p->stdin_watch);
		p->stdin_watch = 0;
	}
}

static void queue_stdin(const struct call_ref *ref, const uint8_t *payload, size_t len, bool close_op)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct ids_request r;
	struct process *p;
	const char *call = close_op ? "CloseStdin" : "WriteStdin";

	if (decode_ids_request(&d, payload, len, close_op ? IDS_PROCESS : IDS_PROCESS_DATA, true, &r) < 0 ||
	    !(p = process_lookup(r.container_id, r.exec_id, &st)))
		goto error;
	if (p->stdin_closed) {
		if (close_op) { /* closing twice is fine */
			server_reply(ref, NULL, NULL, 0);
			arena_free(&a);
			return;
		}
		fail(&st, CODE_FAILED_PRECONDITION, "exec_id \"%s\": its stdin was closed (CloseStdin)", p->exec_id);
		goto error;
	}
	struct pending *op = calloc(1, sizeof(*op));
	if (!op || (!close_op && r.data.len && !(op->data = malloc(r.data.len)))) {
		free(op);
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		goto error;
	}
	op->ref = *ref;
	op->close = close_op;
	if (!close_op && r.data.len)
		memcpy(op->data, r.data.data, r.data.len);
	op->data_len = r.data.len;
	if (close_op)
		p->stdin_closed = true;
	append(&p->stdin_ops, op);
	serve_stdin(p);
	arena_free(&a);
	return;
error:
	status_prefix(&st, call);
	server_reply(ref, &st, NULL, 0);
	arena_free(&a);
}

void stdio_write(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	queue_stdin(ref, payload, len, false);
}

void stdio_close(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	queue_stdin(ref, payload, len, true);
}

/* ------------------------------------------------------------------ lifetime */

void stdio_process_exited(struct process *p)
{
	for (int i = 0; i < 2; i++)
		serve_reads(&p->out[i]);
}

void stdio_release(struct process *p)
{
	struct status st;
	struct pending *op;

	stdin_closed_fd(p);
	while ((op = pop(&p->stdin_ops))) {
		fail(&st, CODE_NOT_FOUND, "%s: the container was removed", op->close ? "CloseStdin" : "WriteStdin");
		server_reply(&op->ref, &st, NULL, 0);
		free(op->data);
		free(op);
	}
	for (int i = 0; i < 2; i++) {
		close_stream(&p->out[i]);
		serve_reads(&p->out[i]); /* the queued reads get the end of the stream */
	}
}

/* Reads still waiting on a process that exited get the end once the pipe stayed empty long enough. */
static uint64_t stdio_tick(uint64_t now)
{
	uint64_t wake = UINT64_MAX;

	for (struct container *c = containers_list(); c; c = c->next) {
		for (struct process *p = c->procs; p; p = p->next) {
			for (int i = 0; p->exited && i < 2; i++) {
				struct stream *s = &p->out[i];
				if (!s->reads || s->fd < 0)
					continue;
				uint64_t due = p->exit_ms + STREAM_DRAIN_MS;
				if (now >= due)
					serve_reads(s);
				else if (due < wake)
					wake = due;
			}
		}
	}
	return wake;
}

void stdio_init(void)
{
	loop_add_ticker(stdio_tick);
}
