/* Containers and their processes: the table, the states, and the AgentService calls that create,
 * start, exec into, wait for, signal and remove them. */
#ifndef OSB_CONTAINER_H
#define OSB_CONTAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "arena.h"
#include "oci.h"
#include "server.h"
#include "status.h"
#include "storage.h"

#define ID_MAX 128

enum container_state {
	CS_CREATING, /* the setup process is building the environment */
	CS_CREATED,  /* set up; the process waits for StartContainer */
	CS_RUNNING,  /* the process was started */
	CS_STOPPED,  /* the first process has exited */
};

/* How far the parent is in the handshake with a process it forked (spawn.c). */
enum sync_state {
	SYNC_SETUP,   /* "go" sent, waiting for "ready" or an error */
	SYNC_CREATED, /* the first process waits for "start" */
	SYNC_EXEC,    /* waiting for the exec: end of file on the socket (close-on-exec) or an error */
	SYNC_DONE,
};

/* A call waiting for something (a reply not sent yet), in FIFO order. */
struct pending {
	struct pending *next;
	struct call_ref ref;
	uint32_t len;           /* ReadStream: at most this many bytes */
	uint8_t *data;          /* WriteStdin: what is still to be written */
	size_t data_len, off;
	bool close;             /* CloseStdin */
};

struct process;

struct stream {
	int fd;                 /* agent side of a stdout/stderr pipe; -1 once at its end */
	unsigned watch;
	struct pending *reads;
	struct process *proc;
	int which;              /* 0 stdout, 1 stderr */
};

struct container;

struct process {
	struct process *next;
	struct container *ctr;
	char exec_id[ID_MAX + 1];
	pid_t pid;
	bool exited;
	int exit_status;        /* exit code, or 128 + signal */
	uint64_t exit_ms;

	int stdin_fd;           /* agent side of the stdin pipe; -1 when closed */
	unsigned stdin_watch;
	bool stdin_closed;
	struct pending *stdin_ops;
	struct stream out[2];   /* stdout, stderr */

	int sync_fd;
	unsigned sync_watch;
	enum sync_state sync;
	bool has_sync_call;     /* CreateContainer / StartContainer / ExecProcess waiting for the child */
	struct call_ref sync_call;
	const char *sync_call_name;
	bool sync_lost;         /* the setup process died silently: its exit status explains it */

	struct pending *waiters; /* WaitProcess */

	struct arena arena;     /* an exec process's own spec */
	const struct oci_process *spec;
};

struct container {
	struct container *next;
	char id[ID_MAX + 1];
	enum container_state state;
	struct arena arena;     /* the decoded spec and storages */
	struct oci_spec *spec;
	struct process *procs;  /* the first one is the container's process (exec_id of CreateContainer) */
	char *cgroup;           /* absolute cgroup v2 directory, NULL without cgroups */
	struct storage_set storages;

	bool removing;          /* being killed and taken down */
	bool has_remove_call;   /* RemoveContainer, or a CreateContainer that failed: answered when gone */
	struct call_ref remove_call;
	struct status remove_status; /* the answer (OK for RemoveContainer) */
	uint64_t remove_deadline; /* 0: none */
};

/* Registers the child reaper and the ticker. no_pivot: always MS_MOVE + chroot (testing). */
void containers_init(bool no_pivot);

/* grpc.AgentService handlers: each replies now or later through server_reply. */
void container_create(const struct call_ref *ref, const uint8_t *payload, size_t len);
void container_start(const struct call_ref *ref, const uint8_t *payload, size_t len);
void container_exec(const struct call_ref *ref, const uint8_t *payload, size_t len);
void container_wait(const struct call_ref *ref, const uint8_t *payload, size_t len);
void container_signal(const struct call_ref *ref, const uint8_t *payload, size_t len);
void container_remove(const struct call_ref *ref, const uint8_t *payload, size_t len);

/* Finds the process of (container_id, exec_id), or fails with NOT_FOUND naming the id. */
struct process *process_lookup(const char *container_id, const char *exec_id, struct status *st);
/* Checks an id: 1..128 characters of [A-Za-z0-9._-], starting with a letter or digit. */
int validate_id(const char *field, const char *id, struct status *st);

/* DestroySandbox: kill and take down every container; true once none is left. */
void containers_destroy_all(void);
bool containers_empty(void);
/* The table (for the stream timers). */
struct container *containers_list(void);

/* From spawn.c: the child reported "ready", or the handshake ended (err NULL: the exec succeeded), or
 * the child died during its setup without a word (reported once its exit status is known). */
void process_sync_ready(struct process *p);
void process_sync_done(struct process *p, const struct status *err);
void process_sync_lost(struct process *p);

#endif
