"""The agent to install: a local binary (--agent), a release tarball (--agent-tarball), or the
reference agent built from agent/ (osbuilder.agent_build).

A file or a tarball is read and checked while planning; the reference agent is only planned then
(its build's cache key stands for it in the rootfs key) and compiled by `prepare`, so a rootfs that
is in the cache never needs the compiler.

A tarball is checked member by member before any work starts: no absolute paths, no `..`, no
symlink or hard link that leads out of the rootfs, only files, directories and links, and the
agent binary itself at usr/bin/<name>. Any violation is bad input (exit 2).

The agent version recorded in osbuilder.yaml is versions.yaml's assets.agent.version, unless the
tarball carries a top-level `VERSION` file (its first non-empty line); that file is not installed.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.agent_build import AgentPlan, build_reference_agent
from osbuilder.cache import Cache, sha256_file
from osbuilder.errors import UsageError

ELF_MAGIC = b"\x7fELF"
# e_machine (ELF header offset 18, little-endian on both) of the architectures osbuilder builds for
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
VERSION_MEMBER = "VERSION"
# Under /usr/bin. Here rather than in rootfs.plan: the option tables, which every command loads at
# start-up, name it, and the plan would pull in the bootstrappers with it.
DEFAULT_AGENT_NAME = "kata-agent"


@dataclass(frozen=True)
class TarballMember:
    path: str  # normalised, relative to the rootfs
    kind: str  # "file", "dir", "symlink", "hardlink"
    mode: int
    linkname: str = ""  # symlink target as written, or hard link target (normalised)
    data: bytes = b""


@dataclass(frozen=True)
class AgentSource:
    kind: str  # "file", "tarball" or "default"
    path: Path  # what the user gave (or the cached reference build)
    sha256: str  # of that file: part of the cache key
    binary: bytes  # the agent executable, before stripping
    version: str | None = None  # carried by the tarball
    members: tuple[TarballMember, ...] = ()  # the tarball's other members, in order


def _check_elf(data: bytes, where: str, path: Path) -> None:
    if not data.startswith(ELF_MAGIC):
        raise UsageError(problem=f"{path} is not an ELF executable", where=where,
                         fix="give the agent binary itself (a static ELF executable)")


def elf_arch(data: bytes) -> str:
    """The architecture (uname -m name) an ELF executable is for, or its e_machine number."""
    machine = int.from_bytes(data[18:20], "big" if data[5:6] == b"\x02" else "little")
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def check_arch(agent: AgentSource, arch: str, where: str) -> None:
    """Bad input unless the agent runs on the guest's architecture: the rootfs would build (stripping
    it needs the target's strip) and the guest never reach its agent."""
    found = elf_arch(agent.binary)
    if found != arch:
        raise UsageError(problem=f"the agent {agent.path} is built for {found}, the rootfs for {arch}",
                         where=f"{where} {agent.path}",
                         fix=f"give an agent built for {arch}, or omit {where} to cross-build the reference agent")


def from_file(path: Path, *, kind: str = "file", where: str = "--agent") -> AgentSource:
    if not path.exists():
        raise UsageError(problem=f"agent file {path} does not exist", where=f"{where} {path}",
                         fix="check the path, or omit --agent to build the reference agent from agent/")
    if not path.is_file():
        raise UsageError(problem=f"{path} is not a regular file", where=f"{where} {path}",
                         fix="give the agent executable")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(problem=f"cannot read {path}: {exc.strerror}", where=f"{where} {path}") from exc
    _check_elf(data, f"{where} {path}", path)
    return AgentSource(kind, path, hashlib.sha256(data).hexdigest(), data)


def _normalise_member(name: str, where: str) -> str:
    if name.startswith("/"):
        raise UsageError(problem=f"member '{name}' has an absolute path", where=where,
                         fix="rebuild the tarball with relative paths (tar -C DESTDIR .)")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UsageError(problem=f"member '{name}' contains '..'", where=where,
                         fix="the tarball tries to write outside the rootfs; do not use it")
    return "/".join(parts)


def _inside(path: str) -> bool:
    return path != ".." and not path.startswith("../")


