#include "mountopt.h"

#include <string.h>
#include <sys/mount.h>

#include "ttrpc.h"

struct flag_opt {
	const char *name;
	bool clear; /* the option removes the flag */
	unsigned long flag;
};

/* The option names runc (and mount(8)) accept as mount flags. */
static const struct flag_opt FLAG_OPTS[] = {
	{"async", true, MS_SYNCHRONOUS},   {"atime", true, MS_NOATIME},
	{"bind", false, MS_BIND},          {"defaults", false, 0},
	{"dev", true, MS_NODEV},           {"diratime", true, MS_NODIRATIME},
	{"dirsync", false, MS_DIRSYNC},    {"exec", true, MS_NOEXEC},
	{"iversion", false, MS_I_VERSION}, {"lazytime", false, MS_LAZYTIME},
	{"loud", true, MS_SILENT},         {"mand", false, MS_MANDLOCK},
	{"noatime", false, MS_NOATIME},    {"nodev", false, MS_NODEV},
	{"nodiratime", false, MS_NODIRATIME}, {"noexec", false, MS_NOEXEC},
	{"noiversion", true, MS_I_VERSION}, {"nolazytime", true, MS_LAZYTIME},
	{"nomand", true, MS_MANDLOCK},     {"norelatime", true, MS_RELATIME},
	{"nostrictatime", true, MS_STRICTATIME}, {"nosuid", false, MS_NOSUID},
	{"rbind", false, MS_BIND | MS_REC}, {"relatime", false, MS_RELATIME},
	{"remount", false, MS_REMOUNT},    {"ro", false, MS_RDONLY},
	{"rw", true, MS_RDONLY},           {"silent", false, MS_SILENT},
	{"strictatime", false, MS_STRICTATIME}, {"suid", true, MS_NOSUID},
	{"sync", false, MS_SYNCHRONOUS},
};

unsigned long mountopt_propagation(const char *name)
{
	static const struct flag_opt PROPAGATION[] = {
		{"private", false, MS_PRIVATE},    {"rprivate", false, MS_PRIVATE | MS_REC},
		{"slave", false, MS_SLAVE},        {"rslave", false, MS_SLAVE | MS_REC},
		{"shared", false, MS_SHARED},      {"rshared", false, MS_SHARED | MS_REC},
		{"unbindable", false, MS_UNBINDABLE}, {"runbindable", false, MS_UNBINDABLE | MS_REC},
	};
	for (size_t i = 0; i < sizeof(PROPAGATION) / sizeof(PROPAGATION[0]); i++)
		if (strcmp(name, PROPAGATION[i].name) == 0)
			return PROPAGATION[i].flag;
	return 0;
}

int mountopt_parse(struct arena *a, const struct strv *options, const char *field, struct mount_opts *out,
		   struct status *st)
{
	size_t data_len = 0, used = 0;

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < options->n; i++)
		data_len += strlen(options->v[i]) + 1;
	out->data = arena_alloc(a, data_len + 1);
	if (!out->data)
		return fail(st, CODE_RESOURCE_EXHAUSTED, "%s: out of memory", field);
	for (size_t i = 0; i < options->n; i++) {
		const char *o = options->v[i];
		unsigned long prop = mountopt_propagation(o);
		bool known = false;

		if (prop) {
			if (out->npropagation == MOUNTOPT_MAX_PROPAGATION)
				return fail(st, CODE_INVALID_ARGUMENT, "%s: more than %d propagation options", field,
					    MOUNTOPT_MAX_PROPAGATION);
			out->propagation[out->npropagation++] = prop;
			continue;
		}
		for (size_t k = 0; k < sizeof(FLAG_OPTS) / sizeof(FLAG_OPTS[0]); k++) {
			if (strcmp(o, FLAG_OPTS[k].name) == 0) {
				if (FLAG_OPTS[k].clear)
					out->flags &= ~FLAG_OPTS[k].flag;
				else
					out->flags |= FLAG_OPTS[k].flag;
				known = true;
				break;
			}
		}
		if (known || !*o)
			continue;
		size_t n = strlen(o);
		if (used)
			out->data[used++] = ',';
		memcpy(out->data + used, o, n);
		used += n;
		out->data[used] = '\0';
	}
	out->bind = (out->flags & MS_BIND) != 0;
	return 0;
}
