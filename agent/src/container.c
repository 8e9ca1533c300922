#include "container.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "init.h"
#include "loop.h"
#include "requests.h"
#include "sandbox.h"
#include "spawn.h"
#include "streams.h"
#include "ttrpc.h"
#include "util.h"

static struct container *containers;

static void report_lost(struct process *p);

static const char *state_name(enum container_state s)
{
	return s == CS_CREATING ? "being created" : s == CS_CREATED ? "created" : s == CS_RUNNING ? "running"
												 : "stopped";
}

int validate_id(const char *field, const char *id, struct status *st)
{
	size_t n = strlen(id);

	if (n == 0)
		return fail(st, CODE_INVALID_ARGUMENT, "%s: empty", field);
	if (n > ID_MAX)
		return fail(st, CODE_INVALID_ARGUMENT, "%s: longer than %d characters", field, ID_MAX);
	if (!isalnum((unsigned char)id[0]))
		return fail(st, CODE_INVALID_ARGUMENT, "%s \"%s\": must start with a letter or a digit", field, id);
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]) && !strchr("._-", id[i]))
			return fail(st, CODE_INVALID_ARGUMENT, "%s \"%s\": only letters, digits, '.', '_' and '-' are allowed",
				    field, id);
	return 0;
}

/* Containers whose creation failed are being taken down: invisible to every call but CreateContainer. */
static bool discarded(const struct container *c)
{
	return c->removing && c->state == CS_CREATING;
}

static struct container *find_container(const char *id, bool include_discarded)
{
	for (struct container *c = containers; c; c = c->next)
		if (strcmp(c->id, id) == 0 && (include_discarded || !discarded(c)))
			return c;
	return NULL;
}

static struct container *lookup_container(const char *id, struct status *st)
{
	struct container *c = find_container(id, false);

	if (!c)
		fail(st, CODE_NOT_FOUND, "container_id \"%s\": no such container", id);
	return c;
}

static struct process *find_process(struct container *c, const char *exec_id)
{
	for (struct process *p = c->procs; p; p = p->next)
		if (strcmp(p->exec_id, exec_id) == 0)
			return p;
	return NULL;
}

struct process *process_lookup(const char *container_id, const char *exec_id, struct status *st)
{
	struct container *c = lookup_container(container_id, st);

	if (!c)
		return NULL;
	struct process *p = find_process(c, exec_id);
	if (!p)
		fail(st, CODE_NOT_FOUND, "exec_id \"%s\": no such process in container \"%s\"", exec_id, container_id);
	return p;
}

static struct process *process_new(struct container *c, const char *exec_id)
{
	struct process *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->ctr = c;
	snprintf(p->exec_id, sizeof(p->exec_id), "%s", exec_id);
	p->stdin_fd = p->sync_fd = -1;
	for (int i = 0; i < 2; i++) {
		p->out[i].fd = -1;
		p->out[i].proc = p;
		p->out[i].which = i;
	}
	p->sync = SYNC_DONE;
	return p;
}

static void process_free(struct process *p)
{
	spawn_abandon(p);
	stdio_release(p);
	for (struct pending *w = p->waiters, *next; w; w = next) {
		next = w->next;
		free(w);
	}
	arena_free(&p->arena);
	free(p);
}

static void reply_empty(const struct call_ref *ref)
{
	server_reply(ref, NULL, NULL, 0);
}

static void answer_sync_call(struct process *p, const struct status *st)
{
	if (!p->has_sync_call)
		return;
	p->has_sync_call = false;
	if (st && st->code != CODE_OK) {
		struct status named = *st;
		status_prefix(&named, p->sync_call_name);
		server_reply(&p->sync_call, &named, NULL, 0);
		return;
	}
	server_reply(&p->sync_call, NULL, NULL, 0);
}

static void await_child(struct process *p, const struct call_ref *ref, const char *call)
{
	p->has_sync_call = true; /* answered by process_sync_ready / process_sync_done */
	p->sync_call = *ref;
	p->sync_call_name = call;
}

/* ------------------------------------------------------------------ taking a container down */

static void kill_container(struct container *c)
{
	for (struct process *p = c->procs; p; p = p->next)
		if (!p->exited && p->pid > 0)
			kill(p->pid, SIGKILL);
	if (c->cgroup)
		cgroup_signal(c->cgroup, SIGKILL);
}

static size_t alive_processes(const struct container *c)
{
	size_t n = 0;

	for (const struct process *p = c->procs; p; p = p->next)
		if (!p->exited && p->pid > 0)
			n++;
	return n;
}

