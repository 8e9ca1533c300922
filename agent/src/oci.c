#include "oci.h"

#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include "ttrpc.h"
#include "util.h"

#define FIELD_MAX 160
#define HOSTNAME_MAX 64

static int invalid(struct pbdec *d, const char *fmt, const char *a, const char *b)
{
	return fail(d->st, CODE_INVALID_ARGUMENT, fmt, a, b);
}

static int sub_reader(struct pbdec *d, struct pb_reader *r, uint32_t wt, const char *name, struct pb_reader *sub)
{
	const uint8_t *p;
	size_t n;

	if (pbd_bytes(d, r, wt, name, &p, &n) < 0)
		return -1;
	pb_reader_init(sub, p, n);
	return 0;
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

static int decode_user(struct pbdec *d, const char *prefix, struct pb_reader *r, struct oci_process *p)
{
	char name[FIELD_MAX];
	uint32_t field, wt;

	snprintf(name, sizeof(name), "%s.User", prefix);
	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc;
		switch (field) {
		case 1:
			rc = pbd_uint32(d, r, wt, name, &p->uid);
			break;
		case 2:
			rc = pbd_uint32(d, r, wt, name, &p->gid);
			break;
		case 3:
			rc = pbd_uint32s(d, r, wt, name, &p->additional_gids, &p->nadditional_gids,
					 &p->additional_gids_cap);
			break;
		case 4:
			rc = pbd_string(d, r, wt, name, &p->username);
			break;
		default:
			rc = pbd_skip(d, r, wt, name);
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int decode_caps(struct pbdec *d, const char *prefix, struct pb_reader *r, struct cap_sets *caps)
{
	static const char *const SET_NAMES[CAPS_SETS] = {"Bounding", "Effective", "Inheritable", "Permitted",
							  "Ambient"};
	char name[FIELD_MAX];
	uint32_t field, wt;

	snprintf(name, sizeof(name), "%s.Capabilities", prefix);
	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		if (field < 1 || field > CAPS_SETS) {
			if (pbd_skip(d, r, wt, name) < 0)
				return -1;
			continue;
		}
		char set_name[FIELD_MAX], *cap;
		fmt(set_name, sizeof(set_name), "%s.%s", name, SET_NAMES[field - 1]);
		if (pbd_string(d, r, wt, set_name, &cap) < 0)
			return -1;
		int n = cap_from_name(cap);
		if (n < 0)
			return invalid(d, "%s: unknown capability \"%s\"", set_name, cap);
		caps->set[field - 1] |= 1ull << n;
	}
	return 0;
}

static int decode_rlimit(struct pbdec *d, const char *prefix, struct pb_reader *r, struct oci_process *p)
{
	char name[FIELD_MAX];
	uint32_t field, wt;
	char *type = NULL;
	struct oci_rlimit lim = {0};

	snprintf(name, sizeof(name), "%s.Rlimits[%zu]", prefix, p->nrlimits);
	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc;
		if (field == 1)
			rc = pbd_string(d, r, wt, name, &type);
		else if (field == 2)
			rc = pbd_uint64(d, r, wt, name, &lim.hard);
		else if (field == 3)
			rc = pbd_uint64(d, r, wt, name, &lim.soft);
		else
			rc = pbd_skip(d, r, wt, name);
		if (rc < 0)
			return -1;
	}
	lim.resource = -1;
	for (size_t i = 0; type && i < sizeof(RLIMITS) / sizeof(RLIMITS[0]); i++) {
		if (strcmp(type, RLIMITS[i].name) == 0) {
			lim.resource = RLIMITS[i].resource;
			lim.name = RLIMITS[i].name;
		}
	}
	if (lim.resource < 0)
		return invalid(d, "%s.Type: unknown rlimit \"%s\"", name, type ? type : "");
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

static int validate_process(struct pbdec *d, const char *prefix, const struct oci_process *p)
{
	char name[FIELD_MAX];

	if (p->terminal) {
		snprintf(name, sizeof(name), "%s.Terminal", prefix);
		return invalid(d, "%s: a terminal is not supported by this agent; set it to false%s", name, "");
	}
	snprintf(name, sizeof(name), "%s.Args", prefix);
	if (p->args.n == 0)
		return invalid(d, "%s: empty; the process needs a command%s", name, "");
	if (!*p->args.v[0])
		return invalid(d, "%s[0]: empty command%s", name, "");
	snprintf(name, sizeof(name), "%s.Cwd", prefix);
	if (!p->cwd || p->cwd[0] != '/')
		return invalid(d, "%s: \"%s\" is not an absolute path", name, p->cwd ? p->cwd : "");
	for (size_t i = 0; i < p->env.n; i++) {
		const char *eq = strchr(p->env.v[i], '=');
		if (!eq || eq == p->env.v[i]) {
			snprintf(name, sizeof(name), "%s.Env[%zu]", prefix, i);
			return invalid(d, "%s: \"%s\" is not NAME=value", name, p->env.v[i]);
		}
	}
	return 0;
}

int oci_decode_process(struct pbdec *d, const char *prefix, const uint8_t *data, size_t len,
		       struct oci_process *p)
{
	static const char *const FIELDS[] = {[1] = "Terminal", [4] = "Args", [5] = "Env", [6] = "Cwd",
					     [9] = "NoNewPrivileges", [11] = "OOMScoreAdj"};
	struct pb_reader r, sub;
	uint32_t field, wt;
	char name[FIELD_MAX];

	memset(p, 0, sizeof(*p));
	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pbd_key(d, &r, prefix, &field, &wt) < 0)
			return -1;
		if (field < sizeof(FIELDS) / sizeof(FIELDS[0]) && FIELDS[field])
			fmt(name, sizeof(name), "%s.%s", prefix, FIELDS[field]);
		else
			fmt(name, sizeof(name), "%s", prefix);
		int rc;
		switch (field) {
		case 1:
			rc = pbd_bool(d, &r, wt, name, &p->terminal);
			break;
		case 3:
			rc = sub_reader(d, &r, wt, prefix, &sub) < 0 ? -1 : decode_user(d, prefix, &sub, p);
			break;
		case 4:
			rc = pbd_strv(d, &r, wt, name, &p->args);
			break;
		case 5:
			rc = pbd_strv(d, &r, wt, name, &p->env);
			break;
		case 6:
			rc = pbd_string(d, &r, wt, name, &p->cwd);
			break;
		case 7:
			p->has_caps = true;
			rc = sub_reader(d, &r, wt, prefix, &sub) < 0 ? -1 : decode_caps(d, prefix, &sub, &p->caps);
			break;
		case 8:
			rc = sub_reader(d, &r, wt, prefix, &sub) < 0 ? -1 : decode_rlimit(d, prefix, &sub, p);
			break;
		case 9:
			rc = pbd_bool(d, &r, wt, name, &p->no_new_privileges);
			break;
		case 11:
			rc = pbd_int64(d, &r, wt, name, &p->oom_score_adj);
			if (rc == 0 && (p->oom_score_adj < -1000 || p->oom_score_adj > 1000))
				rc = invalid(d, "%s: outside -1000..1000%s", name, "");
			break;
		default: /* ConsoleSize, ApparmorProfile, SelinuxLabel: nothing to do in this guest */
			rc = pbd_skip(d, &r, wt, prefix);
		}
		if (rc < 0)
			return -1;
	}
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

static int ns_kind(const char *type)
{
	static const char *const NAMES[NS_COUNT] = {"pid", "network", "mount", "ipc", "uts", "cgroup"};
	for (int i = 0; i < NS_COUNT; i++)
		if (strcmp(type, NAMES[i]) == 0)
			return i;
	return -1;
}

static int decode_namespace(struct pbdec *d, struct pb_reader *r, size_t index, struct oci_linux *l)
{
	char name[FIELD_MAX];
	uint32_t field, wt;
	char *type = NULL, *path = NULL;

	snprintf(name, sizeof(name), "OCI.Linux.Namespaces[%zu]", index);
	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc;
		if (field == 1)
			rc = pbd_string(d, r, wt, name, &type);
		else if (field == 2)
			rc = pbd_string(d, r, wt, name, &path);
		else
			rc = pbd_skip(d, r, wt, name);
		if (rc < 0)
			return -1;
	}
	if (!type)
		type = "";
	if (strcmp(type, "user") == 0 || strcmp(type, "time") == 0)
		return invalid(d, "%s.Type: %s namespaces are not supported by this agent", name, type);
	int kind = ns_kind(type);
	if (kind < 0)
		return invalid(d, "%s.Type: unknown namespace type \"%s\"", name, type);
	if (l->ns[kind].wanted)
		return invalid(d, "%s.Type: a second %s namespace", name, type);
	if (path && *path && path[0] != '/')
		return invalid(d, "%s.Path: \"%s\" is not an absolute path", name, path);
	l->ns[kind].wanted = true;
	l->ns[kind].path = path && *path ? path : NULL;
	return 0;
}

