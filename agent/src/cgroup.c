#include "cgroup.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "fsutil.h"
#include "loop.h"
#include "service.h"
#include "ttrpc.h"
#include "util.h"

#define CGROUP2_SUPER_MAGIC 0x63677270
#define SYSFS_MAGIC 0x62656572
#define REMOVE_RETRY_MS 100
#define REMOVE_GIVE_UP_MS 10000
#define MAX_LATER 32

enum { C_MEMORY = 1, C_PIDS = 2, C_CPU = 4 };

static struct {
	char root[PATH_MAX];
	bool available;
	struct {
		char *dir;
		uint64_t until;
	} later[MAX_LATER];
	uint64_t next_try;
} G;

static uint64_t cgroup_tick(uint64_t now);

void cgroup_init(const char *root)
{
	struct statfs sf;

	snprintf(G.root, sizeof(G.root), "%s", root ? root : CGROUP_DEFAULT_ROOT);
	loop_add_ticker(cgroup_tick);
	if (statfs(G.root, &sf) < 0) {
		log_msg("cgroups: %s: %s; containers run without a cgroup", G.root, strerror(errno));
		return;
	}
	if (sf.f_type == SYSFS_MAGIC && !root && g_agent.init_daemon) {
		/* PID 1 in a VM: nothing is mounted on /sys/fs/cgroup yet */
		if (mount("cgroup2", G.root, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME, NULL) < 0) {
			log_msg("cgroups: mount cgroup2 on %s: %s; containers run without a cgroup", G.root,
				strerror(errno));
			return;
		}
		statfs(G.root, &sf);
	}
	if ((unsigned long)sf.f_type != CGROUP2_SUPER_MAGIC) {
		log_msg("cgroups: %s is not a cgroup2 filesystem (cgroup v1 host?); containers run without a cgroup "
			"and specs with resource limits are refused", G.root);
		return;
	}
	G.available = true;
}

bool cgroup_available(void)
{
	return G.available;
}

static unsigned controllers_in(const char *dir)
{
	char path[PATH_MAX], buf[512];
	unsigned mask = 0;

	if (fmt(path, sizeof(path), "%s/cgroup.controllers", dir) < 0 || read_small_file(path, buf, sizeof(buf)) < 0)
		return 0;
	for (char *save = NULL, *t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
		if (strcmp(t, "memory") == 0)
			mask |= C_MEMORY;
		else if (strcmp(t, "pids") == 0)
			mask |= C_PIDS;
		else if (strcmp(t, "cpu") == 0)
			mask |= C_CPU;
	}
	return mask;
}

static const char *controller_field(unsigned c)
{
	return c == C_MEMORY ? "OCI.Linux.Resources.Memory" : c == C_PIDS ? "OCI.Linux.Resources.Pids"
									: "OCI.Linux.Resources.CPU";
}

static const char *controller_name(unsigned c)
{
	return c == C_MEMORY ? "memory" : c == C_PIDS ? "pids" : "cpu";
}

