#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "service.h"
#include "util.h"

static void mount_fs(const char *source, const char *target, const char *type, unsigned long flags,
		     const char *data)
{
	mkdir_p(target, 0755);
	if (mount(source, target, type, flags, data) < 0 && errno != EBUSY)
		log_msg("warning: mount %s on %s: %s", type, target, strerror(errno));
}

static void set_hostname(void)
{
	char buf[256];
	const char *name = "localhost";

	if (read_small_file("/etc/hostname", buf, sizeof(buf)) > 0) {
		char *p = buf;
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		size_t n = strcspn(p, " \t\n");
		p[n] = '\0';
		if (n > 0 && n <= 64)
			name = p;
	}
	if (sethostname(name, strlen(name)) < 0)
		log_msg("warning: sethostname: %s", strerror(errno));
}

void init_pid1_setup(void)
{
	mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("dev", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620");
	mount_fs("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_fs("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	init_ensure_std_fds();
	setsid();
	ioctl(STDIN_FILENO, TIOCSCTTY, 1); /* best effort, as Kata does */
	setenv("PATH", AGENT_PATH_ENV, 1);
	set_hostname();
}

void init_ensure_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int nfd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (nfd < 0)
			nfd = open("/dev/null", O_RDWR | O_NOCTTY);
		if (nfd < 0)
			return;
		if (nfd != fd) { /* lower descriptors are open, so nfd > fd */
			dup2(nfd, fd);
			close(nfd);
		}
	}
}

/* "/dev/root" is what the kernel calls a root it mounted itself: name the real block device. */
static void resolve_dev_root(char *dev, size_t cap, const char *majmin)
{
	char path[96], uevent[1024];

	if (strcmp(dev, "/dev/root") != 0 || strlen(majmin) > 32)
		return;
	snprintf(path, sizeof(path), "/sys/dev/block/%s/uevent", majmin);
	if (read_small_file(path, uevent, sizeof(uevent)) < 0)
		return;
	char *save = NULL;
	for (char *line = strtok_r(uevent, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "DEVNAME=", 8) == 0 && line[8] && strlen(line + 8) + 6 < cap) {
			snprintf(dev, cap, "/dev/%s", line + 8);
			return;
		}
	}
}

static bool has_token(const char *list, const char *tok, size_t toklen)
{
	const char *p = list;

	while (*p) {
		size_t n = strcspn(p, ",");
		if (n == toklen && memcmp(p, tok, n) == 0)
			return true;
		p += n;
		if (*p == ',')
			p++;
	}
	return false;
}

/* Per-mount options, then the superblock options minus their ro/rw and duplicates:
 * the same set /proc/mounts shows. */
static void merge_options(char *out, size_t cap, const char *mnt_opts, const char *super_opts)
{
	size_t len;

	snprintf(out, cap, "%s", mnt_opts);
	len = strlen(out);
	const char *p = super_opts;
	while (*p) {
		size_t n = strcspn(p, ",");
		bool rwro = (n == 2 && (memcmp(p, "ro", 2) == 0 || memcmp(p, "rw", 2) == 0));
		if (n > 0 && !rwro && !has_token(out, p, n) && len + n + 2 <= cap) {
			if (len > 0)
				out[len++] = ',';
			memcpy(out + len, p, n);
			len += n;
			out[len] = '\0';
		}
		p += n;
		if (*p == ',')
			p++;
	}
}

void init_format_start_line(char *buf, size_t cap, const char *mountinfo, const char *version, long pid)
{
	char dev[256] = "unknown", fstype[64] = "unknown", options[1024] = "unknown", majmin[40] = "";
	FILE *f = fopen(mountinfo, "re");

	if (f) {
		char *line = NULL;
		size_t linecap = 0;
		while (getline(&line, &linecap, f) > 0) {
			char *field[64];
			int nf = 0;
			char *save = NULL;
			for (char *t = strtok_r(line, " \n", &save); t && nf < 64; t = strtok_r(NULL, " \n", &save))
				field[nf++] = t;
			if (nf < 10 || strcmp(field[4], "/") != 0)
				continue;
			int sep = 6;
			while (sep < nf && strcmp(field[sep], "-") != 0)
				sep++;
			if (sep + 2 >= nf)
				continue;
			/* later lines are mounted on top of earlier ones: keep the last */
			snprintf(majmin, sizeof(majmin), "%s", field[2]);
			snprintf(fstype, sizeof(fstype), "%s", field[sep + 1]);
			snprintf(dev, sizeof(dev), "%s", field[sep + 2]);
			merge_options(options, sizeof(options), field[5], sep + 3 < nf ? field[sep + 3] : "");
		}
		free(line);
		fclose(f);
		resolve_dev_root(dev, sizeof(dev), majmin);
	}
	snprintf(buf, cap, "%s: version=%s pid=%ld root=%s fstype=%s options=%s", AGENT_NAME, version, pid, dev,
		 fstype, options);
}

void init_print_start_line(const char *console_path, const char *mountinfo, const char *version)
{
	char line[1600];
	size_t len;
	int fd = -1;

	init_format_start_line(line, sizeof(line) - 1, mountinfo ? mountinfo : "/proc/self/mountinfo", version,
			       (long)getpid());
	len = strlen(line);
	line[len++] = '\n';
	if (!console_path)
		console_path = "/dev/console";
	if (strcmp(console_path, "-") != 0)
		fd = open(console_path, O_WRONLY | O_NOCTTY | O_CLOEXEC | O_APPEND);
	if (fd >= 0) {
		bool ok = write_all(fd, line, len);
		close(fd);
		if (ok)
			return;
	}
	(void)write_all(STDOUT_FILENO, line, len);
}

static void (*child_handler)(pid_t pid, int status);

void init_set_child_handler(void (*fn)(pid_t pid, int status))
{
	child_handler = fn;
}

void init_reap_children(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		if (child_handler)
			child_handler(pid, status);
}

_Noreturn void init_shutdown(int status)
{
	if (g_agent.init_daemon) {
		/* give the host a moment to read the last reply out of the transport */
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
		sync();
		reboot(RB_POWER_OFF);
		log_msg("error: reboot(RB_POWER_OFF): %s", strerror(errno));
		for (;;)
			pause();
	}
	exit(status);
}

_Noreturn void init_fatal(const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg("fatal: %s", msg);
	init_shutdown(1);
}
