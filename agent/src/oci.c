#include "oci.h"

#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include "ttrpc.h"
#include "util.h"

#define FIELD_MAX 160
#define HOSTNAME_MAX 64

static int invalid(struct pbdec *d, const char *fmt_, const char *a, const char *b)
{
	return fail(d->st, CODE_INVALID_ARGUMENT, fmt_, a, b);
}

/* Reads a nested message field and decodes it by its table. */
static int nested(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, const struct pbd_field *fields,
		  size_t nfields, void *out, pbd_other_fn other, void *ctx)
{
	const uint8_t *p;
	size_t n;

	if (pbd_bytes(d, r, wt, name, &p, &n) < 0)
		return -1;
	return pbd_message(d, p, n, name, fields, nfields, out, other, ctx);
}

/* ------------------------------------------------------------------ process */

static const struct {
	const char *name;
	int resource;
} RLIMITS[] = {
	{"RLIMIT_CPU", RLIMIT_CPU},         {"RLIMIT_FSIZE", RLIMIT_FSIZE},
	{"RLIMIT_DATA", RLIMIT_DATA},       {"RLIMIT_STACK", RLIMIT_STACK},
	{"RLIMIT_CORE", RLIMIT_CORE},       {"RLIMIT_RSS", RLIMIT_RSS},
	{"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_NOFILE", RLIMIT_NOFILE},
	{"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_AS", RLIMIT_AS},
	{"RLIMIT_LOCKS", RLIMIT_LOCKS},     {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
	{"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
	{"RLIMIT_RTPRIO", RLIMIT_RTPRIO},   {"RLIMIT_RTTIME", RLIMIT_RTTIME},
};

static const struct pbd_field USER_FIELDS[] = {
	PBD_FIELD(1, PBD_UINT32, struct oci_user, uid, "UID"),
	PBD_FIELD(2, PBD_UINT32, struct oci_user, gid, "GID"),
	PBD_FIELD(3, PBD_UINT32S, struct oci_user, additional_gids, "AdditionalGids"),
	PBD_FIELD(4, PBD_STRING, struct oci_user, username, "Username"),
};

static const char *const CAP_SET_NAMES[CAPS_SETS] = {"Bounding", "Effective", "Inheritable", "Permitted",
						      "Ambient"};

struct cap_names {
	struct strv set[CAPS_SETS];
};

static const struct pbd_field CAP_FIELDS[] = {
	PBD_FIELD(1, PBD_STRV, struct cap_names, set[0], "Bounding"),
	PBD_FIELD(2, PBD_STRV, struct cap_names, set[1], "Effective"),
	PBD_FIELD(3, PBD_STRV, struct cap_names, set[2], "Inheritable"),
	PBD_FIELD(4, PBD_STRV, struct cap_names, set[3], "Permitted"),
	PBD_FIELD(5, PBD_STRV, struct cap_names, set[4], "Ambient"),
};

struct rlimit_fields {
	char *type;
	uint64_t hard, soft;
};

static const struct pbd_field RLIMIT_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct rlimit_fields, type, "Type"),
	PBD_FIELD(2, PBD_UINT64, struct rlimit_fields, hard, "Hard"),
	PBD_FIELD(3, PBD_UINT64, struct rlimit_fields, soft, "Soft"),
};

static const struct pbd_field PROCESS_FIELDS[] = {
	PBD_FIELD(1, PBD_BOOL, struct oci_process, terminal, "Terminal"),
	PBD_FIELD(4, PBD_STRV, struct oci_process, args, "Args"),
	PBD_FIELD(5, PBD_STRV, struct oci_process, env, "Env"),
	PBD_FIELD(6, PBD_STRING, struct oci_process, cwd, "Cwd"),
	PBD_FIELD(9, PBD_BOOL, struct oci_process, no_new_privileges, "NoNewPrivileges"),
	PBD_FIELD(11, PBD_INT64, struct oci_process, oom_score_adj, "OOMScoreAdj"),
};

static int caps_from_names(struct pbdec *d, const char *name, const struct cap_names *names, struct cap_sets *caps)
{
	char field[FIELD_MAX];

	for (int set = 0; set < CAPS_SETS; set++) {
		for (size_t i = 0; i < names->set[set].n; i++) {
			int cap = cap_from_name(names->set[set].v[i]);
			if (cap < 0) {
				fmt(field, sizeof(field), "%s.%s", name, CAP_SET_NAMES[set]);
				return invalid(d, "%s: unknown capability \"%s\"", field, names->set[set].v[i]);
			}
			caps->set[set] |= 1ull << cap;
		}
	}
	return 0;
}

