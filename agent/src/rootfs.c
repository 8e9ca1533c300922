#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fsutil.h"
#include "ttrpc.h"

/* The device nodes runc creates in a container's /dev (all 0666, root-owned). */
static const struct {
	const char *name;
	unsigned major, minor;
} DEFAULT_DEVICES[] = {
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"tty", 5, 0}, {"random", 1, 8}, {"urandom", 1, 9},
};

static int sys_error(struct status *st, const char *what, const char *path)
{
	return fail(st, CODE_INVALID_ARGUMENT, "%s %s: %s", what, path, strerror(errno));
}

static bool dev_is_bind_mounted(const struct oci_spec *s)
{
	for (size_t i = 0; i < s->nmounts; i++)
		if (strcmp(s->mounts[i].destination, "/dev") == 0 && s->mounts[i].opts.bind)
			return true;
	return false;
}

static int mount_bind(const struct oci_mount *m, const char *dest, const char *field, struct status *st)
{
	struct stat sb;
	unsigned long flags = m->opts.flags;

	if (stat(m->source, &sb) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "%s.source: %s: %s", field, m->source, strerror(errno));
	if ((S_ISDIR(sb.st_mode) ? mkdir_p(dest, 0755) : ensure_file(dest)) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "%s.destination: creating %s: %s", field, dest, strerror(errno));
	if (mount(m->source, dest, NULL, MS_BIND | (flags & MS_REC), NULL) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "%s: bind mount %s on %s: %s", field, m->source, dest,
			    strerror(errno));
	if (flags & ~(MS_BIND | MS_REC | MS_REMOUNT)) {
		if (mount(m->source, dest, NULL, flags | MS_BIND | MS_REMOUNT, NULL) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "%s: remounting %s with its options: %s", field, dest,
				    strerror(errno));
	}
	return 0;
}

static int mount_one(const char *root, const struct oci_mount *m, size_t index, struct status *st)
{
	char dest[PATH_MAX], field[48];
	unsigned long flags = m->opts.flags;
	const char *type = m->type;

	snprintf(field, sizeof(field), "OCI.Mounts[%zu]", index);
	if (secure_join(root, m->destination, dest, sizeof(dest)) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "%s.destination: %s: %s", field, m->destination, strerror(errno));
	if (m->opts.bind) {
		if (mount_bind(m, dest, field, st) < 0)
			return -1;
	} else {
		if (strcmp(type, "cgroup") == 0) /* this agent speaks cgroup v2 only */
			type = "cgroup2";
		if (strcmp(type, "tmpfs") == 0 && strcmp(m->destination, "/dev") == 0)
			flags &= ~MS_RDONLY; /* the devices go in first; rootfs_finish makes it read-only */
		if (mkdir_p(dest, 0755) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "%s.destination: creating %s: %s", field, dest,
				    strerror(errno));
		if (mount(*m->source ? m->source : type, dest, type, flags & ~MS_REMOUNT, m->opts.data) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "%s: mount %s on %s (options \"%s\"): %s", field, type,
				    m->destination, m->opts.data, strerror(errno));
	}
	for (size_t i = 0; i < m->opts.npropagation; i++)
		if (mount(NULL, dest, NULL, m->opts.propagation[i], NULL) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "%s: setting the propagation of %s: %s", field,
				    m->destination, strerror(errno));
	return 0;
}

static int make_node(const char *root, const char *path, mode_t type, mode_t perm, dev_t dev, uid_t uid,
		     gid_t gid, struct status *st)
{
	char dest[PATH_MAX];

	if (secure_join(root, path, dest, sizeof(dest)) < 0)
		return sys_error(st, "device", path);
	char *slash = strrchr(dest, '/');
	if (slash && slash != dest) {
		*slash = '\0';
		int rc = mkdir_p(dest, 0755);
		*slash = '/';
		if (rc < 0)
			return sys_error(st, "creating the directory of device", path);
	}
	unlink(dest);
	if (mknod(dest, type | perm, dev) < 0)
		return sys_error(st, "mknod", path);
	if (chown(dest, uid, gid) < 0)
		return sys_error(st, "chown", path);
	return 0;
}

static int create_devices(const char *root, const struct oci_spec *s, struct status *st)
{
	char path[PATH_MAX];
	mode_t old = umask(0);
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < sizeof(DEFAULT_DEVICES) / sizeof(DEFAULT_DEVICES[0]); i++) {
		snprintf(path, sizeof(path), "/dev/%s", DEFAULT_DEVICES[i].name);
		rc = make_node(root, path, S_IFCHR, 0666, makedev(DEFAULT_DEVICES[i].major, DEFAULT_DEVICES[i].minor),
			       0, 0, st);
	}
	for (size_t i = 0; rc == 0 && i < s->lin.ndevices; i++) {
		const struct oci_device *d = &s->lin.devices[i];
		mode_t type = d->type == 'b' ? S_IFBLK : d->type == 'p' ? S_IFIFO : S_IFCHR;
		mode_t perm = d->file_mode ? (d->file_mode & 07777) : 0666;
		rc = make_node(root, d->path, type, perm, makedev((unsigned)d->major, (unsigned)d->minor), d->uid,
			       d->gid, st);
		if (rc < 0)
			status_prefix(st, "OCI.Linux.Devices");
	}
	umask(old);
	return rc;
}

