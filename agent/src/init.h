/* Process-level duties: PID 1 setup, the start line, child reaping, shutdown. */
#ifndef OSB_INIT_H
#define OSB_INIT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define AGENT_PATH_ENV "/bin:/sbin/:/usr/bin/:/usr/sbin/"

/* Mounts proc, sysfs, devtmpfs, devpts, /dev/shm and /run; setsid; PATH; hostname. */
void init_pid1_setup(void);

/* Opens /dev/console (else /dev/null) on any of the descriptors 0, 1, 2 that are closed. */
void init_ensure_std_fds(void);

/* The start line, without the newline:
 * "osbuilder-agent: version=V pid=P root=DEV fstype=T options=O" for the topmost mount on "/"
 * found in mountinfo ("unknown" for fields that cannot be determined). */
void init_format_start_line(char *buf, size_t cap, const char *mountinfo, const char *version, long pid);

/* Writes the start line to console_path (NULL: /dev/console; "-": stdout); falls back to stdout.
 * mountinfo: NULL for /proc/self/mountinfo (tests pass a file). */
void init_print_start_line(const char *console_path, const char *mountinfo, const char *version);

/* waitpid(-1, WNOHANG) until no exited child is left; each one goes to the handler (if set). */
void init_reap_children(void);
void init_set_child_handler(void (*fn)(pid_t pid, int status));

/* PID 1: sync() and reboot(RB_POWER_OFF). Otherwise exit(status). */
_Noreturn void init_shutdown(int status);

/* Logs the message and shuts down as above with status 1. */
_Noreturn void init_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
