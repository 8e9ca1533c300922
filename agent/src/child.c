#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "creds.h"
#include "fsutil.h"
#include "rootfs.h"
#include "ttrpc.h"

#define SYNC_FD 3

static const int NS_FLAGS[NS_COUNT] = {
	[NS_PID] = CLONE_NEWPID, [NS_NET] = CLONE_NEWNET,   [NS_MNT] = CLONE_NEWNS,
	[NS_IPC] = CLONE_NEWIPC, [NS_UTS] = CLONE_NEWUTS,   [NS_CGROUP] = CLONE_NEWCGROUP,
};

void child_send_status(int fd, const struct status *st)
{
	uint8_t msg[1 + 4 + STATUS_MESSAGE_MAX];
	size_t n = strnlen(st->message, STATUS_MESSAGE_MAX - 1);

	msg[0] = 'E';
	memcpy(msg + 1, &st->code, 4);
	memcpy(msg + 5, st->message, n);
	send(fd, msg, 5 + n, MSG_NOSIGNAL);
}

static _Noreturn void die(int fd, const struct status *st)
{
	child_send_status(fd, st);
	_exit(127);
}

static void reset_signals(void)
{
	sigset_t all;

	for (int sig = 1; sig < _NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
}

/* Blocks until the parent sends byte want; the parent closing the socket means "give up". */
static void wait_for(int fd, char want)
{
	char c;

	for (;;) {
		ssize_t r = recv(fd, &c, 1, 0);
		if (r == 1 && c == want)
			return;
		if (r < 0 && errno == EINTR)
			continue;
		_exit(1);
	}
}

static int join_namespaces_by_path(const struct oci_spec *s, struct status *st)
{
	int unshare_flags = 0;

	for (int k = 0; k < NS_COUNT; k++) {
		const struct oci_namespace *ns = &s->lin.ns[k];
		if (k == NS_PID || !ns->wanted)
			continue; /* the pid namespace is the parent's business (it applies to its children) */
		if (!ns->path) {
			unshare_flags |= NS_FLAGS[k];
			continue;
		}
		int fd = open(ns->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, NS_FLAGS[k]) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.Namespaces: joining %s: %s", ns->path,
				    strerror(errno));
		close(fd);
	}
	if (unshare(unshare_flags) < 0)
		return fail(st, CODE_FAILED_PRECONDITION, "OCI.Linux.Namespaces: unshare: %s", strerror(errno));
	return 0;
}