/* /dev/ptmx -> pts/ptmx and the fd, stdin, stdout, stderr (and core) links, as runc makes them. */
static int create_dev_links(const char *root, struct status *st)
{
	static const char *const LINKS[][2] = {
		{"/proc/self/fd", "/dev/fd"},         {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"},   {"/proc/self/fd/2", "/dev/stderr"},
		{"pts/ptmx", "/dev/ptmx"},            {"/proc/kcore", "/dev/core"},
	};
	char dest[PATH_MAX];

	for (size_t i = 0; i < sizeof(LINKS) / sizeof(LINKS[0]); i++) {
		if (strcmp(LINKS[i][1], "/dev/core") == 0 && access("/proc/kcore", F_OK) < 0)
			continue;
		if (secure_join(root, LINKS[i][1], dest, sizeof(dest)) < 0)
			return sys_error(st, "link", LINKS[i][1]);
		if (strcmp(LINKS[i][1], "/dev/ptmx") == 0)
			unlink(dest);
		if (symlink(LINKS[i][0], dest) < 0 && errno != EEXIST)
			return sys_error(st, "symlink", LINKS[i][1]);
	}
	return 0;
}

/* When "/" is an initramfs, pivot_root(2) fails: move the new root over "/" and chroot (Kata's
 * no_pivot_root). The old root's mounts stay, unreachable from the container. */
static int move_root(const char *root, struct status *st)
{
	if (chdir(root) < 0)
		return sys_error(st, "chdir", root);
	if (mount(root, "/", NULL, MS_MOVE, NULL) < 0)
		return sys_error(st, "moving the root", root);
	if (chroot(".") < 0)
		return sys_error(st, "chroot", root);
	if (chdir("/") < 0)
		return sys_error(st, "chdir", "/");
	return 0;
}

static int pivot(const char *root, bool no_pivot, struct status *st)
{
	if (no_pivot)
		return move_root(root, st);
	int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	int newroot = open(root, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (oldroot < 0 || newroot < 0) {
		sys_error(st, "open", oldroot < 0 ? "/" : root);
		goto out;
	}
	if (fchdir(newroot) < 0) {
		sys_error(st, "chdir", root);
		goto out;
	}
	if (syscall(SYS_pivot_root, ".", ".") < 0) {
		if (errno != EINVAL) {
			sys_error(st, "pivot_root", root);
			goto out;
		}
		close(oldroot);
		close(newroot);
		return move_root(root, st);
	}
	/* the old root is now stacked under the new one: detach it (slave first, so nothing propagates) */
	if (fchdir(oldroot) < 0 || mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0 ||
	    umount2(".", MNT_DETACH) < 0 || chdir("/") < 0) {
		sys_error(st, "detaching the old root of", root);
		goto out;
	}
	close(oldroot);
	close(newroot);
	return 0;
out:
	if (oldroot >= 0)
		close(oldroot);
	if (newroot >= 0)
		close(newroot);
	return -1;
}

/* Remounts path read-only, keeping nosuid/nodev/noexec. */
static int remount_ro(const char *path, unsigned long extra)
{
	struct statfs sf;
	unsigned long keep = 0;

	if (statfs(path, &sf) == 0)
		keep = (unsigned long)sf.f_flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC);
	return mount(path, path, NULL, keep | extra | MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
}

int rootfs_prepare(const struct oci_spec *s, bool no_pivot, struct status *st)
{
	const char *root = s->root_path;

	if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0)
		return sys_error(st, "making the mounts of", "/ slaves");
	if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Root.Path: bind mount %s: %s", root, strerror(errno));
	for (size_t i = 0; i < s->nmounts; i++)
		if (mount_one(root, &s->mounts[i], i, st) < 0)
			return -1;
	if (!dev_is_bind_mounted(s) && (create_devices(root, s, st) < 0 || create_dev_links(root, st) < 0))
		return -1;
	if (pivot(root, no_pivot, st) < 0)
		return -1;
	/* as runc's finalizeRootfs: a read-only /dev tmpfs, a read-only root, then the root's propagation */
	for (size_t i = 0; i < s->nmounts; i++) {
		const struct oci_mount *m = &s->mounts[i];
		if (strcmp(m->destination, "/dev") == 0 && !m->opts.bind && (m->opts.flags & MS_RDONLY) &&
		    remount_ro("/dev", 0) < 0)
			return sys_error(st, "remounting read-only", "/dev");
	}
	if (s->root_readonly && remount_ro("/", 0) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Root.Readonly: remounting / read-only: %s", strerror(errno));
	if (s->lin.rootfs_propagation && mount(NULL, "/", NULL, s->lin.rootfs_propagation, NULL) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.RootfsPropagation: %s", strerror(errno));
	return 0;
}

int rootfs_readonly_paths(const struct strv *paths, struct status *st)
{
	for (size_t i = 0; i < paths->n; i++) {
		const char *p = paths->v[i];
		if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
			if (errno == ENOENT)
				continue;
			return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.ReadonlyPaths[%zu]: bind mount %s: %s", i, p,
				    strerror(errno));
		}
		if (remount_ro(p, 0) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.ReadonlyPaths[%zu]: remounting %s read-only: %s",
				    i, p, strerror(errno));
	}
	return 0;
}

int rootfs_mask_paths(const struct strv *paths, struct status *st)
{
	for (size_t i = 0; i < paths->n; i++) {
		const char *p = paths->v[i];
		if (mount("/dev/null", p, NULL, MS_BIND, NULL) == 0 || errno == ENOENT)
			continue;
		/* a directory: hide it under an empty read-only tmpfs */
		if (errno == ENOTDIR && mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) == 0)
			continue;
		return fail(st, CODE_INVALID_ARGUMENT, "OCI.Linux.MaskedPaths[%zu]: masking %s: %s", i, p,
			    strerror(errno));
	}
	return 0;
}