static int add_rlimit(struct pbdec *d, const char *name, const struct rlimit_fields *f, struct oci_process *p)
{
	struct oci_rlimit lim = {-1, NULL, f->soft, f->hard};

	for (size_t i = 0; f->type && i < sizeof(RLIMITS) / sizeof(RLIMITS[0]); i++) {
		if (strcmp(f->type, RLIMITS[i].name) == 0) {
			lim.resource = RLIMITS[i].resource;
			lim.name = RLIMITS[i].name;
		}
	}
	if (lim.resource < 0)
		return invalid(d, "%s.Type: unknown rlimit \"%s\"", name, f->type ? f->type : "");
	if (lim.soft > lim.hard)
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s: %s soft limit %llu exceeds the hard limit %llu", name,
			    lim.name, (unsigned long long)lim.soft, (unsigned long long)lim.hard);
	for (size_t i = 0; i < p->nrlimits; i++)
		if (p->rlimits[i].resource == lim.resource)
			return invalid(d, "%s: %s is given twice", name, lim.name);
	if (arena_reserve(d->arena, (void **)&p->rlimits, &p->rlimits_cap, p->nrlimits + 1, sizeof(lim)) < 0)
		return pbd_nomem(d, name);
	p->rlimits[p->nrlimits++] = lim;
	return 0;
}

struct process_ctx {
	const char *prefix;
	struct oci_process *p;
};

/* User=3, Capabilities=7, Rlimits=8 (ConsoleSize, ApparmorProfile, SelinuxLabel: nothing to do here) */
static int process_nested(struct pbdec *d, struct pb_reader *r, uint32_t number, uint32_t wt, void *ctx)
{
	struct process_ctx *c = ctx;
	char name[FIELD_MAX];

	if (number == 3) {
		fmt(name, sizeof(name), "%s.User", c->prefix);
		return nested(d, r, wt, name, USER_FIELDS, PBD_COUNT(USER_FIELDS), &c->p->user, NULL, NULL);
	}
	if (number == 7) {
		struct cap_names names;
		memset(&names, 0, sizeof(names));
		fmt(name, sizeof(name), "%s.Capabilities", c->prefix);
		c->p->has_caps = true;
		if (nested(d, r, wt, name, CAP_FIELDS, PBD_COUNT(CAP_FIELDS), &names, NULL, NULL) < 0)
			return -1;
		return caps_from_names(d, name, &names, &c->p->caps);
	}
	if (number == 8) {
		struct rlimit_fields f = {0};
		fmt(name, sizeof(name), "%s.Rlimits[%zu]", c->prefix, c->p->nrlimits);
		if (nested(d, r, wt, name, RLIMIT_FIELDS, PBD_COUNT(RLIMIT_FIELDS), &f, NULL, NULL) < 0)
			return -1;
		return add_rlimit(d, name, &f, c->p);
	}
	return 1;
}

static int validate_process(struct pbdec *d, const char *prefix, const struct oci_process *p)
{
	char name[FIELD_MAX];

	if (p->terminal) {
		fmt(name, sizeof(name), "%s.Terminal", prefix);
		return invalid(d, "%s: a terminal is not supported by this agent; set it to false%s", name, "");
	}
	fmt(name, sizeof(name), "%s.Args", prefix);
	if (p->args.n == 0)
		return invalid(d, "%s: empty; the process needs a command%s", name, "");
	if (!*p->args.v[0])
		return invalid(d, "%s[0]: empty command%s", name, "");
	fmt(name, sizeof(name), "%s.Cwd", prefix);
	if (!p->cwd || p->cwd[0] != '/')
		return invalid(d, "%s: \"%s\" is not an absolute path", name, p->cwd ? p->cwd : "");
	for (size_t i = 0; i < p->env.n; i++) {
		const char *eq = strchr(p->env.v[i], '=');
		if (!eq || eq == p->env.v[i]) {
			fmt(name, sizeof(name), "%s.Env[%zu]", prefix, i);
			return invalid(d, "%s: \"%s\" is not NAME=value", name, p->env.v[i]);
		}
	}
	if (p->oom_score_adj < -1000 || p->oom_score_adj > 1000) {
		fmt(name, sizeof(name), "%s.OOMScoreAdj", prefix);
		return invalid(d, "%s: outside -1000..1000%s", name, "");
	}
	return 0;
}

