/* Who the container's process runs as, the way runc decides it: the user and supplementary groups
 * from the spec, the home directory from the container's /etc/passwd, rlimits, capabilities and
 * no_new_privs. Runs in the container's setup process, inside its root. */
#ifndef OSB_CREDS_H
#define OSB_CREDS_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "oci.h"
#include "status.h"

#define CREDS_MAX_GROUPS 256

struct creds {
	uid_t uid;
	gid_t gid;
	gid_t groups[CREDS_MAX_GROUPS];
	size_t ngroups;
	char home[PATH_MAX]; /* "/" unless /etc/passwd says otherwise */
};

/* Reads /etc/passwd of the current root (HOME). */
int creds_resolve(const struct oci_process *p, struct creds *c, struct status *st);
/* oom_score_adj, rlimits, bounding set, groups and ids, capabilities, no_new_privs. */
int creds_apply(const struct oci_process *p, const struct creds *c, struct status *st);

#endif
