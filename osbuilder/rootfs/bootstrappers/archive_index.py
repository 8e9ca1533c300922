"""Whether the archive carries the target architecture's packages, named by archive and suite.

A foreign --arch needs an archive with that architecture's index: Debian's archive carries arm64,
Ubuntu keeps every architecture but amd64 and i386 in a separate ports archive. Given a mirror
(--mirror or OSBUILDER_<ARCHIVE>_MIRROR), the suite's signed InRelease is read before anything is
bootstrapped and its Architectures field decides. With mmdebstrap's default mirrors nothing here
knows the URL in advance (no archive host name is written into osbuilder), so apt's own report of
the indexes it could not fetch is turned into the same error after the bootstrap failed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osbuilder.arch import host_arch
from osbuilder.debarchive import ArchiveClient, parse_stanzas
from osbuilder.errors import EXIT_BAD_INPUT, CommandError, FetchError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.rootfs.bootstrappers.base import Job

log = logging.getLogger(__name__)

# apt's lines: "E: Failed to fetch URL/dists/SUITE/PATH  reason" (W: without --error-on=any), and
# for an archive without the architecture "N: Skipping acquire of configured file
# 'main/binary-arm64/Packages' as repository 'URL SUITE InRelease' doesn't support architecture
# 'arm64'". The archive is everything before the last /dists/ (a mirror's path may contain one).
FAILED_FETCH = re.compile(r"[EW]: Failed to fetch (?P<archive>\S+)/dists/(?P<suite>[^/\s]+)/\S*\s+(?P<reason>.*)$")
UNSUPPORTED = re.compile(r"as repository '(?P<archive>\S+) (?P<suite>\S+)[^']*' doesn't support architecture "
                         r"'(?P<arch>[^']+)'")
NO_INDEX = "it has no {arch} index"


@dataclass(frozen=True)
class MissingIndex:
    archive: str
    suite: str
    reason: str


def _mirror_fix(job: Job) -> str:
    archive = job.recipe.bootstrap.archive or "debian"
    return (f"pass --mirror URL (or set OSBUILDER_{archive.upper()}_MIRROR) to an archive that carries "
            f"{job.arch.debian} for {job.release.suite}"
            + (" (Ubuntu serves it from its ports archive)"
               if archive == "ubuntu" and job.arch.debian not in ("amd64", "i386") else "")
            + ", and check that this host can reach it")


def require_architecture_index(job: Job, keyring: Path | None, fetcher: Fetcher) -> None:
    """Before bootstrapping a foreign architecture from a known http(s) mirror: its signed InRelease
    must be readable and list the architecture (exit 2 if it does not, 1 if it cannot be reached).
    What this cannot judge is left to mmdebstrap: other mirror forms (`deb ...` lines, file://), a
    recipe without a keyring, an archive that serves no InRelease, one whose Release lists no
    Architectures (apt takes that as every architecture)."""
    mirror = job.mirror
    if (mirror is None or not mirror.startswith(("http://", "https://")) or keyring is None
            or job.arch.name == host_arch().name or fetcher.offline):
        return
    suite, debian_arch = job.release.suite, job.arch.debian
    where = f"mirror {mirror}"
    try:
        release = ArchiveClient(fetcher, keyring=keyring).verified_release(mirror, suite,
                                                                           job.recipe.bootstrap.archive or "debian")
    except FetchError as error:
        if error.problem.startswith("HTTP 404"):
            log.info("%s serves no InRelease for %s; mmdebstrap will judge the archive", mirror, suite)
            return
        if not error.problem.startswith(("cannot reach the archive", "HTTP ")):
            raise  # a signature that does not verify, another suite's InRelease: said as they are
        raise FetchError(problem=f"no {debian_arch} index is reachable: the archive {mirror} cannot be read "
                                 f"for suite {suite}: {error.problem}",
                         where=where, fix=_mirror_fix(job)) from error
    listed = next(parse_stanzas(release), {}).get("Architectures")
    if listed is not None and debian_arch not in listed.split():
        raise UsageError(problem=f"the archive {mirror} has no {debian_arch} index for suite {suite} (it "
                                 f"lists {listed or 'no architectures'})",
                         where=where, fix=_mirror_fix(job))


def missing_indexes(output: str, debian_arch: str) -> list[MissingIndex]:
    """The (archive, suite) pairs apt reported it could not read, in the order it reported them."""
    found: dict[tuple[str, str], str] = {}
    for line in output.splitlines():
        failed = FAILED_FETCH.search(line)
        if failed:
            found.setdefault((failed["archive"], failed["suite"]), failed["reason"].strip())
        unsupported = UNSUPPORTED.search(line)
        if unsupported and unsupported["arch"] == debian_arch:
            found.setdefault((unsupported["archive"], unsupported["suite"]), NO_INDEX.format(arch=debian_arch))
    return [MissingIndex(archive, suite, reason) for (archive, suite), reason in found.items()]


@contextlib.contextmanager
def explained_index_failures(job: Job) -> Iterator[None]:
    """A bootstrap that failed because apt could not read the archive's indexes says which archive
    and which suite, instead of leaving that in mmdebstrap's output (which the error keeps). An
    archive that lacks the architecture is bad input (exit 2), as it is when found beforehand."""
    try:
        yield
    except CommandError as error:
        missing = missing_indexes(error.stderr_tail, job.arch.debian)
        if not missing:
            raise
        named = "; ".join(f"{entry.archive} suite {entry.suite} ({entry.reason})" for entry in missing)
        lacking = all(entry.reason == NO_INDEX.format(arch=job.arch.debian) for entry in missing)
        raise CommandError(problem=f"no {job.arch.debian} index is reachable: {named}",
                           where=f"mirror {job.mirror}" if job.mirror else "mmdebstrap's default mirrors",
                           fix=_mirror_fix(job), exit_code=EXIT_BAD_INPUT if lacking else error.exit_code,
                           argv=error.argv, returncode=error.returncode, stderr_tail=error.stderr_tail) from error