int oci_decode_process(struct pbdec *d, const char *prefix, const uint8_t *data, size_t len,
		       struct oci_process *p)
{
	struct process_ctx ctx = {prefix, p};

	memset(p, 0, sizeof(*p));
	if (pbd_message(d, data, len, prefix, PROCESS_FIELDS, PBD_COUNT(PROCESS_FIELDS), p, process_nested, &ctx) < 0)
		return -1;
	return validate_process(d, prefix, p);
}

const char *oci_getenv(const struct strv *env, const char *name)
{
	size_t n = strlen(name);
	const char *found = NULL;

	for (size_t i = 0; i < env->n; i++) /* the last one wins, as in execve's environment */
		if (strncmp(env->v[i], name, n) == 0 && env->v[i][n] == '=')
			found = env->v[i] + n + 1;
	return found;
}

/* ------------------------------------------------------------------ linux */

struct namespace_fields {
	char *type, *path;
};

static const struct pbd_field NAMESPACE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct namespace_fields, type, "Type"),
	PBD_FIELD(2, PBD_STRING, struct namespace_fields, path, "Path"),
};

struct device_fields {
	struct oci_device dev;
	char *type;
};

static const struct pbd_field DEVICE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct device_fields, dev.path, "Path"),
	PBD_FIELD(2, PBD_STRING, struct device_fields, type, "Type"),
	PBD_FIELD(3, PBD_INT64, struct device_fields, dev.major, "Major"),
	PBD_FIELD(4, PBD_INT64, struct device_fields, dev.minor, "Minor"),
	PBD_FIELD(5, PBD_UINT32, struct device_fields, dev.file_mode, "FileMode"),
	PBD_FIELD(6, PBD_UINT32, struct device_fields, dev.uid, "UID"),
	PBD_FIELD(7, PBD_UINT32, struct device_fields, dev.gid, "GID"),
};

static const struct pbd_field MEMORY_FIELDS[] = {
	PBD_FIELD(1, PBD_INT64, struct oci_resources, memory_limit, "Limit"),
};

static const struct pbd_field CPU_FIELDS[] = {
	PBD_FIELD(1, PBD_UINT64, struct oci_resources, cpu_shares, "Shares"),
	PBD_FIELD(2, PBD_INT64, struct oci_resources, cpu_quota, "Quota"),
	PBD_FIELD(3, PBD_UINT64, struct oci_resources, cpu_period, "Period"),
};

static const struct pbd_field PIDS_FIELDS[] = {
	PBD_FIELD(1, PBD_INT64, struct oci_resources, pids_limit, "Limit"),
};

static const struct pbd_field SYSCTL_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct oci_sysctl, key, "key"),
	PBD_FIELD(2, PBD_STRING, struct oci_sysctl, value, "value"),
};

struct linux_fields {
	struct oci_linux *l;
	char *propagation;
	size_t nns;
};

static const struct pbd_field LINUX_FIELDS[] = {
	PBD_FIELD(5, PBD_STRING, struct oci_linux, cgroups_path, "CgroupsPath"),
	PBD_FIELD(10, PBD_STRV, struct oci_linux, masked_paths, "MaskedPaths"),
	PBD_FIELD(11, PBD_STRV, struct oci_linux, readonly_paths, "ReadonlyPaths"),
};

static int ns_kind(const char *type)
{
	static const char *const NAMES[NS_COUNT] = {"pid", "network", "mount", "ipc", "uts", "cgroup"};
	for (int i = 0; i < NS_COUNT; i++)
		if (strcmp(type, NAMES[i]) == 0)
			return i;
	return -1;
}

static int add_namespace(struct pbdec *d, const char *name, const struct namespace_fields *f, struct oci_linux *l)
{
	const char *type = f->type ? f->type : "";

	if (strcmp(type, "user") == 0 || strcmp(type, "time") == 0)
		return invalid(d, "%s.Type: %s namespaces are not supported by this agent", name, type);
	int kind = ns_kind(type);
	if (kind < 0)
		return invalid(d, "%s.Type: unknown namespace type \"%s\"", name, type);
	if (l->ns[kind].wanted)
		return invalid(d, "%s.Type: a second %s namespace", name, type);
	if (f->path && *f->path && f->path[0] != '/')
		return invalid(d, "%s.Path: \"%s\" is not an absolute path", name, f->path);
	l->ns[kind].wanted = true;
	l->ns[kind].path = f->path && *f->path ? f->path : NULL;
	return 0;
}

