/* Forking a container's process and the parent's side of the handshake with it (see child.h). */
#ifndef OSB_SPAWN_H
#define OSB_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

#include "container.h"

struct spawn_args {
	const struct oci_spec *spec;    /* the container's spec */
	const struct oci_process *proc; /* what to run */
	const char *cgroup;             /* the container's cgroup directory, NULL for none */
	pid_t join_pid;                 /* 0: the container's first process; else exec into this process's
					 * namespaces and root */
};

/* no_pivot: always MS_MOVE + chroot instead of pivot_root (testing the initramfs path). */
void spawn_init(bool no_pivot);

/* Forks the process (pipes for its stdio, a new or joined pid namespace, the cgroup) and lets it go
 * on; p gets the pid and the agent's ends of the pipes. The outcome arrives later through
 * process_sync_ready / process_sync_done. When it fails after the fork, p->pid is set and the child
 * has been killed. */
int spawn_process(struct process *p, const struct spawn_args *a, struct status *st);
/* StartContainer: tells the waiting first process to exec. */
int spawn_start(struct process *p);
/* Stops listening to the child (the process is being taken down). */
void spawn_abandon(struct process *p);

#endif