static int join_container(const struct child_ctx *c, struct status *st)
{
	static const int ORDER[] = {NS_IPC, NS_UTS, NS_NET, NS_CGROUP, NS_MNT};

	for (size_t i = 0; i < sizeof(ORDER) / sizeof(ORDER[0]); i++) {
		int k = ORDER[i];
		if (c->ns_fds[k] >= 0 && setns(c->ns_fds[k], NS_FLAGS[k]) < 0)
			return fail(st, CODE_INTERNAL, "joining the container's namespace (%d): %s", k, strerror(errno));
	}
	if (fchdir(c->root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0)
		return fail(st, CODE_INTERNAL, "entering the container's root: %s", strerror(errno));
	return 0;
}

/* stdio on 0-2, the sync socket on 3 (close-on-exec: its end of file tells the parent the exec
 * happened), nothing else. */
static void arrange_fds(const struct child_ctx *c)
{
	int tmp[4];

	for (int i = 0; i < 3; i++)
		tmp[i] = fcntl(c->stdio[i], F_DUPFD_CLOEXEC, 10);
	tmp[3] = fcntl(c->sync_fd, F_DUPFD_CLOEXEC, 10);
	for (int i = 0; i < 4; i++) {
		if (tmp[i] < 0 || dup2(tmp[i], i) < 0)
			_exit(126);
	}
	fcntl(SYNC_FD, F_SETFD, FD_CLOEXEC);
	if (syscall(SYS_close_range, 4u, ~0u, 0u) < 0) {
		for (int fd = 4; fd < 65536; fd++)
			close(fd);
	}
}

static int set_sysctls(const struct oci_linux *l, struct status *st)
{
	char path[PATH_MAX];

	for (size_t i = 0; i < l->nsysctl; i++) {
		snprintf(path, sizeof(path), "/proc/sys/%s", l->sysctl[i].key);
		for (char *p = path + 10; *p; p++)
			if (*p == '.')
				*p = '/';
		if (write_string(path, l->sysctl[i].value) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.Sysctl: %s = %s: %s", l->sysctl[i].key,
				    l->sysctl[i].value, strerror(errno));
	}
	return 0;
}

static int build_environment(const struct child_ctx *c, struct status *st)
{
	const struct oci_spec *s = c->spec;

	if (rootfs_prepare(s, c->no_pivot, st) < 0)
		return -1;
	if (s->hostname && *s->hostname && sethostname(s->hostname, strlen(s->hostname)) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Hostname: %s", strerror(errno));
	if (set_sysctls(&s->lin, st) < 0 || rootfs_readonly_paths(&s->lin.readonly_paths, st) < 0 ||
	    rootfs_mask_paths(&s->lin.masked_paths, st) < 0)
		return -1;
	mkdir_p(c->proc->cwd, 0755); /* runc creates a missing working directory */
	return 0;
}

/* The environment the process gets: the spec's, plus HOME when it has none (as runc does). */
static char **environment(const struct oci_process *p, const struct creds *cr)
{
	char **envp = calloc(p->env.n + 2, sizeof(char *));
	size_t n = 0;

	if (!envp)
		return NULL;
	for (size_t i = 0; i < p->env.n; i++)
		envp[n++] = p->env.v[i];
	if (!oci_getenv(&p->env, "HOME")) {
		size_t len = strlen(cr->home) + 6;
		char *home = malloc(len);
		if (!home)
			return NULL;
		snprintf(home, len, "HOME=%s", cr->home);
		envp[n++] = home;
	}
	envp[n] = NULL;
	return envp;
}

static bool executable_file(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 0111);
}

/* PATH lookup with the process's own PATH, like Go's exec.LookPath in runc; messages as runc's. */
static int find_executable(const struct oci_process *p, char *out, size_t cap, struct status *st)
{
	const char *cmd = p->args.v[0];
	const char *field = "Args[0]";

	if (strchr(cmd, '/')) {
		struct stat sb;
		if (stat(cmd, &sb) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "%s: exec: \"%s\": stat %s: %s", field, cmd, cmd,
				    strerror(errno));
		if (!S_ISREG(sb.st_mode) || !(sb.st_mode & 0111))
			return fail(st, CODE_INVALID_ARGUMENT, "%s: exec: \"%s\": permission denied", field, cmd);
		snprintf(out, cap, "%s", cmd);
		return 0;
	}
	const char *path = oci_getenv(&p->env, "PATH");
	while (path && *path) {
		size_t n = strcspn(path, ":");
		if ((size_t)snprintf(out, cap, "%.*s/%s", (int)n, n ? path : ".", cmd) < cap && executable_file(out))
			return 0;
		path += n;
		if (*path == ':')
			path++;
	}
	return fail(st, CODE_INVALID_ARGUMENT, "%s: exec: \"%s\": executable file not found in $PATH", field, cmd);
}

_Noreturn void child_main(const struct child_ctx *c)
{
	const struct oci_process *p = c->proc;
	struct status st = {0};
	struct creds cr;
	char exe[PATH_MAX];
	int sync = c->sync_fd;

	reset_signals();
	wait_for(sync, 'G'); /* the parent has put this process into the container's cgroup */
	setsid();
	umask(022);
	if (c->is_init ? join_namespaces_by_path(c->spec, &st) < 0 : join_container(c, &st) < 0)
		die(sync, &st);
	arrange_fds(c);
	sync = SYNC_FD;
	for (int fd = 0; fd < 3; fd++) /* the process may reopen its pipes through /proc/self/fd (runc does this) */
		fchown(fd, p->user.uid, p->user.gid);
	if (c->is_init && build_environment(c, &st) < 0)
		die(sync, &st);
	if (creds_resolve(p, &cr, &st) < 0 || creds_apply(p, &cr, &st) < 0) {
		status_field_prefix(&st, c->field);
		die(sync, &st);
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* a container does not outlive its agent */
	if (chdir(p->cwd) < 0) {
		fail(&st, CODE_INVALID_ARGUMENT, "%s.Cwd: chdir %s: %s", c->field, p->cwd, strerror(errno));
		die(sync, &st);
	}
	char **envp = environment(p, &cr);
	if (!envp) {
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		die(sync, &st);
	}
	if (find_executable(p, exe, sizeof(exe), &st) < 0) {
		status_field_prefix(&st, c->field);
		die(sync, &st);
	}
	if (c->is_init) {
		send(sync, "R", 1, MSG_NOSIGNAL);
		wait_for(sync, 'S'); /* StartContainer */
	}
	execve(exe, p->args.v, envp);
	fail(&st, CODE_INVALID_ARGUMENT, "%s.Args[0]: exec \"%s\": %s", c->field, exe, strerror(errno));
	die(sync, &st);
}