static int add_device(struct pbdec *d, const char *name, struct device_fields *f, struct oci_linux *l)
{
	struct oci_device *dev = &f->dev;

	if (!dev->path || dev->path[0] != '/')
		return invalid(d, "%s.Path: \"%s\" is not an absolute path", name, dev->path ? dev->path : "");
	if (!f->type || strlen(f->type) != 1 || !strchr("cbup", f->type[0]))
		return invalid(d, "%s.Type: \"%s\" is not one of c, b, u, p", name, f->type ? f->type : "");
	dev->type = f->type[0];
	if (dev->major < 0 || dev->major > 0xfff || dev->minor < 0 || dev->minor > 0xfffff)
		return invalid(d, "%s: device number out of range%s", name, "");
	if (arena_reserve(d->arena, (void **)&l->devices, &l->devices_cap, l->ndevices + 1, sizeof(*dev)) < 0)
		return pbd_nomem(d, name);
	l->devices[l->ndevices++] = *dev;
	return 0;
}

static int add_sysctl(struct pbdec *d, const char *name, struct oci_sysctl *kv, struct oci_linux *l)
{
	if (!kv->key || !*kv->key || strchr(kv->key, '/') || strstr(kv->key, "..") || kv->key[0] == '.')
		return invalid(d, "%s: \"%s\" is not a sysctl name (like net.ipv4.ip_forward)", name,
			       kv->key ? kv->key : "");
	if (!kv->value)
		kv->value = "";
	if (arena_reserve(d->arena, (void **)&l->sysctl, &l->sysctl_cap, l->nsysctl + 1, sizeof(*kv)) < 0)
		return pbd_nomem(d, name);
	l->sysctl[l->nsysctl++] = *kv;
	return 0;
}

/* Resources { Devices=1 (ignored: cgroup v2 would need BPF; the VM is the boundary), Memory=2, CPU=3,
 * Pids=4 } */
static int resources_nested(struct pbdec *d, struct pb_reader *r, uint32_t number, uint32_t wt, void *ctx)
{
	struct oci_linux *l = ctx;

	if (number == 1)
		l->has_devices_cgroup_rules = true;
	if (number == 2)
		return nested(d, r, wt, "OCI.Linux.Resources.Memory", MEMORY_FIELDS, PBD_COUNT(MEMORY_FIELDS),
			      &l->resources, NULL, NULL);
	if (number == 3)
		return nested(d, r, wt, "OCI.Linux.Resources.CPU", CPU_FIELDS, PBD_COUNT(CPU_FIELDS), &l->resources,
			      NULL, NULL);
	if (number == 4)
		return nested(d, r, wt, "OCI.Linux.Resources.Pids", PIDS_FIELDS, PBD_COUNT(PIDS_FIELDS), &l->resources,
			      NULL, NULL);
	return 1;
}

static int validate_resources(struct pbdec *d, const struct oci_resources *res)
{
	const char *name = "OCI.Linux.Resources";

	if (res->memory_limit < -1)
		return invalid(d, "%s.Memory.Limit: negative (use -1 for unlimited)%s", name, "");
	if (res->cpu_quota < -1 || (res->cpu_quota > 0 && res->cpu_quota < 1000))
		return invalid(d, "%s.CPU.Quota: must be -1 (unlimited) or at least 1000 microseconds%s", name, "");
	if (res->cpu_period && (res->cpu_period < 1000 || res->cpu_period > 1000000))
		return invalid(d, "%s.CPU.Period: must be 1000..1000000 microseconds%s", name, "");
	if (res->cpu_shares > 262144)
		return invalid(d, "%s.CPU.Shares: must be 2..262144%s", name, "");
	if (res->pids_limit < -1)
		return invalid(d, "%s.Pids.Limit: negative (use -1 for unlimited)%s", name, "");
	return 0;
}

/* UIDMappings=1, GIDMappings=2, Sysctl=3, Resources=4, Namespaces=6, Devices=7, Seccomp=8,
 * RootfsPropagation=9 (MountLabel, IntelRdt: nothing to do here) */
