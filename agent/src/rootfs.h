/* The container's filesystem view, built in the new mount namespace the way runc builds it (runs in
 * the container's setup process). */
#ifndef OSB_ROOTFS_H
#define OSB_ROOTFS_H

#include <stdbool.h>

#include "oci.h"
#include "status.h"

/* Mounts below the root (the spec's mounts in order, /dev with its nodes and links unless /dev is a
 * bind mount), pivots into it (MS_MOVE + chroot when "/" is an initramfs, or always with no_pivot),
 * then makes /dev and the root read-only as asked and applies the root's propagation. */
int rootfs_prepare(const struct oci_spec *s, bool no_pivot, struct status *st);
/* After the pivot: bind each existing path onto itself read-only. */
int rootfs_readonly_paths(const struct strv *paths, struct status *st);
/* After the pivot: /dev/null over files, an empty read-only tmpfs over directories; missing paths
 * are skipped. */
int rootfs_mask_paths(const struct strv *paths, struct status *st);

#endif
