/* The forked process that becomes a container's process: joins or creates the namespaces, builds
 * the container's filesystem (first process only), takes the spec's user, limits and capabilities,
 * and execs the command. Talks to the agent over a SOCK_SEQPACKET socket:
 *   agent -> child: 'G' (it is in the cgroup: go on), 'S' (StartContainer: exec now)
 *   child -> agent: 'R' (the first process is ready and waits for 'S'),
 *                   'E' + int32 code + message (setup or exec failed; the child exits 127)
 * The socket is close-on-exec, so end of file after 'S' (or right away for ExecProcess) means the
 * exec succeeded. */
#ifndef OSB_CHILD_H
#define OSB_CHILD_H

#include <stdbool.h>

#include "oci.h"
#include "status.h"

struct child_ctx {
	bool is_init;                   /* the container's first process: builds the environment */
	const struct oci_spec *spec;    /* the container's spec */
	const struct oci_process *proc; /* what to run */
	const char *field;              /* where proc came from in the request: "OCI.Process" or "process" */
	int sync_fd;
	int stdio[3];                   /* the child's ends: stdin (read), stdout, stderr (write) */
	int ns_fds[NS_COUNT];           /* exec: the container's namespaces to join, -1 for none */
	int root_fd;                    /* exec: the container's root directory */
	bool no_pivot;
};

_Noreturn void child_main(const struct child_ctx *c);

/* 'E' + code + message on the sync socket. */
void child_send_status(int fd, const struct status *st);

#endif
