/* Small helpers shared by the agent's modules. */
#ifndef OSB_UTIL_H
#define OSB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_NAME "osbuilder-agent"

/* One diagnostic line "osbuilder-agent: <msg>\n" on stderr, written with a single write(2). */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reads at most cap-1 bytes of a (small) file and NUL-terminates them.
 * Returns the length read, or -1 with errno set. */
ssize_t read_small_file(const char *path, char *buf, size_t cap);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t now_ms(void);

/* write(2) until done, retrying on EINTR; for blocking descriptors only. */
bool write_all(int fd, const void *buf, size_t len);

/* Copies at most cap-1 bytes of src[0..len) into dst, replacing anything that is not printable
 * ASCII by '?', so that the result is always valid UTF-8 (it ends up in protobuf string fields). */
void sanitize_ascii(char *dst, size_t cap, const uint8_t *src, size_t len);

/* snprintf that says whether everything fitted: 0, or -1 with errno = ENAMETOOLONG. For paths (where
 * a cut would name another file) and for labels where a cut is harmless (the result is ignored). */
int fmt(char *buf, size_t cap, const char *format, ...) __attribute__((format(printf, 3, 4)));

#endif
