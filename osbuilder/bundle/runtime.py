"""The Kata runtime shipped in the bundle: from versions.yaml (URL + sha256) or a local path.

A runtime is a set of binaries under opt/kata (the shim, and the tools next to it when present),
taken from a kata-static release tarball, a directory laid out like /opt/kata, or a single shim
binary. Its version comes from running the shim with --version (the form both the Go and the Rust
shims print), unless the caller states it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import libarchive

from osbuilder import runner
from osbuilder.cache import sha256_file
from osbuilder.errors import BuildError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.versions import Download, Versions

# Where each runtime binary lives in a kata-static tarball (4.x puts the Rust shim under runtime-rs/).
RUNTIME_MEMBERS = (
    "opt/kata/runtime-rs/bin/containerd-shim-kata-v2",
    "opt/kata/bin/containerd-shim-kata-v2",
    "opt/kata/bin/kata-runtime",
    "opt/kata/bin/kata-ctl",
    "opt/kata/bin/kata-monitor",
    "opt/kata/bin/kata-collect-data.sh",
)
SHIM_MEMBERS = RUNTIME_MEMBERS[:2]
VERSION_PATTERN = re.compile(r'version:\s*"?v?(\d[^\s,"]*)')
TARBALL_SUFFIXES = (".tar", ".tar.zst", ".tar.xz", ".tar.gz", ".tgz", ".tzst")


@dataclass(frozen=True)
class Runtime:
    version: str
    files: dict[str, bytes]  # bundle path (opt/kata/...) -> content, all executables
    source: str  # URL or local path, as given (for messages)
    sha256: str  # digest of what was given (tarball, binary, or the directory's files)
    recorded: str  # what the bundle records as its source: see recorded_source()


def recorded_source(given: str, digest: str, pinned: str | None, pinned_sha256: str | None) -> str:
    """The runtime's source as a release records it (and its key covers): the pinned URL for the
    pinned tarball however it was given (downloaded, or a local copy of it), else a local runtime's
    name only, never where it lay on the machine that bundled it; its sha256 says which file it was."""
    if pinned is not None and digest == pinned_sha256:
        return pinned
    if "://" in given:
        return given
    return Path(os.path.abspath(given)).name or given


def acquire_runtime(versions: Versions, fetcher: Fetcher, arch: str, local: Path | None,
                    stated_version: str | None) -> Runtime:
    if local is not None:
        if not local.exists():
            raise UsageError(problem=f"{local} does not exist", where=f"--runtime {local}",
                             fix="give a kata-static tarball, an /opt/kata-like directory, or a shim binary")
        files, digest = _from_local(local)
        source = str(local)
        try:
            pinned: Download | None = versions.runtime_download(arch)
        except UsageError:  # nothing pinned for this architecture: a local runtime is all there is
            pinned = None
        recorded = recorded_source(source, digest, pinned.url if pinned else None, pinned.sha256 if pinned else None)
    else:
        download = versions.runtime_download(arch)
        tarball = fetcher.fetch(download.url, download.sha256, what="the Kata runtime")
        files, digest, source = _from_tarball(tarball), download.sha256, download.url
        recorded = download.url
    if not any(member in files for member in SHIM_MEMBERS):
        raise UsageError(problem="no containerd-shim-kata-v2 in the runtime", where=source,
                         fix="give a kata-static tarball or a directory with opt/kata/bin/containerd-shim-kata-v2")
    version = stated_version or _shim_version(files, source)
    return Runtime(version, files, source, digest, recorded)


def _is_program(path: Path) -> bool:
    """An executable (ELF, or a script) rather than an archive: told by content, not by name, so the
    pinned tarball under any name is read as the tarball its digest says it is."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head == b"\x7fELF" or head[:2] == b"#!"


def _from_local(path: Path) -> tuple[dict[str, bytes], str]:
    if path.is_file() and (path.name.endswith(TARBALL_SUFFIXES) or not _is_program(path)):
        return _from_tarball(path), sha256_file(path)
    if path.is_file():
        data = path.read_bytes()
        return {SHIM_MEMBERS[0]: data}, hashlib.sha256(data).hexdigest()
    files: dict[str, bytes] = {}
    root = path
    for member in RUNTIME_MEMBERS:
        for candidate in (root / member, root / PurePosixPath(member).relative_to("opt/kata")):
            if candidate.is_file():
                files[member] = candidate.read_bytes()
                break
    digest = hashlib.sha256(b"".join(hashlib.sha256(files[name]).digest() for name in sorted(files))).hexdigest()
    return files, digest


def _from_tarball(tarball: Path) -> dict[str, bytes]:
    """Only the runtime's own members are read; names are normalised so ./opt/kata/... matches."""
    wanted = set(RUNTIME_MEMBERS)
    files: dict[str, bytes] = {}
    try:
        with libarchive.file_reader(str(tarball)) as archive:
            for entry in archive:
                name = str(PurePosixPath("/", entry.pathname)).lstrip("/")
                if name in wanted and entry.isfile:
                    files[name] = b"".join(entry.get_blocks())
    except libarchive.ArchiveError as exc:
        raise UsageError(problem=f"cannot read the runtime tarball: {exc}", where=str(tarball),
                         fix="give a kata-static .tar.zst/.tar.xz") from exc
    return files


def _shim_version(files: dict[str, bytes], source: str) -> str:
    shim = next(files[member] for member in SHIM_MEMBERS if member in files)
    with tempfile.TemporaryDirectory(prefix="osb-shim-") as tmp:
        binary = Path(tmp) / "containerd-shim-kata-v2"
        binary.write_bytes(shim)
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
        try:
            result = runner.run([binary, "--version"], check=False, timeout=30, what="the runtime's --version")
        except (OSError, BuildError) as exc:
            raise UsageError(problem=f"cannot run the shim to learn its version ({exc})", where=source,
                             fix="state it with --runtime-version") from exc
    match = VERSION_PATTERN.search(result.stdout + result.stderr)
    if result.returncode != 0 or match is None:
        raise UsageError(problem="the shim's --version output names no version", where=source,
                         fix="state it with --runtime-version")
    return match.group(1)


def require_match(runtime: Runtime, agent_versions: dict[str, str]) -> None:
    """The runtime must equal the agent version recorded in every guest asset."""
    for asset, agent_version in agent_versions.items():
        if agent_version != runtime.version:
            raise UsageError(
                problem=f"runtime version {runtime.version} does not match agent version {agent_version} in {asset}",
                where=runtime.source,
                fix="ship the runtime built from the same release as the agent, or rebuild the assets with "
                    "that agent",
            )