static int decode_device(struct pbdec *d, struct pb_reader *r, struct oci_linux *l)
{
	char name[FIELD_MAX];
	uint32_t field, wt;
	char *type = NULL;
	struct oci_device dev = {0};

	snprintf(name, sizeof(name), "OCI.Linux.Devices[%zu]", l->ndevices);
	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc;
		switch (field) {
		case 1:
			rc = pbd_string(d, r, wt, name, &dev.path);
			break;
		case 2:
			rc = pbd_string(d, r, wt, name, &type);
			break;
		case 3:
			rc = pbd_int64(d, r, wt, name, &dev.major);
			break;
		case 4:
			rc = pbd_int64(d, r, wt, name, &dev.minor);
			break;
		case 5:
			rc = pbd_uint32(d, r, wt, name, &dev.file_mode);
			break;
		case 6:
			rc = pbd_uint32(d, r, wt, name, &dev.uid);
			break;
		case 7:
			rc = pbd_uint32(d, r, wt, name, &dev.gid);
			break;
		default:
			rc = pbd_skip(d, r, wt, name);
		}
		if (rc < 0)
			return -1;
	}
	if (!dev.path || dev.path[0] != '/')
		return invalid(d, "%s.Path: \"%s\" is not an absolute path", name, dev.path ? dev.path : "");
	if (!type || strlen(type) != 1 || !strchr("cbup", type[0]))
		return invalid(d, "%s.Type: \"%s\" is not one of c, b, u, p", name, type ? type : "");
	dev.type = type[0];
	if (dev.major < 0 || dev.major > 0xfff || dev.minor < 0 || dev.minor > 0xfffff)
		return invalid(d, "%s: device number out of range%s", name, "");
	if (arena_reserve(d->arena, (void **)&l->devices, &l->devices_cap, l->ndevices + 1, sizeof(dev)) < 0)
		return pbd_nomem(d, name);
	l->devices[l->ndevices++] = dev;
	return 0;
}

