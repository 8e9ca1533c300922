#include "creds.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fsutil.h"
#include "ttrpc.h"

/* Splits a colon-separated line into at most max fields (in place); returns how many. */
static int split_fields(char *line, char **field, int max)
{
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	field[n++] = line;
	for (char *p = line; *p && n < max; p++) {
		if (*p == ':') {
			*p = '\0';
			field[n++] = p + 1;
		}
	}
	return n;
}

int creds_resolve(const struct oci_process *p, struct creds *c, struct status *st)
{
	char *line = NULL;
	size_t cap = 0;
	char *f[7];

	memset(c, 0, sizeof(*c));
	c->uid = p->user.uid;
	c->gid = p->user.gid;
	strcpy(c->home, "/");
	FILE *pw = fopen("/etc/passwd", "re");
	if (pw) {
		while (getline(&line, &cap, pw) > 0) {
			if (split_fields(line, f, 7) < 7 || !*f[2] || strtoul(f[2], NULL, 10) != p->user.uid)
				continue;
			if (*f[5])
				snprintf(c->home, sizeof(c->home), "%s", f[5]);
			break;
		}
		free(line);
		fclose(pw);
	}
	/* runc with a spec's numeric uid:gid takes the supplementary groups from the spec only */
	if (p->user.additional_gids.n > CREDS_MAX_GROUPS)
		return fail(st, CODE_INVALID_ARGUMENT, "User.AdditionalGids: more than %d groups", CREDS_MAX_GROUPS);
	for (size_t i = 0; i < p->user.additional_gids.n; i++)
		c->groups[c->ngroups++] = p->user.additional_gids.items[i];
	return 0;
}

int creds_apply(const struct oci_process *p, const struct creds *c, struct status *st)
{
	char v[24];

	if (p->oom_score_adj) {
		snprintf(v, sizeof(v), "%lld", (long long)p->oom_score_adj);
		if (write_string("/proc/self/oom_score_adj", v) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "OOMScoreAdj: %s", strerror(errno));
	}
	for (size_t i = 0; i < p->nrlimits; i++) {
		struct rlimit rl = {p->rlimits[i].soft, p->rlimits[i].hard};
		if (setrlimit(p->rlimits[i].resource, &rl) < 0)
			return fail(st, CODE_INVALID_ARGUMENT, "Rlimits: %s %llu/%llu: %s", p->rlimits[i].name,
				    (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, strerror(errno));
	}
	if (p->has_caps && caps_apply_bounding(&p->caps, st) < 0)
		return -1;
	if (p->has_caps)
		prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
	if (setgroups(c->ngroups, c->groups) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "User.AdditionalGids: setgroups: %s", strerror(errno));
	if (setresgid(c->gid, c->gid, c->gid) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "User.GID %u: %s", (unsigned)c->gid, strerror(errno));
	if (setresuid(c->uid, c->uid, c->uid) < 0)
		return fail(st, CODE_INVALID_ARGUMENT, "User.UID %u: %s", (unsigned)c->uid, strerror(errno));
	if (p->has_caps) {
		prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
		if (caps_apply(&p->caps, st) < 0)
			return -1;
	}
	if (p->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(st, CODE_INTERNAL, "NoNewPrivileges: %s", strerror(errno));
	return 0;
}
