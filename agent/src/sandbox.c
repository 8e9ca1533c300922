#include "sandbox.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "container.h"
#include "loop.h"
#include "pbdec.h"
#include "storage.h"
#include "ttrpc.h"
#include "util.h"

#define HOSTNAME_MAX 64
#define DESTROY_WAIT_MS 10000 /* containers that do not die by then are left to the power-off */

static struct {
	bool created;
	char id[ID_MAX + 1];
	struct arena arena;
	struct storage_set storages;

	bool destroying;
	struct call_ref destroy_call;
	uint64_t destroy_deadline;
} SB;

bool sandbox_created(void)
{
	return SB.created;
}

struct create_sandbox {
	char *hostname, *id;
	struct strv dns; /* the guest's resolv.conf is the image's business */
	bool sandbox_pidns, guest_userns;
	struct pbd_bytes kernel_modules;
	struct storage_set storages;
};

static const struct pbd_field CREATE_FIELDS[] = {
	PBD_FIELD(1, PBD_STRING, struct create_sandbox, hostname, "hostname"),
	PBD_FIELD(2, PBD_STRV, struct create_sandbox, dns, "dns"),
	PBD_FIELD(4, PBD_BOOL, struct create_sandbox, sandbox_pidns, "sandbox_pidns"),
	PBD_FIELD(5, PBD_STRING, struct create_sandbox, id, "sandbox_id"),
	PBD_FIELD(7, PBD_BYTES, struct create_sandbox, kernel_modules, "kernel_modules"),
	PBD_FIELD(8, PBD_BOOL, struct create_sandbox, guest_userns, "guest_userns"),
};

/* storages=3 (guest_hook_path=6: there are no guest hooks) */
static int create_nested(struct pbdec *d, struct pb_reader *r, uint32_t number, uint32_t wt, void *ctx)
{
	struct create_sandbox *c = ctx;
	const uint8_t *p;
	size_t n;
	char field[32];

	if (number != 3)
		return 1;
	fmt(field, sizeof(field), "storages[%zu]", c->storages.n);
	return pbd_bytes(d, r, wt, field, &p, &n) < 0 ? -1 : storage_decode(d, field, p, n, &c->storages);
}

static int decode_create(struct pbdec *d, const uint8_t *payload, size_t len, struct create_sandbox *c)
{
	if (pbd_message(d, payload, len, "CreateSandboxRequest", CREATE_FIELDS, PBD_COUNT(CREATE_FIELDS), c,
			create_nested, c) < 0)
		return -1;
	if (c->sandbox_pidns)
		return fail(d->st, CODE_INVALID_ARGUMENT,
			    "sandbox_pidns: a pid namespace shared by the sandbox is not supported by this agent");
	if (c->kernel_modules.present)
		return fail(d->st, CODE_INVALID_ARGUMENT, "kernel_modules: loading kernel modules is not supported by "
			    "this agent");
	if (c->guest_userns)
		return fail(d->st, CODE_INVALID_ARGUMENT, "guest_userns: user namespaces are not supported by this agent");
	if (validate_id("sandbox_id", c->id ? c->id : "", d->st) < 0)
		return -1;
	if (c->hostname && strlen(c->hostname) > HOSTNAME_MAX)
		return fail(d->st, CODE_INVALID_ARGUMENT, "hostname: \"%s\" is longer than %d bytes", c->hostname,
			    HOSTNAME_MAX);
	return 0;
}

void sandbox_create(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	struct create_sandbox c;

	memset(&c, 0, sizeof(c));
	if (decode_create(&d, payload, len, &c) < 0)
		goto error;
	if (SB.created) {
		fail(&st, CODE_ALREADY_EXISTS, "sandbox_id \"%s\": the sandbox \"%s\" was created already", c.id, SB.id);
		goto error;
	}
	if (SB.destroying) {
		fail(&st, CODE_FAILED_PRECONDITION, "the sandbox is being destroyed");
		goto error;
	}
	if (c.hostname && *c.hostname && sethostname(c.hostname, strlen(c.hostname)) < 0) {
		fail(&st, CODE_INTERNAL, "hostname \"%s\": sethostname: %s", c.hostname, strerror(errno));
		goto error;
	}
	if (storage_mount_all(&c.storages, "storages", &st) < 0)
		goto error;
	SB.created = true;
	snprintf(SB.id, sizeof(SB.id), "%s", c.id);
	SB.arena = a;
	SB.storages = c.storages;
	server_reply(ref, NULL, NULL, 0);
	return;
error:
	status_prefix(&st, "CreateSandbox");
	server_reply(ref, &st, NULL, 0);
	arena_free(&a);
}

static void finish_destroy(void)
{
	if (!containers_empty())
		log_msg("DestroySandbox: containers still alive after %d s; powering off regardless",
			DESTROY_WAIT_MS / 1000);
	storage_unmount_all(&SB.storages);
	SB.destroying = false;
	server_reply(&SB.destroy_call, NULL, NULL, 0);
	server_shutdown_after(&SB.destroy_call);
}

void sandbox_destroy(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct status st;

	/* DestroySandboxRequest {} */
	if (pb_validate(payload, len) < 0) {
		fail(&st, CODE_INVALID_ARGUMENT, "DestroySandbox: malformed DestroySandboxRequest");
		server_reply(ref, &st, NULL, 0);
		return;
	}
	if (SB.destroying) {
		fail(&st, CODE_FAILED_PRECONDITION, "DestroySandbox: already in progress");
		server_reply(ref, &st, NULL, 0);
		return;
	}
	SB.destroying = true;
	SB.destroy_call = *ref;
	SB.destroy_deadline = now_ms() + DESTROY_WAIT_MS;
	containers_destroy_all();
	if (containers_empty())
		finish_destroy();
}

static uint64_t sandbox_tick(uint64_t now)
{
	if (!SB.destroying)
		return UINT64_MAX;
	if (containers_empty() || now >= SB.destroy_deadline) {
		finish_destroy();
		return UINT64_MAX;
	}
	return now + 50 < SB.destroy_deadline ? now + 50 : SB.destroy_deadline;
}

void sandbox_init(void)
{
	loop_add_ticker(sandbox_tick);
}
