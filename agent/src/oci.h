/* The OCI runtime spec as Kata sends it (oci.proto): decoding into C structs and validation.
 * Nothing here touches the system; every error names the field ("OCI.Mounts[2].destination"). */
#ifndef OSB_OCI_H
#define OSB_OCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caps.h"
#include "mountopt.h"
#include "pbdec.h"

enum ns_kind { NS_PID, NS_NET, NS_MNT, NS_IPC, NS_UTS, NS_CGROUP, NS_COUNT };

struct oci_namespace {
	bool wanted;
	char *path; /* join this one ("" or NULL: a new namespace) */
};

struct oci_rlimit {
	int resource;
	const char *name;
	uint64_t soft, hard;
};

struct oci_user {
	uint32_t uid, gid;
	struct u32v additional_gids;
	char *username;
};

struct oci_process {
	bool terminal;
	struct oci_user user;
	struct strv args, env;
	char *cwd;
	bool has_caps;
	struct cap_sets caps;
	struct oci_rlimit *rlimits;
	size_t nrlimits, rlimits_cap;
	bool no_new_privileges;
	int64_t oom_score_adj;
};

struct oci_mount {
	char *destination, *source, *type;
	struct strv options;
	struct mount_opts opts; /* parsed options */
};

struct oci_device {
	char *path;
	char type; /* 'c', 'b', 'u', 'p' */
	int64_t major, minor;
	uint32_t file_mode; /* 0: 0666 */
	uint32_t uid, gid;
};

struct oci_resources {
	int64_t memory_limit; /* 0: unset, -1: unlimited */
	int64_t cpu_quota;    /* 0: unset, -1: unlimited */
	uint64_t cpu_period;
	uint64_t cpu_shares;
	int64_t pids_limit;   /* 0: unset, -1: unlimited */
};

struct oci_sysctl {
	char *key, *value;
};

struct oci_linux {
	struct oci_namespace ns[NS_COUNT];
	struct oci_resources resources;
	char *cgroups_path;
	struct oci_device *devices;
	size_t ndevices, devices_cap;
	unsigned long rootfs_propagation; /* MS_* flags; 0: unset */
	struct strv masked_paths, readonly_paths;
	struct oci_sysctl *sysctl;
	size_t nsysctl, sysctl_cap;
	bool has_seccomp, has_id_mappings, user_namespace, has_devices_cgroup_rules;
};

struct oci_spec {
	char *version;
	bool has_process;
	struct oci_process process;
	char *root_path;
	bool root_readonly;
	char *hostname;
	struct oci_mount *mounts;
	size_t nmounts, mounts_cap;
	bool has_linux;
	struct oci_linux lin;
};

/* Spec: decodes and validates (field names start with "OCI."). */
int oci_decode_spec(struct pbdec *d, const uint8_t *data, size_t len, struct oci_spec *spec);
/* Process on its own (ExecProcessRequest.process): field names start with prefix. */
int oci_decode_process(struct pbdec *d, const char *prefix, const uint8_t *data, size_t len,
		       struct oci_process *proc);

/* The value of NAME in a "NAME=value" list, or NULL. */
const char *oci_getenv(const struct strv *env, const char *name);

#endif
