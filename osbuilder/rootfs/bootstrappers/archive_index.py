"""Whether the archive carries the target architecture's packages, named by archive and suite.

A foreign --arch needs an archive with that architecture's index: Debian's archive carries arm64,
Ubuntu keeps every architecture but amd64 and i386 in a separate ports archive. Given a mirror
(--mirror or OSBUILDER_<ARCHIVE>_MIRROR), the suite's signed InRelease is read before anything is
bootstrapped and its Architectures field decides. With mmdebstrap's default mirrors nothing here
knows the URL in advance (no archive host name is written into osbuilder), so apt's own report of
the indexes it could not fetch is turned into the same error after the bootstrap failed, within
seconds of starting it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osbuilder.arch import host_arch
from osbuilder.debarchive import ArchiveClient, parse_stanzas
from osbuilder.errors import CommandError, FetchError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.rootfs.bootstrappers.base import Job

# apt's lines: "E: Failed to fetch URL/dists/SUITE/PATH  reason", and for an archive without the
# architecture "N: Skipping acquire of configured file 'main/binary-arm64/Packages' as repository
# 'URL SUITE InRelease' doesn't support architecture 'arm64'".
FAILED_FETCH = re.compile(r"E: Failed to fetch (?P<archive>\S+?)/dists/(?P<suite>[^/\s]+)/\S*\s+(?P<reason>.*)$")
UNSUPPORTED = re.compile(r"as repository '(?P<archive>\S+) (?P<suite>\S+)[^']*' doesn't support architecture "
                         r"'(?P<arch>[^']+)'")


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
    """Before bootstrapping a foreign architecture from a known mirror: its signed InRelease must be
    readable and list the architecture (exit 2 if it does not, 1 if it cannot be read)."""
    if job.mirror is None or job.arch.name == host_arch().name or fetcher.offline:
        return
    suite, debian_arch = job.release.suite, job.arch.debian
    where = f"mirror {job.mirror}"
    try:
        release = ArchiveClient(fetcher, keyring=keyring).verified_release(job.mirror, suite,
                                                                           job.recipe.bootstrap.archive or "debian")
    except FetchError as error:
        raise FetchError(problem=f"no {debian_arch} index is reachable: the archive {job.mirror} cannot be read "
                                 f"for suite {suite}: {error.problem}",
                         where=where, fix=_mirror_fix(job)) from error
    listed = next(parse_stanzas(release), {}).get("Architectures", "").split()
    if debian_arch not in listed:
        raise UsageError(problem=f"the archive {job.mirror} has no {debian_arch} index for suite {suite} (it "
                                 f"lists {' '.join(listed) or 'no architectures'})",
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
            found.setdefault((unsupported["archive"], unsupported["suite"]), f"it has no {debian_arch} index")
    return [MissingIndex(archive, suite, reason) for (archive, suite), reason in found.items()]


@contextlib.contextmanager
def explained_index_failures(job: Job) -> Iterator[None]:
    """A bootstrap that failed because apt could not read the archive's indexes says which archive
    and which suite, instead of leaving that in mmdebstrap's output."""
    try:
        yield
    except CommandError as error:
        missing = missing_indexes(error.stderr_tail, job.arch.debian)
        if not missing:
            raise
        named = "; ".join(f"{entry.archive} suite {entry.suite} ({entry.reason})" for entry in missing)
        raise FetchError(problem=f"no {job.arch.debian} index is reachable: {named}",
                         where=f"mirror {job.mirror}" if job.mirror else "mmdebstrap's default mirrors",
                         fix=_mirror_fix(job)) from error
