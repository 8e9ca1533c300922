/* Storages (agent.proto Storage): the filesystems the runtime asks the agent to mount in the guest,
 * e.g. the virtio-fs or 9p share that carries the container roots. */
#ifndef OSB_STORAGE_H
#define OSB_STORAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "mountopt.h"
#include "pbdec.h"

struct storage {
	char *driver, *source, *fstype, *mount_point;
	struct strv options;
	struct mount_opts opts;
	bool mounted;
};

struct storage_set {
	struct storage *items;
	size_t n, cap;
};

/* Decodes and validates one Storage message (field: "storages[2]"), appends it to set. */
int storage_decode(struct pbdec *d, const char *field, const uint8_t *data, size_t len, struct storage_set *set);
/* Mounts every storage in order (creating the mount points); on failure unmounts what it mounted
 * and fails with FAILED_PRECONDITION naming the storage (prefix: "storages"). */
int storage_mount_all(struct storage_set *set, const char *prefix, struct status *st);
/* Unmounts (lazily, in reverse order) what storage_mount_all mounted. */
void storage_unmount_all(struct storage_set *set);

#endif
