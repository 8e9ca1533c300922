/* mount(8)-style option lists ("ro", "nosuid", "rbind", "rprivate", "mode=755") to mount(2) arguments. */
#ifndef OSB_MOUNTOPT_H
#define OSB_MOUNTOPT_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "pbdec.h"

#define MOUNTOPT_MAX_PROPAGATION 4

struct mount_opts {
	unsigned long flags;      /* MS_* except propagation */
	unsigned long propagation[MOUNTOPT_MAX_PROPAGATION]; /* applied one by one after the mount */
	size_t npropagation;
	char *data;               /* the options mount(2) does not know, comma-joined ("" if none) */
	bool bind;                /* "bind" or "rbind" */
};

/* Returns 0, or -1 with INVALID_ARGUMENT naming field when too many propagation options are given. */
int mountopt_parse(struct arena *a, const struct strv *options, const char *field, struct mount_opts *out,
		   struct status *st);

/* The MS_* propagation flags of one of "private", "rprivate", "slave", "rslave", "shared", "rshared",
 * "unbindable", "runbindable"; 0 if name is not one of them. */
unsigned long mountopt_propagation(const char *name);

#endif