def from_tarball(path: Path, agent_name: str) -> AgentSource:
    where = f"--agent-tarball {path}"
    if not path.is_file():
        raise UsageError(problem=f"agent tarball {path} does not exist" if not path.exists()
                         else f"{path} is not a regular file", where=where,
                         fix="give a tar.zst or tar.xz with usr/bin/" + agent_name)
    members: list[TarballMember] = []
    seen: set[str] = set()
    version: str | None = None
    binary: bytes | None = None
    agent_path = f"usr/bin/{agent_name}"
    import libarchive  # only agent tarballs need it

    try:
        with libarchive.file_reader(str(path)) as archive:
            for entry in archive:
                name = _normalise_member(entry.pathname, where)
                if not name:
                    continue
                if entry.issym:
                    target = entry.linkpath or ""
                    start = "" if target.startswith("/") else posixpath.dirname(name)
                    resolved = posixpath.normpath(posixpath.join(start, target.lstrip("/")))
                    if not _inside(resolved):
                        raise UsageError(problem=f"symlink '{name}' -> '{target}' points outside the rootfs",
                                         where=where, fix="the tarball is unsafe; do not use it")
                    members.append(TarballMember(name, "symlink", 0o777, target))
                elif entry.islnk:
                    target = _normalise_member(entry.linkpath or "", where)
                    if target not in seen:
                        raise UsageError(problem=f"hard link '{name}' -> '{entry.linkpath}' does not name an "
                                         "earlier member of the tarball", where=where,
                                         fix="the tarball is unsafe or damaged; do not use it")
                    members.append(TarballMember(name, "hardlink", entry.mode & 0o7777, target))
                elif entry.isdir:
                    members.append(TarballMember(name, "dir", entry.mode & 0o7777))
                elif entry.isreg:
                    data = b"".join(entry.get_blocks())
                    if name == VERSION_MEMBER:
                        lines = [line.strip() for line in data.decode(errors="replace").splitlines()]
                        version = next((line for line in lines if line and not line.startswith("#")), None)
                    elif name == agent_path:
                        binary = data
                        members.append(TarballMember(name, "file", entry.mode & 0o7777))
                    else:
                        members.append(TarballMember(name, "file", entry.mode & 0o7777, data=data))
                else:
                    raise UsageError(problem=f"member '{name}' is a device, fifo or socket", where=where,
                                     fix="an agent tarball holds only files, directories and links")
                seen.add(name)
    except libarchive.ArchiveError as exc:
        raise UsageError(problem=f"cannot read the tarball: {exc}", where=where,
                         fix="give a valid tar.zst or tar.xz (kata-static-agent.tar.zst)") from exc
    if binary is None:
        raise UsageError(problem=f"the tarball has no regular file {agent_path}", where=where,
                         fix=f"the agent must be at usr/bin/{agent_name} (or pass --agent-name)")
    _check_elf(binary, where, path)
    return AgentSource("tarball", path, sha256_file(path), binary, version, tuple(members))


@dataclass(frozen=True)
class AgentChoice:
    """The agent of a plan: a checked file or tarball, or the reference agent's planned build."""

    name: str  # the file name under /usr/bin (--agent-name)
    given: AgentSource | None  # --agent or --agent-tarball, read and checked
    reference: AgentPlan | None  # neither: the reference agent, built by prepare()

    @property
    def kind(self) -> str:
        return self.given.kind if self.given is not None else "default"

    @property
    def version(self) -> str | None:
        """The tarball's VERSION, if it has one."""
        return self.given.version if self.given is not None else None

    def key_inputs(self) -> dict[str, Any]:
        if self.given is not None:
            return {"source": self.given.kind, "sha256": self.given.sha256, "name": self.name}
        assert self.reference is not None
        return {"source": "default", "build": self.reference.cache_key, "name": self.name}

    def source(self, cache: Cache, verbose: bool = False) -> AgentSource:
        """The agent's bytes: the given file, or the reference agent (built now if not cached)."""
        if self.given is not None:
            return self.given
        assert self.reference is not None
        built = build_reference_agent(self.reference, cache, verbose)
        return from_file(built, kind="default", where="the reference agent")
