/* A process's stdio: the agent holds the other ends of its pipes. ReadStdout/ReadStderr are answered
 * as soon as the pipe has data (queued calls in order); WriteStdin is answered once all its data is
 * in the pipe; CloseStdin closes it after the writes before it. */
#ifndef OSB_STREAMS_H
#define OSB_STREAMS_H

#include <stddef.h>
#include <stdint.h>

#include "container.h"

#define STREAM_READ_MAX (1u << 20) /* data per ReadStream answer */
/* After the process exits, a read that finds its pipe empty waits this long for more (from
 * processes that inherited the pipe) before it gets the end of the stream. */
#define STREAM_DRAIN_MS 1000

void stdio_init(void);
/* which: 0 stdout, 1 stderr */
void stdio_read(const struct call_ref *ref, const uint8_t *payload, size_t len, int which);
void stdio_write(const struct call_ref *ref, const uint8_t *payload, size_t len);
void stdio_close(const struct call_ref *ref, const uint8_t *payload, size_t len);
/* The process exited: reads waiting on an empty pipe get their end after STREAM_DRAIN_MS. */
void stdio_process_exited(struct process *p);
/* Closes the pipes; waiting reads get the end of the stream, waiting writes an error. */
void stdio_release(struct process *p);

#endif