/* Memory { Limit=1 }, CPU { Shares=1, Quota=2, Period=3 }, Pids { Limit=1 } */
static int decode_resource_fields(struct pbdec *d, struct pb_reader *r, const char *name, int64_t *f1,
				  int64_t *f2, int64_t *f3)
{
	uint32_t field, wt;

	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int64_t *dst = field == 1 ? f1 : field == 2 ? f2 : field == 3 ? f3 : NULL;
		if ((dst ? pbd_int64(d, r, wt, name, dst) : pbd_skip(d, r, wt, name)) < 0)
			return -1;
	}
	return 0;
}

static int decode_resources(struct pbdec *d, struct pb_reader *r, struct oci_linux *l)
{
	const char *name = "OCI.Linux.Resources";
	struct oci_resources *res = &l->resources;
	uint32_t field, wt;
	struct pb_reader sub;
	int64_t ignored = 0, shares = 0, period = 0;

	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc;
		switch (field) {
		case 1: /* device cgroup rules: cgroup v2 would need BPF; the VM is the boundary */
			l->has_devices_cgroup_rules = true;
			rc = pbd_skip(d, r, wt, name);
			break;
		case 2:
			rc = sub_reader(d, r, wt, name, &sub) < 0 ? -1 : decode_resource_fields(
				d, &sub, "OCI.Linux.Resources.Memory", &res->memory_limit, &ignored, &ignored);
			break;
		case 3:
			rc = sub_reader(d, r, wt, name, &sub) < 0 ? -1 : decode_resource_fields(
				d, &sub, "OCI.Linux.Resources.CPU", &shares, &res->cpu_quota, &period);
			res->cpu_shares = (uint64_t)shares;
			res->cpu_period = (uint64_t)period;
			break;
		case 4:
			rc = sub_reader(d, r, wt, name, &sub) < 0 ? -1 : decode_resource_fields(
				d, &sub, "OCI.Linux.Resources.Pids", &res->pids_limit, &ignored, &ignored);
			break;
		default:
			rc = pbd_skip(d, r, wt, name);
		}
		if (rc < 0)
			return -1;
	}
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