/* Enables the controllers in dir's subtree_control; a needed one that fails is an error. */
static int enable_controllers(const char *dir, unsigned needed, struct status *st)
{
	char path[PATH_MAX], word[16];
	unsigned have = controllers_in(dir);

	if (fmt(path, sizeof(path), "%s/cgroup.subtree_control", dir) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.CgroupsPath: %s: path too long", dir);
	for (unsigned c = C_MEMORY; c <= C_CPU; c <<= 1) {
		if (!(have & c)) {
			if (needed & c)
				return fail(st, CODE_FAILED_PRECONDITION,
					    "%s: the %s controller is not available in %s (cgroup.controllers)",
					    controller_field(c), controller_name(c), dir);
			continue;
		}
		snprintf(word, sizeof(word), "+%s", controller_name(c));
		if (write_string(path, word) < 0 && (needed & c))
			return fail(st, CODE_FAILED_PRECONDITION, "%s: enabling %s in %s: %s", controller_field(c),
				    controller_name(c), path, strerror(errno));
	}
	return 0;
}

static int group_path(const char *container_id, const char *spec_path, char *out, size_t cap,
		      struct status *st)
{
	char rel[PATH_MAX];
	const char *c1 = spec_path ? strchr(spec_path, ':') : NULL;

	if (!spec_path || !*spec_path) {
		snprintf(rel, sizeof(rel), "/osbuilder/%s", container_id);
	} else if (c1) {
		const char *c2 = strchr(c1 + 1, ':');
		if (!c2 || strchr(c2 + 1, ':') || strchr(spec_path, '/'))
			return fail(st, CODE_INVALID_ARGUMENT,
				    "OCI.Linux.CgroupsPath: \"%s\" is neither a path nor slice:prefix:name", spec_path);
		snprintf(rel, sizeof(rel), "/%.*s/%.*s-%s.scope", (int)(c1 - spec_path), spec_path,
			 (int)(c2 - c1 - 1), c1 + 1, c2 + 1);
	} else {
		snprintf(rel, sizeof(rel), "%s%s", spec_path[0] == '/' ? "" : "/", spec_path);
	}
	while (strlen(rel) > 1 && rel[strlen(rel) - 1] == '/')
		rel[strlen(rel) - 1] = '\0';
	if (strcmp(rel, "/") == 0 || strstr(rel, "//"))
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.CgroupsPath: \"%s\" does not name a group",
			    spec_path ? spec_path : "");
	if ((size_t)snprintf(out, cap, "%s%s", G.root, rel) >= cap)
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.CgroupsPath: too long");
	return 0;
}

static int write_limit(const char *dir, const char *file, const char *value, const char *field,
		       struct status *st)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if (write_string(path, value) < 0)
		return fail(st, CODE_FAILED_PRECONDITION, "%s: writing \"%s\" to %s: %s", field, value, path,
			    strerror(errno));
	return 0;
}

static int write_limits(const char *dir, const struct oci_resources *r, struct status *st)
{
	char v[64];

	if (r->memory_limit) {
		if (r->memory_limit < 0)
			snprintf(v, sizeof(v), "max");
		else
			snprintf(v, sizeof(v), "%lld", (long long)r->memory_limit);
		if (write_limit(dir, "memory.max", v, "OCI.Linux.Resources.Memory.Limit", st) < 0)
			return -1;
	}
	if (r->cpu_quota) {
		unsigned long long period = r->cpu_period ? r->cpu_period : 100000;
		if (r->cpu_quota < 0)
			snprintf(v, sizeof(v), "max %llu", period);
		else
			snprintf(v, sizeof(v), "%lld %llu", (long long)r->cpu_quota, period);
		if (write_limit(dir, "cpu.max", v, "OCI.Linux.Resources.CPU.Quota", st) < 0)
			return -1;
	}
	if (r->cpu_shares >= 2) { /* runc's conversion of cgroup v1 shares to a v2 weight */
		snprintf(v, sizeof(v), "%llu", 1 + ((unsigned long long)r->cpu_shares - 2) * 9999 / 262142);
		if (write_limit(dir, "cpu.weight", v, "OCI.Linux.Resources.CPU.Shares", st) < 0)
			return -1;
	}
	if (r->pids_limit) {
		if (r->pids_limit < 0)
			snprintf(v, sizeof(v), "max");
		else
			snprintf(v, sizeof(v), "%lld", (long long)r->pids_limit);
		if (write_limit(dir, "pids.max", v, "OCI.Linux.Resources.Pids.Limit", st) < 0)
			return -1;
	}
	return 0;
}

