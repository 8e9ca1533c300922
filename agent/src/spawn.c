#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "child.h"
#include "init.h"
#include "loop.h"
#include "ttrpc.h"
#include "util.h"

static const char *const NS_NAMES[NS_COUNT] = {
	[NS_PID] = "pid", [NS_NET] = "net", [NS_MNT] = "mnt", [NS_IPC] = "ipc", [NS_UTS] = "uts",
	[NS_CGROUP] = "cgroup",
};

static struct {
	bool no_pivot;
	int own_pidns; /* to return to after creating a child in another pid namespace */
} P = {false, -1};

void spawn_init(bool no_pivot)
{
	P.no_pivot = no_pivot;
	P.own_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (P.own_pidns < 0)
		log_msg("warning: /proc/self/ns/pid: %s; containers cannot get a pid namespace", strerror(errno));
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* ------------------------------------------------------------------ the handshake */

static void sync_finish(struct process *p, const struct status *err)
{
	if (p->sync_watch)
		loop_unwatch(p->sync_watch);
	p->sync_watch = 0;
	close_fd(&p->sync_fd);
	p->sync = SYNC_DONE;
	process_sync_done(p, err);
}

static void sync_event(void *ctx, short revents)
{
	struct process *p = ctx;
	uint8_t msg[1 + 4 + STATUS_MESSAGE_MAX];
	struct status st = {0};
	(void)revents;

	for (;;) {
		ssize_t n = recv(p->sync_fd, msg, sizeof(msg), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) { /* end of file: the child exec'd (close-on-exec) or died */
			if (p->sync == SYNC_EXEC) {
				sync_finish(p, NULL);
				return;
			}
			if (p->sync == SYNC_SETUP) { /* why it died comes with its exit status */
				spawn_abandon(p);
				process_sync_lost(p);
				return;
			}
			fail(&st, CODE_INTERNAL, "the container's process died before it was started");
			sync_finish(p, &st);
			return;
		}
		if (msg[0] == 'R' && p->sync == SYNC_SETUP) {
			p->sync = SYNC_CREATED;
			process_sync_ready(p);
			continue;
		}
		if (msg[0] == 'E' && n >= 5) {
			memcpy(&st.code, msg + 1, 4);
			size_t len = (size_t)n - 5 < sizeof(st.message) - 1 ? (size_t)n - 5 : sizeof(st.message) - 1;
			memcpy(st.message, msg + 5, len);
			st.message[len] = '\0';
			if (st.code == CODE_OK)
				st.code = CODE_INTERNAL;
			sync_finish(p, &st);
			return;
		}
		fail(&st, CODE_INTERNAL, "unexpected message from the container's setup process");
		kill(p->pid, SIGKILL);
		sync_finish(p, &st);
		return;
	}
}

int spawn_start(struct process *p)
{
	if (p->sync != SYNC_CREATED || p->sync_fd < 0)
		return -1;
	if (send(p->sync_fd, "S", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
		return -1;
	p->sync = SYNC_EXEC;
	return 0;
}

void spawn_abandon(struct process *p)
{
	if (p->sync_watch)
		loop_unwatch(p->sync_watch);
	p->sync_watch = 0;
	close_fd(&p->sync_fd);
	p->sync = SYNC_DONE;
}

/* ------------------------------------------------------------------ forking */

static bool same_namespace(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

/* ExecProcess: the namespaces the container's process has and the agent has not, and its root. */
static int open_container_namespaces(pid_t pid, struct child_ctx *c, struct status *st)
{
	char path[64], own[64];

	for (int k = 0; k < NS_COUNT; k++) {
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, NS_NAMES[k]);
		snprintf(own, sizeof(own), "/proc/self/ns/%s", NS_NAMES[k]);
		if (same_namespace(path, own))
			continue;
		c->ns_fds[k] = open(path, O_RDONLY | O_CLOEXEC);
		if (c->ns_fds[k] < 0 && errno != ENOENT)
			return fail(st, CODE_FAILED_PRECONDITION, "opening %s: %s", path, strerror(errno));
	}
	snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
	c->root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->root_fd < 0)
		return fail(st, CODE_FAILED_PRECONDITION, "opening %s: %s", path, strerror(errno));
	return 0;
}

/* Sets the pid namespace the next child is born in; true when it must be reset afterwards. */
static int enter_pid_namespace(const struct spawn_args *a, const struct child_ctx *c, bool *changed,
			       struct status *st)
{
	*changed = false;
	if (a->join_pid) {
		if (c->ns_fds[NS_PID] < 0)
			return 0;
		if (setns(c->ns_fds[NS_PID], CLONE_NEWPID) < 0)
			return fail(st, CODE_INTERNAL, "joining the container's pid namespace: %s", strerror(errno));
		*changed = true;
		return 0;
	}
	const struct oci_namespace *ns = &a->spec->lin.ns[NS_PID];
	if (!ns->wanted)
		return 0;
	if (P.own_pidns < 0)
		return fail(st, CODE_FAILED_PRECONDITION, "OCI.Linux.Namespaces: pid namespaces are unavailable");
	if (ns->path) {
		int fd = open(ns->path, O_RDONLY | O_CLOEXEC);
		int rc = fd < 0 ? -1 : setns(fd, CLONE_NEWPID);
		if (fd >= 0)
			close(fd);
		if (rc < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.Namespaces: joining %s: %s", ns->path,
				    strerror(errno));
	} else if (unshare(CLONE_NEWPID) < 0) {
		return fail(st, CODE_FAILED_PRECONDITION, "OCI.Linux.Namespaces: a new pid namespace: %s",
			    strerror(errno));
	}
	*changed = true;
	return 0;
}

int spawn_process(struct process *p, const struct spawn_args *a, struct status *st)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, sv[2] = {-1, -1};
	struct child_ctx c = {.is_init = a->join_pid == 0, .spec = a->spec, .proc = a->proc,
			      .field = a->join_pid ? "process" : "OCI.Process", .root_fd = -1, .no_pivot = P.no_pivot};
	bool pidns_changed = false;
	int rc = -1;

	for (int k = 0; k < NS_COUNT; k++)
		c.ns_fds[k] = -1;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		fail(st, CODE_RESOURCE_EXHAUSTED, "creating the process's pipes: %s", strerror(errno));
		goto out;
	}
	if (a->join_pid && open_container_namespaces(a->join_pid, &c, st) < 0)
		goto out;
	if (enter_pid_namespace(a, &c, &pidns_changed, st) < 0)
		goto out;
	c.sync_fd = sv[1];
	c.stdio[0] = in[0];
	c.stdio[1] = out[1];
	c.stdio[2] = err[1];

	pid_t pid = fork();
	if (pid == 0)
		child_main(&c);
	int fork_errno = errno;
	if (pidns_changed && setns(P.own_pidns, CLONE_NEWPID) < 0)
		init_fatal("returning to the agent's pid namespace: %s", strerror(errno));
	if (pid < 0) {
		fail(st, CODE_RESOURCE_EXHAUSTED, "fork: %s", strerror(fork_errno));
		goto out;
	}
	p->pid = pid;
	if (a->cgroup && cgroup_add(a->cgroup, pid, st) < 0) {
		kill(pid, SIGKILL); /* reaped like any other exit; the caller discards the process */
		goto out;
	}
	if (send(sv[0], "G", 1, MSG_NOSIGNAL) != 1) {
		fail(st, CODE_INTERNAL, "starting the container's setup process: %s", strerror(errno));
		kill(pid, SIGKILL);
		goto out;
	}
	p->stdin_fd = in[1];
	p->out[0].fd = out[0];
	p->out[1].fd = err[0];
	p->sync_fd = sv[0];
	in[1] = out[0] = err[0] = sv[0] = -1;
	set_nonblock(p->stdin_fd);
	set_nonblock(p->out[0].fd);
	set_nonblock(p->out[1].fd);
	p->sync = SYNC_SETUP;
	if (!c.is_init)
		p->sync = SYNC_EXEC; /* an exec'd process does not wait for a start */
	p->sync_watch = loop_watch(p->sync_fd, POLLIN, sync_event, p);
	if (!p->sync_watch) {
		fail(st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		kill(pid, SIGKILL);
		goto out;
	}
	rc = 0;
out:
	for (int i = 0; i < 2; i++) {
		close_fd(&in[i]);
		close_fd(&out[i]);
		close_fd(&err[i]);
		close_fd(&sv[i]);
	}
	for (int k = 0; k < NS_COUNT; k++)
		close_fd(&c.ns_fds[k]);
	close_fd(&c.root_fd);
	return rc;
}