static int linux_nested(struct pbdec *d, struct pb_reader *r, uint32_t number, uint32_t wt, void *ctx)
{
	struct linux_fields *c = ctx;
	struct oci_linux *l = c->l;
	char name[FIELD_MAX];

	switch (number) {
	case 1:
	case 2:
		l->has_id_mappings = true;
		return 1;
	case 3: {
		struct oci_sysctl kv = {0};
		if (nested(d, r, wt, "OCI.Linux.Sysctl", SYSCTL_FIELDS, PBD_COUNT(SYSCTL_FIELDS), &kv, NULL, NULL) < 0)
			return -1;
		return add_sysctl(d, "OCI.Linux.Sysctl", &kv, l);
	}
	case 4:
		return nested(d, r, wt, "OCI.Linux.Resources", NULL, 0, NULL, resources_nested, l);
	case 6: {
		struct namespace_fields f = {0};
		fmt(name, sizeof(name), "OCI.Linux.Namespaces[%zu]", c->nns++);
		if (nested(d, r, wt, name, NAMESPACE_FIELDS, PBD_COUNT(NAMESPACE_FIELDS), &f, NULL, NULL) < 0)
			return -1;
		return add_namespace(d, name, &f, l);
	}
	case 7: {
		struct device_fields f;
		memset(&f, 0, sizeof(f));
		fmt(name, sizeof(name), "OCI.Linux.Devices[%zu]", l->ndevices);
		if (nested(d, r, wt, name, DEVICE_FIELDS, PBD_COUNT(DEVICE_FIELDS), &f, NULL, NULL) < 0)
			return -1;
		return add_device(d, name, &f, l);
	}
	case 8:
		l->has_seccomp = true;
		return 1;
	case 9:
		return pbd_string(d, r, wt, "OCI.Linux.RootfsPropagation", &c->propagation);
	}
	return 1;
}

static int check_paths(struct pbdec *d, const char *name, const struct strv *v)
{
	char field[FIELD_MAX];

	for (size_t i = 0; i < v->n; i++) {
		if (v->v[i][0] != '/') {
			fmt(field, sizeof(field), "%s[%zu]", name, i);
			return invalid(d, "%s: \"%s\" is not an absolute path", field, v->v[i]);
		}
	}
	return 0;
}

static int decode_linux(struct pbdec *d, struct pb_reader *r, uint32_t wt, struct oci_linux *l)
{
	const char *name = "OCI.Linux";
	struct linux_fields c = {l, NULL, 0};

	if (nested(d, r, wt, name, LINUX_FIELDS, PBD_COUNT(LINUX_FIELDS), l, linux_nested, &c) < 0)
		return -1;
	if (l->has_id_mappings)
		return invalid(d, "%s.UIDMappings/GIDMappings: user namespaces are not supported by this agent%s", name,
			       "");
	if (l->has_seccomp)
		return invalid(d, "%s.Seccomp: seccomp is not supported by this agent (GetGuestDetails reports "
			       "supports_seccomp=false)%s", name, "");
	if (c.propagation && *c.propagation) {
		l->rootfs_propagation = mountopt_propagation(c.propagation);
		if (!l->rootfs_propagation)
			return invalid(d, "%s.RootfsPropagation: unknown value \"%s\"", name, c.propagation);
	}
	if (l->cgroups_path && (strstr(l->cgroups_path, "..") || strlen(l->cgroups_path) > 512))
		return invalid(d, "%s.CgroupsPath: \"%s\" must not contain \"..\" (and at most 512 bytes)", name,
			       l->cgroups_path);
	if (validate_resources(d, &l->resources) < 0 || check_paths(d, "OCI.Linux.MaskedPaths", &l->masked_paths) < 0 ||
	    check_paths(d, "OCI.Linux.ReadonlyPaths", &l->readonly_paths) < 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------ spec */

struct root_fields {
	char *path;
	bool readonly;
};

static const struct pbd_field ROOT_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct root_fields, path, "Path"),
	PBD_FIELD(2, PBD_BOOL, struct root_fields, readonly, "Readonly"),
};

static const struct pbd_field MOUNT_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct oci_mount, destination, "destination"),
	PBD_FIELD(2, PBD_STRING, struct oci_mount, source, "source"),
	PBD_FIELD(3, PBD_STRING, struct oci_mount, type, "type"),
	PBD_FIELD(4, PBD_STRV, struct oci_mount, options, "options"),
};

