#include "transport.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "util.h"

/* musl ships no <linux/vm_sockets.h>: the few definitions needed, from the kernel UAPI. */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY 0xFFFFFFFFu

struct osb_sockaddr_vm {
	sa_family_t svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_flags;
	unsigned char svm_zero[sizeof(struct sockaddr) - sizeof(sa_family_t) - sizeof(unsigned short) -
			       2 * sizeof(unsigned int) - 1];
};

_Static_assert(sizeof(struct osb_sockaddr_vm) == 16, "sockaddr_vm is 16 bytes");

#define VIRTIO_PORTS_DIR "/sys/class/virtio-ports"

int transport_listen_vsock(unsigned port)
{
	struct osb_sockaddr_vm addr;
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&addr, 0, sizeof(addr));
	addr.svm_family = AF_VSOCK;
	addr.svm_port = port;
	addr.svm_cid = VMADDR_CID_ANY;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 32) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int transport_listen_unix(const char *path)
{
	struct sockaddr_un addr;
	struct stat st;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	/* A stale socket from an earlier run is replaced; any other file is left alone. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

void transport_channel_name(char *buf, size_t cap)
{
	char cmdline[4096];
	const size_t plen = strlen(CHANNEL_PARAM);

	snprintf(buf, cap, "%s", DEFAULT_CHANNEL_NAME);
	if (read_small_file("/proc/cmdline", cmdline, sizeof(cmdline)) < 0)
		return;
	char *save = NULL;
	for (char *tok = strtok_r(cmdline, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (strncmp(tok, CHANNEL_PARAM, plen) == 0 && tok[plen] != '\0' && strlen(tok + plen) < cap)
			snprintf(buf, cap, "%s", tok + plen);
	}
}

static bool safe_dev_name(const char *s)
{
	if (!*s || strlen(s) > 32)
		return false;
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
		      *s == '_'))
			return false;
	}
	return true;
}

/* devtmpfs normally creates /dev/vportXpY; without it (or before it did), make the node ourselves. */
static void ensure_dev_node(const char *entry, const char *devpath)
{
	char sys[320], majmin[32];
	unsigned maj, min;

	if (access(devpath, F_OK) == 0 || errno != ENOENT)
		return;
	snprintf(sys, sizeof(sys), VIRTIO_PORTS_DIR "/%s/dev", entry);
	if (read_small_file(sys, majmin, sizeof(majmin)) < 0 || sscanf(majmin, "%u:%u", &maj, &min) != 2)
		return;
	if (mknod(devpath, S_IFCHR | 0600, makedev(maj, min)) < 0 && errno != EEXIST)
		log_msg("warning: mknod %s: %s", devpath, strerror(errno));
}

int transport_find_serial_port(const char *name, char *path, size_t cap)
{
	DIR *dir = opendir(VIRTIO_PORTS_DIR);
	struct dirent *de;
	char file[320], value[128];
	int found = -1;

	if (!dir)
		return -1;
	while ((de = readdir(dir)) != NULL) {
		if (!safe_dev_name(de->d_name))
			continue;
		snprintf(file, sizeof(file), VIRTIO_PORTS_DIR "/%s/name", de->d_name);
		ssize_t n = read_small_file(file, value, sizeof(value));
		if (n <= 0)
			continue;
		while (n > 0 && (value[n - 1] == '\n' || value[n - 1] == ' '))
			value[--n] = '\0';
		if (strcmp(value, name) != 0)
			continue;
		snprintf(path, cap, "/dev/%s", de->d_name);
		ensure_dev_node(de->d_name, path);
		found = 0;
		break;
	}
	closedir(dir);
	return found;
}

int transport_open_serial(const char *path)
{
	struct termios tio;
	int fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (isatty(fd) && tcgetattr(fd, &tio) == 0) {
		cfmakeraw(&tio);
		tcsetattr(fd, TCSANOW, &tio);
	}
	return fd;
}