static void container_free(struct container *c)
{
	for (struct container **pp = &containers; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	for (struct process *p = c->procs, *next; p; p = next) {
		next = p->next;
		answer_sync_call(p, &(struct status){CODE_NOT_FOUND, "the container was removed"});
		process_free(p);
	}
	storage_unmount_all(&c->storages);
	if (c->cgroup) {
		cgroup_remove(c->cgroup);
		free(c->cgroup);
	}
	if (c->has_remove_call)
		server_reply(&c->remove_call, &c->remove_status, NULL, 0);
	arena_free(&c->arena);
	free(c);
}

static bool container_listed(const struct container *c)
{
	for (const struct container *x = containers; x; x = x->next)
		if (x == c)
			return true;
	return false;
}

/* A container being removed is finished once all its processes have been reaped. */
static void check_removed(struct container *c)
{
	if (c->removing && alive_processes(c) == 0)
		container_free(c);
}

/* Kills and takes down c; ref (may be NULL) gets the answer. */
static void begin_remove(struct container *c, const struct call_ref *ref, uint32_t timeout_s)
{
	c->removing = true;
	if (ref) {
		c->has_remove_call = true;
		c->remove_call = *ref;
		c->remove_status.code = CODE_OK;
		c->remove_deadline = timeout_s ? now_ms() + (uint64_t)timeout_s * 1000 : 0;
	}
	kill_container(c);
	check_removed(c);
}

void containers_destroy_all(void)
{
	for (struct container *c = containers, *next; c; c = next) {
		next = c->next;
		if (!c->removing)
			begin_remove(c, NULL, 0);
		else
			kill_container(c);
	}
}

bool containers_empty(void)
{
	return containers == NULL;
}

struct container *containers_list(void)
{
	return containers;
}

/* ------------------------------------------------------------------ events */

static void child_exited(pid_t pid, int wstatus)
{
	for (struct container *c = containers; c; c = c->next) {
		for (struct process *p = c->procs; p; p = p->next) {
			if (p->pid != pid || p->exited)
				continue;
			p->exited = true;
			p->exit_ms = now_ms();
			p->exit_status = WIFEXITED(wstatus)     ? WEXITSTATUS(wstatus)
					 : WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus)
								: 255;
			uint8_t buf[16];
			struct pb_writer w;
			pb_writer_init(&w, buf, sizeof(buf));
			pb_put_int32(&w, 1, p->exit_status); /* WaitProcessResponse.status */
			for (struct pending *wt = p->waiters, *next; wt; wt = next) {
				next = wt->next;
				server_reply(&wt->ref, NULL, buf, w.len);
				free(wt);
			}
			p->waiters = NULL;
			stdio_process_exited(p);
			if (p == c->procs && c->state != CS_CREATING)
				c->state = CS_STOPPED;
			if (p->sync_lost) {
				report_lost(p); /* a failed create may take the container down */
				if (!container_listed(c))
					return;
			}
			check_removed(c);
			return;
		}
	}
}

void process_sync_ready(struct process *p)
{
	struct container *c = p->ctr;

	if (c->state == CS_CREATING && !c->removing)
		c->state = CS_CREATED;
	answer_sync_call(p, NULL);
}

static void report_lost(struct process *p)
{
	struct status st;

	p->sync_lost = false;
	if (p->exit_status > 128)
		fail(&st, CODE_INTERNAL, "the container's setup process was killed by signal %d before it was ready",
		     p->exit_status - 128);
	else
		fail(&st, CODE_INTERNAL, "the container's setup process exited with status %d before it was ready",
		     p->exit_status);
	process_sync_done(p, &st);
}

void process_sync_lost(struct process *p)
{
	p->sync_lost = true;
	if (p->exited)
		report_lost(p);
}

/* CreateContainer failed: the answer goes out once nothing of the container is left (so that the
 * same id can be used right away). */
static void fail_create(struct container *c, const struct call_ref *ref, const struct status *err)
{
	c->has_remove_call = true;
	c->remove_call = *ref;
	c->remove_status = *err;
	status_prefix(&c->remove_status, "CreateContainer");
	c->remove_deadline = 0;
	begin_remove(c, NULL, 0);
}

void process_sync_done(struct process *p, const struct status *err)
{
	struct container *c = p->ctr;

	if (err && c->state == CS_CREATING && !c->removing && p->has_sync_call) {
		p->has_sync_call = false;
		fail_create(c, &p->sync_call, err);
		return;
	}
	if (!err && p == c->procs && c->state == CS_CREATED)
		c->state = CS_RUNNING;
	answer_sync_call(p, err);
}

