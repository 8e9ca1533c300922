/* Linux capabilities by name, and applying the five OCI sets with raw capset/prctl (no libcap). */
#ifndef OSB_CAPS_H
#define OSB_CAPS_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

enum cap_set { CAPS_BOUNDING, CAPS_EFFECTIVE, CAPS_INHERITABLE, CAPS_PERMITTED, CAPS_AMBIENT, CAPS_SETS };

struct cap_sets {
	uint64_t set[CAPS_SETS]; /* bit n = capability n */
};

/* The capability number of "CAP_xxx", or -1. */
int cap_from_name(const char *name);

/* The highest capability the running kernel knows (/proc/sys/kernel/cap_last_cap, else 40). */
int cap_last_cap(void);

/* Drops every capability outside the bounding set (needs CAP_SETPCAP, so before changing user). */
int caps_apply_bounding(const struct cap_sets *c, struct status *st);
/* Sets effective, permitted and inheritable (capset v3), then raises the ambient ones; an ambient
 * capability the kernel refuses (e.g. not inheritable) is skipped, as runc does. */
int caps_apply(const struct cap_sets *c, struct status *st);

#endif
