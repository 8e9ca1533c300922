/* Filesystem helpers: directories, empty files, small writes, paths resolved inside a root. */
#ifndef OSB_FSUTIL_H
#define OSB_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* mkdir -p; 0 or -1 with errno (an existing directory is fine). */
int mkdir_p(const char *path, mode_t mode);
/* Creates the parent directories and an empty file at path unless something exists there. */
int ensure_file(const char *path);
/* Writes s to an existing file (cgroup and /proc/sys knobs); 0 or -1 with errno. */
int write_string(const char *path, const char *s);
/* root + path, with every symlink on the way resolved as if root were "/" (so that a link in a
 * container's tree cannot lead a mount outside it) and ".." clamped at root. Missing components are
 * kept as they are. 0, or -1 with errno (ELOOP, ENAMETOOLONG). */
int secure_join(const char *root, const char *path, char *out, size_t cap);
bool is_dir(const char *path);

#endif