static int decode_sysctl(struct pbdec *d, struct pb_reader *r, struct oci_linux *l)
{
	const char *name = "OCI.Linux.Sysctl";
	uint32_t field, wt;
	struct oci_sysctl kv = {0};

	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc = field == 1 ? pbd_string(d, r, wt, name, &kv.key)
				    : field == 2 ? pbd_string(d, r, wt, name, &kv.value) : pbd_skip(d, r, wt, name);
		if (rc < 0)
			return -1;
	}
	if (!kv.key || !*kv.key || strchr(kv.key, '/') || strstr(kv.key, "..") || kv.key[0] == '.')
		return invalid(d, "%s: \"%s\" is not a sysctl name (like net.ipv4.ip_forward)", name,
			       kv.key ? kv.key : "");
	if (!kv.value)
		kv.value = "";
	if (arena_reserve(d->arena, (void **)&l->sysctl, &l->sysctl_cap, l->nsysctl + 1, sizeof(kv)) < 0)
		return pbd_nomem(d, name);
	l->sysctl[l->nsysctl++] = kv;
	return 0;
}

static int check_paths(struct pbdec *d, const char *name, const struct strv *v)
{
	for (size_t i = 0; i < v->n; i++) {
		if (v->v[i][0] != '/') {
			char field[FIELD_MAX];
			snprintf(field, sizeof(field), "%s[%zu]", name, i);
			return invalid(d, "%s: \"%s\" is not an absolute path", field, v->v[i]);
		}
	}
	return 0;
}

