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

static int decode_create(struct pbdec *d, const uint8_t *payload, size_t len, char **hostname, char **id,
			 struct storage_set *storages)
{
	struct pb_reader r;
	uint32_t f, wt;
	const uint8_t *p;
	size_t n;
	char field[32];
	bool flag;
	struct strv dns = {0};

	pb_reader_init(&r, payload, len);
	while (!pb_at_end(&r)) {
		if (pbd_key(d, &r, "CreateSandboxRequest", &f, &wt) < 0)
			return -1;
		int rc;
		switch (f) {
		case 1:
			rc = pbd_string(d, &r, wt, "hostname", hostname);
			break;
		case 2: /* DNS: the guest's resolv.conf is the image's business */
			rc = pbd_strv(d, &r, wt, "dns", &dns);
			break;
		case 3:
			snprintf(field, sizeof(field), "storages[%zu]", storages->n);
			rc = pbd_bytes(d, &r, wt, field, &p, &n) < 0 ? -1 : storage_decode(d, field, p, n, storages);
			break;
		case 4:
			rc = pbd_bool(d, &r, wt, "sandbox_pidns", &flag);
			if (rc == 0 && flag)
				rc = fail(d->st, CODE_INVALID_ARGUMENT,
					  "sandbox_pidns: a pid namespace shared by the sandbox is not supported by this agent");
			break;
		case 5:
			rc = pbd_string(d, &r, wt, "sandbox_id", id);
			break;
		case 7:
			rc = pbd_bytes(d, &r, wt, "kernel_modules", &p, &n);
			if (rc == 0)
				rc = fail(d->st, CODE_INVALID_ARGUMENT,
					  "kernel_modules: loading kernel modules is not supported by this agent");
			break;
		case 8:
			rc = pbd_bool(d, &r, wt, "guest_userns", &flag);
			if (rc == 0 && flag)
				rc = fail(d->st, CODE_INVALID_ARGUMENT,
					  "guest_userns: user namespaces are not supported by this agent");
			break;
		default: /* guest_hook_path: there are no guest hooks */
			rc = pbd_skip(d, &r, wt, "CreateSandboxRequest");
		}
		if (rc < 0)
			return -1;
	}
	if (validate_id("sandbox_id", *id ? *id : "", d->st) < 0)
		return -1;
	if (*hostname && strlen(*hostname) > HOSTNAME_MAX)
		return fail(d->st, CODE_INVALID_ARGUMENT, "hostname: \"%s\" is longer than %d bytes", *hostname,
			    HOSTNAME_MAX);
	return 0;
}

void sandbox_create(const struct call_ref *ref, const uint8_t *payload, size_t len)
{
	struct arena a = {0};
	struct status st = {0};
	struct pbdec d = {&a, &st};
	char *hostname = NULL, *id = NULL;
	struct storage_set storages = {0};

	if (decode_create(&d, payload, len, &hostname, &id, &storages) < 0)
		goto error;
	if (SB.created) {
		fail(&st, CODE_ALREADY_EXISTS, "sandbox_id \"%s\": the sandbox \"%s\" was created already", id, SB.id);
		goto error;
	}
	if (SB.destroying) {
		fail(&st, CODE_FAILED_PRECONDITION, "the sandbox is being destroyed");
		goto error;
	}
	if (hostname && *hostname && sethostname(hostname, strlen(hostname)) < 0) {
		fail(&st, CODE_INTERNAL, "hostname \"%s\": sethostname: %s", hostname, strerror(errno));
		goto error;
	}
	if (storage_mount_all(&storages, "storages", &st) < 0)
		goto error;
	SB.created = true;
	snprintf(SB.id, sizeof(SB.id), "%s", id);
	SB.arena = a;
	SB.storages = storages;
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