int cgroup_create(const char *container_id, const struct oci_linux *lin, char **dir, struct status *st)
{
	const struct oci_resources *r = &lin->resources;
	unsigned needed = (r->memory_limit ? C_MEMORY : 0) | (r->pids_limit ? C_PIDS : 0) |
			  (r->cpu_quota || r->cpu_shares ? C_CPU : 0);
	char path[PATH_MAX];

	*dir = NULL;
	if (!G.available) {
		for (unsigned c = C_MEMORY; c <= C_CPU; c <<= 1)
			if (needed & c)
				return fail(st, CODE_FAILED_PRECONDITION,
					    "%s: cannot be honoured: %s is not a cgroup v2 hierarchy", controller_field(c),
					    G.root);
		return 0;
	}
	if (group_path(container_id, lin->cgroups_path, path, sizeof(path), st) < 0)
		return -1;
	if (is_dir(path))
		return fail(st, CODE_ALREADY_EXISTS, "OCI.Linux.CgroupsPath: the cgroup %s already exists", path);
	/* every level from the root down to the parent delegates the controllers */
	size_t rootlen = strlen(G.root);
	for (char *p = path + rootlen; p; p = strchr(p + 1, '/')) {
		char saved = *p;
		*p = '\0';
		int rc = 0;
		if (p > path + rootlen && mkdir(path, 0755) < 0 && errno != EEXIST)
			rc = fail(st, CODE_FAILED_PRECONDITION, "creating the cgroup %s: %s", path, strerror(errno));
		if (rc == 0)
			rc = enable_controllers(*path ? path : "/", needed, st);
		*p = saved;
		if (rc < 0)
			return -1;
	}
	if (mkdir(path, 0755) < 0)
		return fail(st, CODE_FAILED_PRECONDITION, "creating the cgroup %s: %s", path, strerror(errno));
	if (write_limits(path, r, st) < 0) {
		rmdir(path);
		return -1;
	}
	*dir = strdup(path);
	if (!*dir) {
		rmdir(path);
		return fail(st, CODE_RESOURCE_EXHAUSTED, "out of memory");
	}
	return 0;
}

int cgroup_add(const char *dir, pid_t pid, struct status *st)
{
	char path[PATH_MAX], v[24];

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	snprintf(v, sizeof(v), "%d", (int)pid);
	if (write_string(path, v) < 0)
		return fail(st, CODE_INTERNAL, "moving process %d into %s: %s", (int)pid, path, strerror(errno));
	return 0;
}

void cgroup_signal(const char *dir, int sig)
{
	char path[PATH_MAX], line[32];

	if (sig == SIGKILL) {
		snprintf(path, sizeof(path), "%s/cgroup.kill", dir);
		if (write_string(path, "1") == 0)
			return;
	}
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		int pid = atoi(line);
		if (pid > 0)
			kill(pid, sig);
	}
	fclose(f);
}

bool cgroup_populated(const char *dir)
{
	char path[PATH_MAX], buf[256];

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	if (read_small_file(path, buf, sizeof(buf)) < 0)
		return false;
	return strstr(buf, "populated 1") != NULL;
}

void cgroup_remove(const char *dir)
{
	if (rmdir(dir) == 0 || errno == ENOENT)
		return;
	for (int i = 0; i < MAX_LATER; i++) {
		if (!G.later[i].dir) {
			G.later[i].dir = strdup(dir);
			G.later[i].until = now_ms() + REMOVE_GIVE_UP_MS;
			G.next_try = now_ms() + REMOVE_RETRY_MS;
			return;
		}
	}
	log_msg("warning: cannot remove the cgroup %s: %s", dir, strerror(errno));
}

static uint64_t cgroup_tick(uint64_t now)
{
	bool pending = false;

	if (!G.next_try || now < G.next_try)
		return G.next_try ? G.next_try : UINT64_MAX;
	for (int i = 0; i < MAX_LATER; i++) {
		if (!G.later[i].dir)
			continue;
		if (rmdir(G.later[i].dir) == 0 || errno == ENOENT || now >= G.later[i].until) {
			if (now >= G.later[i].until && errno != ENOENT)
				log_msg("warning: cannot remove the cgroup %s: %s", G.later[i].dir, strerror(errno));
			free(G.later[i].dir);
			G.later[i].dir = NULL;
			continue;
		}
		pending = true;
	}
	G.next_try = pending ? now + REMOVE_RETRY_MS : 0;
	return G.next_try ? G.next_try : UINT64_MAX;
}
