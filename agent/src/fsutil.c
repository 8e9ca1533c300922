#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define MAX_LINKS 40

int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(tmp)) {
		errno = len ? ENAMETOOLONG : ENOENT;
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -1;
	return is_dir(tmp) ? 0 : (errno = ENOTDIR, -1);
}

int ensure_file(const char *path)
{
	char dir[PATH_MAX];
	struct stat st;
	const char *slash = strrchr(path, '/');

	if (lstat(path, &st) == 0)
		return 0;
	if (slash && slash != path) {
		size_t n = (size_t)(slash - path);
		if (n >= sizeof(dir)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(dir, path, n);
		dir[n] = '\0';
		if (mkdir_p(dir, 0755) < 0)
			return -1;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

int write_string(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return -1;
	bool ok = write_all(fd, s, strlen(s));
	int saved = errno;
	close(fd);
	errno = saved;
	return ok ? 0 : -1;
}

bool is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Prepends s + "/" to the unresolved rest of the path (a symlink's target). */
static int prepend(char *rest, size_t cap, const char *s)
{
	size_t a = strlen(s), b = strlen(rest);

	if (a + 1 + b + 1 > cap)
		return -1;
	memmove(rest + a + 1, rest, b + 1);
	memcpy(rest, s, a);
	rest[a] = '/';
	return 0;
}

int secure_join(const char *root, const char *path, char *out, size_t cap)
{
	char rest[2 * PATH_MAX], cur[PATH_MAX] = "", full[2 * PATH_MAX], target[PATH_MAX];
	size_t rootlen = strlen(root);
	int links = 0;

	while (rootlen > 0 && root[rootlen - 1] == '/')
		rootlen--; /* "/" becomes "": the joined path starts with cur's own slash */
	if (strlen(path) >= sizeof(rest)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(rest, path);
	char *p = rest;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, "/");
		char comp[NAME_MAX + 1];
		if (n > NAME_MAX) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		p += n;
		if (strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			char *slash = strrchr(cur, '/');
			if (slash)
				*slash = '\0';
			continue;
		}
		size_t curlen = strlen(cur);
		if (curlen + 1 + n + 1 > sizeof(cur)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		cur[curlen] = '/';
		memcpy(cur + curlen + 1, comp, n + 1);
		if ((size_t)snprintf(full, sizeof(full), "%.*s%s", (int)rootlen, root, cur) >= sizeof(full)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		ssize_t t = readlink(full, target, sizeof(target) - 1);
		if (t < 0)
			continue; /* not a symlink, or missing: taken as it is */
		target[t] = '\0';
		if (++links > MAX_LINKS) {
			errno = ELOOP;
			return -1;
		}
		cur[curlen] = '\0'; /* the link is replaced by its target */
		if (target[0] == '/')
			cur[0] = '\0';
		memmove(rest, p, strlen(p) + 1);
		p = rest;
		if (prepend(rest, sizeof(rest), target) < 0) {
			errno = ENAMETOOLONG;
			return -1;
		}
	}
	if ((size_t)snprintf(out, cap, "%.*s%s", (int)rootlen, root, cur) >= cap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (!*out)
		strcpy(out, "/");
	return 0;
}