static int decode_linux(struct pbdec *d, struct pb_reader *r, struct oci_linux *l)
{
	const char *name = "OCI.Linux";
	uint32_t field, wt;
	struct pb_reader sub;
	size_t nns = 0;
	char *propagation = NULL;

	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc;
		switch (field) {
		case 1:
		case 2:
			l->has_id_mappings = true;
			rc = pbd_skip(d, r, wt, name);
			break;
		case 3:
			rc = sub_reader(d, r, wt, name, &sub) < 0 ? -1 : decode_sysctl(d, &sub, l);
			break;
		case 4:
			rc = sub_reader(d, r, wt, name, &sub) < 0 ? -1 : decode_resources(d, &sub, l);
			break;
		case 5:
			rc = pbd_string(d, r, wt, "OCI.Linux.CgroupsPath", &l->cgroups_path);
			break;
		case 6:
			rc = sub_reader(d, r, wt, name, &sub) < 0 ? -1 : decode_namespace(d, &sub, nns++, l);
			break;
		case 7:
			rc = sub_reader(d, r, wt, name, &sub) < 0 ? -1 : decode_device(d, &sub, l);
			break;
		case 8:
			l->has_seccomp = true;
			rc = pbd_skip(d, r, wt, name);
			break;
		case 9:
			rc = pbd_string(d, r, wt, "OCI.Linux.RootfsPropagation", &propagation);
			break;
		case 10:
			rc = pbd_strv(d, r, wt, "OCI.Linux.MaskedPaths", &l->masked_paths);
			break;
		case 11:
			rc = pbd_strv(d, r, wt, "OCI.Linux.ReadonlyPaths", &l->readonly_paths);
			break;
		default: /* MountLabel, IntelRdt */
			rc = pbd_skip(d, r, wt, name);
		}
		if (rc < 0)
			return -1;
	}
	if (l->has_id_mappings)
		return invalid(d, "%s.UIDMappings/GIDMappings: user namespaces are not supported by this agent%s", name,
			       "");
	if (l->has_seccomp)
		return invalid(d, "%s.Seccomp: seccomp is not supported by this agent (GetGuestDetails reports "
			       "supports_seccomp=false)%s", name, "");
	if (propagation && *propagation) {
		l->rootfs_propagation = mountopt_propagation(propagation);
		if (!l->rootfs_propagation)
			return invalid(d, "%s.RootfsPropagation: unknown value \"%s\"", name, propagation);
	}
	if (l->cgroups_path && (strstr(l->cgroups_path, "..") || strlen(l->cgroups_path) > 512))
		return invalid(d, "%s.CgroupsPath: \"%s\" must not contain \"..\" (and at most 512 bytes)", name,
			       l->cgroups_path);
	if (check_paths(d, "OCI.Linux.MaskedPaths", &l->masked_paths) < 0 ||
	    check_paths(d, "OCI.Linux.ReadonlyPaths", &l->readonly_paths) < 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------ spec */

static int decode_root(struct pbdec *d, struct pb_reader *r, struct oci_spec *s)
{
	uint32_t field, wt;

	while (!pb_at_end(r)) {
		if (pbd_key(d, r, "OCI.Root", &field, &wt) < 0)
			return -1;
		int rc = field == 1 ? pbd_string(d, r, wt, "OCI.Root.Path", &s->root_path)
		       : field == 2 ? pbd_bool(d, r, wt, "OCI.Root.Readonly", &s->root_readonly)
				    : pbd_skip(d, r, wt, "OCI.Root");
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int decode_mount(struct pbdec *d, struct pb_reader *r, struct oci_spec *s)
{
	char name[FIELD_MAX];
	uint32_t field, wt;
	struct oci_mount m = {0};

	snprintf(name, sizeof(name), "OCI.Mounts[%zu]", s->nmounts);
	while (!pb_at_end(r)) {
		if (pbd_key(d, r, name, &field, &wt) < 0)
			return -1;
		int rc;
		switch (field) {
		case 1:
			rc = pbd_string(d, r, wt, name, &m.destination);
			break;
		case 2:
			rc = pbd_string(d, r, wt, name, &m.source);
			break;
		case 3:
			rc = pbd_string(d, r, wt, name, &m.type);
			break;
		case 4:
			rc = pbd_strv(d, r, wt, name, &m.options);
			break;
		default:
			rc = pbd_skip(d, r, wt, name);
		}
		if (rc < 0)
			return -1;
	}
	if (!m.destination || m.destination[0] != '/')
		return invalid(d, "%s.destination: \"%s\" is not an absolute path", name,
			       m.destination ? m.destination : "");
	if (!m.source)
		m.source = "";
	if (!m.type)
		m.type = "";
	if (mountopt_parse(d->arena, &m.options, name, &m.opts, d->st) < 0)
		return -1;
	if (strcmp(m.type, "bind") == 0)
		m.opts.bind = true;
	if (!m.opts.bind && !*m.type)
		return invalid(d, "%s.type: empty (and the options do not ask for a bind mount)%s", name, "");
	if (m.opts.bind && m.source[0] != '/')
		return invalid(d, "%s.source: \"%s\" is not an absolute path (a bind mount's source is a guest path)",
			       name, m.source);
	if (arena_reserve(d->arena, (void **)&s->mounts, &s->mounts_cap, s->nmounts + 1, sizeof(m)) < 0)
		return pbd_nomem(d, name);
	s->mounts[s->nmounts++] = m;
	return 0;
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
	struct pb_reader r, sub;
	uint32_t field, wt;

	memset(s, 0, sizeof(*s));
	pb_reader_init(&r, data, len);
	while (!pb_at_end(&r)) {
		if (pbd_key(d, &r, "OCI", &field, &wt) < 0)
			return -1;
		int rc;
		const uint8_t *p;
		size_t n;
		switch (field) {
		case 1:
			rc = pbd_string(d, &r, wt, "OCI.Version", &s->version);
			break;
		case 2:
			s->has_process = true;
			rc = pbd_bytes(d, &r, wt, "OCI.Process", &p, &n) < 0
				     ? -1 : oci_decode_process(d, "OCI.Process", p, n, &s->process);
			break;
		case 3:
			rc = sub_reader(d, &r, wt, "OCI.Root", &sub) < 0 ? -1 : decode_root(d, &sub, s);
			break;
		case 4:
			rc = pbd_string(d, &r, wt, "OCI.Hostname", &s->hostname);
			break;
		case 5:
			rc = sub_reader(d, &r, wt, "OCI.Mounts", &sub) < 0 ? -1 : decode_mount(d, &sub, s);
			break;
		case 8:
			s->has_linux = true;
			rc = sub_reader(d, &r, wt, "OCI.Linux", &sub) < 0 ? -1 : decode_linux(d, &sub, &s->lin);
			break;
		default: /* Hooks (host hooks; the runtime strips them), Annotations, Solaris, Windows */
			rc = pbd_skip(d, &r, wt, "OCI");
		}
		if (rc < 0)
			return -1;
	}
	return validate_spec(d, s);
}
