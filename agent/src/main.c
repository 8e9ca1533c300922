/* osbuilder reference agent: a small ttRPC server speaking the part of the Kata Containers 4.1.0 agent
 * protocol that boots guest assets and runs containers in them (health, guest details, network, the
 * sandbox and container lifecycle, stdio streams). See ../README.md. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "agent_version.h"
#include "cgroup.h"
#include "container.h"
#include "init.h"
#include "sandbox.h"
#include "server.h"
#include "service.h"
#include "transport.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kata-agent [--listen-unix PATH] [--serial-path PATH] [--console PATH|-]\n"
		"                  [--cgroup-root DIR] [--no-pivot-root] [--version]\n"
		"  default transports: AF_VSOCK port %u and the virtio-serial port named by\n"
		"  agent.channel=<name> on the kernel command line (default %s)\n"
		"  --listen-unix PATH  serve on a unix stream socket instead (host testing)\n"
		"  --serial-path PATH  use PATH as the serial byte stream instead of scanning sysfs\n"
		"  --console PATH      where the start line goes (default /dev/console; '-' = stdout)\n"
		"  --mountinfo PATH    (testing) describe '/' from PATH instead of /proc/self/mountinfo\n"
		"  --cgroup-root DIR   the cgroup v2 hierarchy for containers (default /sys/fs/cgroup)\n"
		"  --no-pivot-root     (testing) enter container roots with MS_MOVE + chroot, as on an initramfs\n"
		"  --version           print the agent version and exit\n",
		AGENT_VSOCK_PORT, DEFAULT_CHANNEL_NAME);
}

int main(int argc, char **argv)
{
	static struct server_opts opts;
	const char *console = NULL;
	const char *mountinfo = NULL;
	const char *cgroup_root = NULL;
	bool no_pivot = false;

	g_agent.version = AGENT_VERSION;
	g_agent.init_daemon = getpid() == 1;
	signal(SIGPIPE, SIG_IGN);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--version") == 0) {
			printf("%s\n", AGENT_VERSION);
			return 0;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--listen-unix") == 0 && val) {
			opts.unix_path = val;
			i++;
		} else if (strcmp(a, "--serial-path") == 0 && val) {
			opts.serial_path = val;
			i++;
		} else if (strcmp(a, "--console") == 0 && val) {
			console = val;
			i++;
		} else if (strcmp(a, "--mountinfo") == 0 && val) { /* testing: parse this file instead */
			mountinfo = val;
			i++;
		} else if (strcmp(a, "--cgroup-root") == 0 && val) {
			cgroup_root = val;
			i++;
		} else if (strcmp(a, "--no-pivot-root") == 0) {
			no_pivot = true;
		} else if (g_agent.init_daemon) {
			/* the kernel hands unknown command-line words to init: never fail on them */
			log_msg("warning: ignoring argument '%s'", a);
		} else {
			fprintf(stderr, "%s: unknown or incomplete option '%s'\n", AGENT_NAME, a);
			usage(stderr);
			return 2;
		}
	}
	opts.use_vsock = opts.unix_path == NULL;
	opts.scan_serial = opts.unix_path == NULL && opts.serial_path == NULL;

	if (g_agent.init_daemon) {
		init_pid1_setup();
	} else {
		init_ensure_std_fds();
		/* orphans of containers without their own pid namespace are reaped here, not by the host's init */
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	}
	transport_channel_name(opts.channel, sizeof(opts.channel)); /* needs /proc (mounted by now) */

	cgroup_init(cgroup_root);
	containers_init(no_pivot);
	sandbox_init();
	server_init(&opts);
	init_print_start_line(console, mountinfo, AGENT_VERSION);
	server_loop();
}