static uint64_t remove_deadlines(uint64_t now)
{
	uint64_t wake = UINT64_MAX;

	for (struct container *c = containers; c; c = c->next) {
		if (!c->has_remove_call || !c->remove_deadline)
			continue;
		if (now >= c->remove_deadline) {
			struct status st;
			fail(&st, CODE_DEADLINE_EXCEEDED,
			     "RemoveContainer: container \"%s\": %zu process(es) still alive after the timeout; "
			     "call RemoveContainer again to retry", c->id, alive_processes(c));
			server_reply(&c->remove_call, &st, NULL, 0);
			c->has_remove_call = false;
			continue;
		}
		if (c->remove_deadline < wake)
			wake = c->remove_deadline;
	}
	return wake;
}

void containers_init(bool no_pivot)
{
	spawn_init(no_pivot);
	stdio_init();
	init_set_child_handler(child_exited);
	loop_add_ticker(remove_deadlines);
}

/* ------------------------------------------------------------------ calls */

static void reply_error(const struct call_ref *ref, struct status *st, const char *call)
{
	status_prefix(st, call);
	server_reply(ref, st, NULL, 0);
}

void container_create(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct create_request *req = arena_alloc(&a, sizeof(*req));
	struct container *c = NULL;
	struct stat sb;

	if (!req) {
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		goto error;
	}
	if (decode_create_request(&d, payload, len, req) < 0)
		goto error;
	if (!sandbox_created()) {
		fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": CreateSandbox has not been called",
		     req->container_id);
		goto error;
	}
	if (find_container(req->container_id, true)) {
		fail(&st, CODE_ALREADY_EXISTS, "container_id \"%s\": a container with this id exists", req->container_id);
		goto error;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		goto error;
	}
	snprintf(c->id, sizeof(c->id), "%s", req->container_id);
	c->state = CS_CREATING;
	c->spec = &req->spec;
	c->storages = req->storages;
	/* storages first: they may carry the root */
	if (storage_mount_all(&c->storages, "storages", &st) < 0)
		goto error;
	if (stat(c->spec->root_path, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		fail(&st, CODE_INVALID_ARGUMENT, "OCI.Root.Path \"%s\": %s", c->spec->root_path,
		     stat(c->spec->root_path, &sb) < 0 ? strerror(errno) : "not a directory");
		goto error;
	}
	if (cgroup_create(c->id, &c->spec->lin, &c->cgroup, &st) < 0)
		goto error;
	struct process *p = process_new(c, req->exec_id);
	if (!p) {
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		goto error;
	}
	p->spec = &c->spec->process;
	c->procs = p;
	c->arena = a;
	c->next = containers;
	containers = c;
	struct spawn_args args = {c->spec, p->spec, c->cgroup, 0};
	if (spawn_process(p, &args, &st) < 0) {
		fail_create(c, ref, &st);
		return;
	}
	await_child(p, ref, "CreateContainer");
	return;
error:
	if (c) {
		storage_unmount_all(&c->storages);
		if (c->cgroup) {
			cgroup_remove(c->cgroup);
			free(c->cgroup);
		}
		free(c);
	}
	reply_error(ref, &st, "CreateContainer");
	arena_free(&a);
}

void container_start(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct ids_request r;
	struct container *c;

	if (decode_ids_request(&d, payload, len, IDS_CONTAINER, false, &r) < 0 ||
	    !(c = lookup_container(r.container_id, &st)))
		goto error;
	struct process *p = c->procs;
	if (c->removing) {
		fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": the container is being removed", c->id);
	} else if (c->state != CS_CREATED) {
		fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": cannot start a container that is %s", c->id,
		     state_name(c->state));
	} else if (p->exited) {
		fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": its process exited before the start", c->id);
	} else if (p->sync != SYNC_CREATED) {
		fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": already being started", c->id);
	} else if (spawn_start(p) < 0) {
		if (errno == EPIPE || errno == ECONNRESET)
			fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": its process died before the start", c->id);
		else
			fail(&st, CODE_INTERNAL, "container_id \"%s\": cannot signal its process: %s", c->id,
			     strerror(errno));
	} else {
		await_child(p, ref, "StartContainer");
		arena_free(&a);
		return;
	}
error:
	reply_error(ref, &st, "StartContainer");
	arena_free(&a);
}

