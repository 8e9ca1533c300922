/* A call's outcome: a google.rpc.Code and a message that names the field, the id or the path. */
#ifndef OSB_STATUS_H
#define OSB_STATUS_H

#include <stdint.h>

#define STATUS_MESSAGE_MAX 1024

struct status {
	int32_t code; /* enum ttrpc_code */
	char message[STATUS_MESSAGE_MAX];
};

/* Sets code and message (printable ASCII only, truncated to fit); returns -1 for `return fail(...)`. */
int fail(struct status *st, int32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes the message with "prefix: " (e.g. the call's name); keeps the code. */
void status_prefix(struct status *st, const char *prefix);

/* Prefixes the message with "prefix." (a field path: "process" + "Cwd: ..." = "process.Cwd: ..."). */
void status_field_prefix(struct status *st, const char *prefix);

#endif
