#include "storage.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "fsutil.h"
#include "ttrpc.h"
#include "util.h"

#define SUPPORTED "virtio-fs, 9p, local, ephemeral, watchable-bind"

enum driver_kind { D_VIRTIOFS, D_9P, D_LOCAL, D_EPHEMERAL, D_BIND, D_UNKNOWN };

static enum driver_kind driver_kind(const char *driver)
{
	if (strcmp(driver, "virtio-fs") == 0)
		return D_VIRTIOFS;
	if (strcmp(driver, "9p") == 0)
		return D_9P;
	if (strcmp(driver, "local") == 0)
		return D_LOCAL;
	if (strcmp(driver, "ephemeral") == 0)
		return D_EPHEMERAL;
	if (strcmp(driver, "watchable-bind") == 0 || strcmp(driver, "bind") == 0)
		return D_BIND;
	return D_UNKNOWN;
}

static const struct pbd_field STORAGE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct storage, driver, "driver"),
	PBD_FIELD(3, PBD_STRING, struct storage, source, "source"),
	PBD_FIELD(4, PBD_STRING, struct storage, fstype, "fstype"),
	PBD_FIELD(5, PBD_STRV, struct storage, options, "options"),
	PBD_FIELD(6, PBD_STRING, struct storage, mount_point, "mount_point"),
};

int storage_decode(struct pbdec *d, const char *field, const uint8_t *data, size_t len, struct storage_set *set)
{
	struct storage s;

	/* driver_options, fs_group, shared: not used */
	memset(&s, 0, sizeof(s));
	if (pbd_message(d, data, len, field, STORAGE_FIELDS, PBD_COUNT(STORAGE_FIELDS), &s, NULL, NULL) < 0)
		return -1;
	if (!s.driver)
		s.driver = "";
	if (!s.source)
		s.source = "";
	enum driver_kind kind = driver_kind(s.driver);
	if (kind == D_UNKNOWN)
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s.driver: \"%s\" is not supported by this agent (%s)", field,
			    s.driver, SUPPORTED);
	if (!s.mount_point || s.mount_point[0] != '/')
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s.mount_point: \"%s\" is not an absolute path", field,
			    s.mount_point ? s.mount_point : "");
	if ((kind == D_VIRTIOFS || kind == D_9P) && !*s.source)
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s.source: empty; a %s storage needs the share's tag",
			    field, s.driver);
	if (kind == D_BIND && s.source[0] != '/')
		return fail(d->st, CODE_INVALID_ARGUMENT, "%s.source: \"%s\" is not an absolute path", field, s.source);
	if (!s.fstype || !*s.fstype)
		s.fstype = kind == D_VIRTIOFS ? "virtiofs" : kind == D_9P ? "9p" : kind == D_EPHEMERAL ? "tmpfs" : "";
	if (mountopt_parse(d->arena, &s.options, field, &s.opts, d->st) < 0)
		return -1;
	if (arena_reserve(d->arena, (void **)&set->items, &set->cap, set->n + 1, sizeof(s)) < 0)
		return pbd_nomem(d, field);
	set->items[set->n++] = s;
	return 0;
}

static int mount_one(struct storage *s, struct status *st, const char *field)
{
	enum driver_kind kind = driver_kind(s->driver);
	struct stat sb;
	int rc;

	if (kind == D_BIND && stat(s->source, &sb) == 0 && !S_ISDIR(sb.st_mode))
		rc = ensure_file(s->mount_point);
	else
		rc = mkdir_p(s->mount_point, 0755);
	if (rc < 0)
		return fail(st, CODE_FAILED_PRECONDITION, "%s: creating the mount point %s: %s", field, s->mount_point,
			    strerror(errno));
	if (kind == D_LOCAL)
		return 0;
	if (kind == D_BIND) {
		if (mount(s->source, s->mount_point, NULL, MS_BIND | MS_REC, NULL) < 0)
			return fail(st, CODE_FAILED_PRECONDITION, "%s: bind mount %s on %s: %s", field, s->source,
				    s->mount_point, strerror(errno));
		s->mounted = true;
		unsigned long extra = s->opts.flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
		if (extra && mount(s->source, s->mount_point, NULL, extra | MS_BIND | MS_REMOUNT, NULL) < 0)
			return fail(st, CODE_FAILED_PRECONDITION, "%s: remounting %s with its options: %s", field,
				    s->mount_point, strerror(errno));
	} else {
		const char *source = kind == D_EPHEMERAL && !*s->source ? "tmpfs" : s->source;
		if (mount(source, s->mount_point, s->fstype, s->opts.flags, s->opts.data) < 0)
			return fail(st, CODE_FAILED_PRECONDITION, "%s: mount %s \"%s\" on %s (options \"%s\"): %s", field,
				    s->fstype, source, s->mount_point, s->opts.data, strerror(errno));
		s->mounted = true;
	}
	for (size_t i = 0; i < s->opts.npropagation; i++)
		if (mount(NULL, s->mount_point, NULL, s->opts.propagation[i], NULL) < 0)
			return fail(st, CODE_FAILED_PRECONDITION, "%s: setting the propagation of %s: %s", field,
				    s->mount_point, strerror(errno));
	return 0;
}

int storage_mount_all(struct storage_set *set, const char *prefix, struct status *st)
{
	char field[64];

	for (size_t i = 0; i < set->n; i++) {
		snprintf(field, sizeof(field), "%s[%zu]", prefix, i);
		if (mount_one(&set->items[i], st, field) < 0) {
			storage_unmount_all(set);
			return -1;
		}
	}
	return 0;
}

void storage_unmount_all(struct storage_set *set)
{
	for (size_t i = set->n; i-- > 0;) {
		struct storage *s = &set->items[i];
		if (!s->mounted)
			continue;
		if (umount2(s->mount_point, MNT_DETACH) < 0)
			log_msg("warning: unmounting %s: %s", s->mount_point, strerror(errno));
		s->mounted = false;
	}
}