void container_exec(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct exec_request *req = arena_alloc(&a, sizeof(*req));
	struct container *c;
	struct process *p;

	if (!req) {
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		goto error;
	}
	if (decode_exec_request(&d, payload, len, req) < 0 || !(c = lookup_container(req->container_id, &st)))
		goto error;
	struct process *init = c->procs;
	if (c->removing || c->state != CS_RUNNING || init->exited) {
		fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": the container is not running (%s)", c->id,
		     c->removing ? "being removed" : state_name(init->exited ? CS_STOPPED : c->state));
		goto error;
	}
	struct process *old = find_process(c, req->exec_id);
	if (old && !old->exited) {
		fail(&st, CODE_ALREADY_EXISTS, "exec_id \"%s\": a process with this id runs in container \"%s\"",
		     req->exec_id, c->id);
		goto error;
	}
	if (old == init) {
		fail(&st, CODE_ALREADY_EXISTS, "exec_id \"%s\": the id of the container's own process", req->exec_id);
		goto error;
	}
	if (old) { /* an exited process's id may be used again */
		for (struct process **pp = &c->procs; *pp; pp = &(*pp)->next) {
			if (*pp == old) {
				*pp = old->next;
				break;
			}
		}
		process_free(old);
	}
	if (!(p = process_new(c, req->exec_id))) {
		fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
		goto error;
	}
	p->arena = a;
	p->spec = &req->process;
	p->next = init->next;
	init->next = p;
	struct spawn_args args = {c->spec, p->spec, c->cgroup, init->pid};
	if (spawn_process(p, &args, &st) < 0) {
		if (p->pid <= 0) { /* never ran: forget it */
			init->next = p->next;
			process_free(p);
		}
		reply_error(ref, &st, "ExecProcess");
		return;
	}
	await_child(p, ref, "ExecProcess");
	return;
error:
	reply_error(ref, &st, "ExecProcess");
	arena_free(&a);
}

void container_wait(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct ids_request r;
	struct process *p;

	if (decode_ids_request(&d, payload, len, IDS_PROCESS, true, &r) < 0 ||
	    !(p = process_lookup(r.container_id, r.exec_id, &st))) {
		reply_error(ref, &st, "WaitProcess");
	} else if (p->exited) {
		uint8_t buf[16];
		struct pb_writer w;
		pb_writer_init(&w, buf, sizeof(buf));
		pb_put_int32(&w, 1, p->exit_status);
		server_reply(ref, NULL, buf, w.len);
	} else {
		struct pending *wt = calloc(1, sizeof(*wt));
		if (!wt) {
			fail(&st, CODE_RESOURCE_EXHAUSTED, "out of memory");
			reply_error(ref, &st, "WaitProcess");
		} else {
			wt->ref = *ref;
			wt->next = p->waiters;
			p->waiters = wt;
		}
	}
	arena_free(&a);
}

void container_signal(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct ids_request r;
	struct container *c;

	if (decode_ids_request(&d, payload, len, IDS_PROCESS_VALUE, false, &r) < 0 ||
	    !(c = lookup_container(r.container_id, &st)))
		goto error;
	if (r.value >= 65) {
		fail(&st, CODE_INVALID_ARGUMENT, "signal: %u is not a signal number (0..64)", r.value);
		goto error;
	}
	if (!*r.exec_id) { /* every process of the container */
		for (struct process *p = c->procs; p; p = p->next)
			if (!p->exited && p->pid > 0)
				kill(p->pid, (int)r.value);
		if (c->cgroup && r.value)
			cgroup_signal(c->cgroup, (int)r.value);
	} else {
		struct process *p = find_process(c, r.exec_id);
		if (!p) {
			fail(&st, CODE_NOT_FOUND, "exec_id \"%s\": no such process in container \"%s\"", r.exec_id, c->id);
			goto error;
		}
		/* a process that has exited takes no signal: not an error (the runtime kills late) */
		if (!p->exited && p->pid > 0 && kill(p->pid, (int)r.value) < 0 && errno != ESRCH) {
			fail(&st, CODE_INTERNAL, "kill %d: %s", (int)p->pid, strerror(errno));
			goto error;
		}
	}
	reply_empty(ref);
	arena_free(&a);
	return;
error:
	reply_error(ref, &st, "SignalProcess");
	arena_free(&a);
}

void container_remove(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct ids_request r;
	struct container *c;

	if (decode_ids_request(&d, payload, len, IDS_CONTAINER_VALUE, false, &r) < 0 ||
	    !(c = lookup_container(r.container_id, &st))) {
		reply_error(ref, &st, "RemoveContainer");
	} else if (c->has_remove_call) {
		fail(&st, CODE_FAILED_PRECONDITION, "container_id \"%s\": a RemoveContainer call is in progress", c->id);
		reply_error(ref, &st, "RemoveContainer");
	} else {
		begin_remove(c, ref, r.value);
	}
	arena_free(&a);
}