static const struct pbd_field SPEC_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct oci_spec, version, "Version"),
	PBD_FIELD(4, PBD_STRING, struct oci_spec, hostname, "Hostname"),
};

static int add_mount(struct pbdec *d, const char *name, struct oci_mount *m, struct oci_spec *s)
{
	if (!m->destination || m->destination[0] != '/')
		return invalid(d, "%s.destination: \"%s\" is not an absolute path", name,
			       m->destination ? m->destination : "");
	if (!m->source)
		m->source = "";
	if (!m->type)
		m->type = "";
	if (mountopt_parse(d->arena, &m->options, name, &m->opts, d->st) < 0)
		return -1;
	if (strcmp(m->type, "bind") == 0)
		m->opts.bind = true;
	if (!m->opts.bind && !*m->type)
		return invalid(d, "%s.type: empty (and the options do not ask for a bind mount)%s", name, "");
	if (m->opts.bind && m->source[0] != '/')
		return invalid(d, "%s.source: \"%s\" is not an absolute path (a bind mount's source is a guest path)",
			       name, m->source);
	if (arena_reserve(d->arena, (void **)&s->mounts, &s->mounts_cap, s->nmounts + 1, sizeof(*m)) < 0)
		return pbd_nomem(d, name);
	s->mounts[s->nmounts++] = *m;
	return 0;
}

/* Process=2, Root=3, Mounts=5, Linux=8 (Hooks: host hooks, stripped by the runtime; Annotations,
 * Solaris, Windows: nothing to do here) */
static int spec_nested(struct pbdec *d, struct pb_reader *r, uint32_t number, uint32_t wt, void *ctx)
{
	struct oci_spec *s = ctx;
	const uint8_t *p;
	size_t n;
	char name[FIELD_MAX];

	switch (number) {
	case 2:
		s->has_process = true;
		if (pbd_bytes(d, r, wt, "OCI.Process", &p, &n) < 0)
			return -1;
		return oci_decode_process(d, "OCI.Process", p, n, &s->process);
	case 3: {
		struct root_fields f = {0};
		if (nested(d, r, wt, "OCI.Root", ROOT_FIELDS, PBD_COUNT(ROOT_FIELDS), &f, NULL, NULL) < 0)
			return -1;
		s->root_path = f.path;
		s->root_readonly = f.readonly;
		return 0;
	}
	case 5: {
		struct oci_mount m;
		memset(&m, 0, sizeof(m));
		fmt(name, sizeof(name), "OCI.Mounts[%zu]", s->nmounts);
		if (nested(d, r, wt, name, MOUNT_FIELDS, PBD_COUNT(MOUNT_FIELDS), &m, NULL, NULL) < 0)
			return -1;
		return add_mount(d, name, &m, s);
	}
	case 8:
		s->has_linux = true;
		return decode_linux(d, r, wt, &s->lin);
	}
	return 1;
}

static int validate_spec(struct pbdec *d, struct oci_spec *s)
{
	if (!s->has_process)
		return invalid(d, "OCI.Process: missing; the spec needs a process to run%s%s", "", "");
	if (!s->root_path || !*s->root_path)
		return invalid(d, "OCI.Root.Path: empty; the spec needs a root filesystem%s%s", "", "");
	if (s->root_path[0] != '/')
		return invalid(d, "OCI.Root.Path: \"%s\" is not an absolute path%s", s->root_path, "");
	if (!s->lin.ns[NS_MNT].wanted)
		return invalid(d, "OCI.Linux.Namespaces: no mount namespace; the container's root needs one%s%s", "",
			       "");
	if (s->hostname && *s->hostname) {
		if (strlen(s->hostname) > HOSTNAME_MAX)
			return invalid(d, "OCI.Hostname: \"%s\" is longer than %s bytes", s->hostname, "64");
		if (!s->lin.ns[NS_UTS].wanted || s->lin.ns[NS_UTS].path)
			return invalid(d, "OCI.Hostname: \"%s\" is set, but the spec has no new uts namespace%s",
				       s->hostname, "");
	}
	return 0;
}

int oci_decode_spec(struct pbdec *d, const uint8_t *data, size_t len, struct oci_spec *s)
{
	memset(s, 0, sizeof(*s));
	if (pbd_message(d, data, len, "OCI", SPEC_FIELDS, PBD_COUNT(SPEC_FIELDS), s, spec_nested, s) < 0)
		return -1;
	return validate_spec(d, s);
}
