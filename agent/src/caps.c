#include "caps.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ttrpc.h"
#include "util.h"

static const char *const CAP_NAMES[] = {
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
	"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
	"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
};
#define CAP_COUNT ((int)(sizeof(CAP_NAMES) / sizeof(CAP_NAMES[0])))

/* <linux/capability.h>, which musl does not ship */
#define OSB_CAP_VERSION_3 0x20080522u
struct cap_header {
	uint32_t version;
	int pid;
};
struct cap_data {
	uint32_t effective, permitted, inheritable;
};

int cap_from_name(const char *name)
{
	for (int i = 0; i < CAP_COUNT; i++)
		if (strcmp(name, CAP_NAMES[i]) == 0)
			return i;
	return -1;
}

int cap_last_cap(void)
{
	char buf[16];

	if (read_small_file("/proc/sys/kernel/cap_last_cap", buf, sizeof(buf)) > 0) {
		int v = atoi(buf);
		if (v > 0 && v < 64)
			return v;
	}
	return CAP_COUNT - 1;
}

int caps_apply_bounding(const struct cap_sets *c, struct status *st)
{
	int last = cap_last_cap();

	for (int cap = 0; cap <= last; cap++) {
		if (c->set[CAPS_BOUNDING] & (1ull << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return fail(st, CODE_INTERNAL, "Capabilities.Bounding: dropping capability %d: %s", cap,
				    strerror(errno));
	}
	return 0;
}

int caps_apply(const struct cap_sets *c, struct status *st)
{
	struct cap_header hdr = {OSB_CAP_VERSION_3, 0};
	struct cap_data data[2];
	int last = cap_last_cap();
	uint64_t known = last >= 63 ? ~0ull : (1ull << (last + 1)) - 1;

	for (int i = 0; i < 2; i++) {
		data[i].effective = (uint32_t)((c->set[CAPS_EFFECTIVE] & known) >> (32 * i));
		data[i].permitted = (uint32_t)((c->set[CAPS_PERMITTED] & known) >> (32 * i));
		data[i].inheritable = (uint32_t)((c->set[CAPS_INHERITABLE] & known) >> (32 * i));
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		return fail(st, CODE_INVALID_ARGUMENT,
			    "Capabilities: capset(effective=%#llx, permitted=%#llx, inheritable=%#llx): %s",
			    (unsigned long long)c->set[CAPS_EFFECTIVE], (unsigned long long)c->set[CAPS_PERMITTED],
			    (unsigned long long)c->set[CAPS_INHERITABLE], strerror(errno));
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	for (int cap = 0; cap <= last; cap++)
		if (c->set[CAPS_AMBIENT] & (1ull << cap))
			prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
	return 0;
}
