/* One cgroup v2 group per container, with the spec's memory, CPU and pids limits. */
#ifndef OSB_CGROUP_H
#define OSB_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "oci.h"
#include "status.h"

#define CGROUP_DEFAULT_ROOT "/sys/fs/cgroup"

/* Finds the cgroup v2 hierarchy at root (NULL: /sys/fs/cgroup). As PID 1 the agent mounts it there
 * when nothing is mounted yet; when root is not cgroup2 (a cgroup v1 host), containers run without a
 * cgroup and a spec that asks for limits is refused. */
void cgroup_init(const char *root);
bool cgroup_available(void);

/* Creates the container's group (cgroups_path from the spec, else /osbuilder/<id>; systemd-style
 * "slice:prefix:name" becomes /slice/prefix-name.scope), enables +memory +pids +cpu in every parent's
 * subtree_control and writes the limits. *dir: the absolute directory (strdup'ed), NULL without
 * cgroups. Fails with FAILED_PRECONDITION when a limit cannot be honoured. */
int cgroup_create(const char *container_id, const struct oci_linux *lin, char **dir, struct status *st);
/* Moves pid into the group. */
int cgroup_add(const char *dir, pid_t pid, struct status *st);
/* Sends sig to every process in the group (cgroup.kill for SIGKILL where the kernel has it). */
void cgroup_signal(const char *dir, int sig);
/* Whether the group still has processes. */
bool cgroup_populated(const char *dir);
/* Removes the group; retried for a while when it is still busy. */
void cgroup_remove(const char *dir);

#endif
