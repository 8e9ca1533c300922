#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void make_printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

int fail(struct status *st, int32_t code, const char *fmt, ...)
{
	va_list ap;

	st->code = code;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
	make_printable(st->message);
	return -1;
}

static void prefix_with(struct status *st, const char *prefix, const char *sep)
{
	char tmp[STATUS_MESSAGE_MAX];

	snprintf(tmp, sizeof(tmp), "%s%s%s", prefix, sep, st->message);
	memcpy(st->message, tmp, sizeof(tmp));
	make_printable(st->message);
}

void status_prefix(struct status *st, const char *prefix)
{
	prefix_with(st, prefix, ": ");
}

void status_field_prefix(struct status *st, const char *prefix)
{
	prefix_with(st, prefix, ".");
}
