"""Inspect an initrd: compression, entries, the /init the kernel runs, the agent and osbuilder.yaml."""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libarchive
import yaml
from libarchive import ffi
from libarchive.exception import ArchiveError

from osbuilder.initrd.compression import CODECS, LZ4_FRAME_MAGIC, detect
from osbuilder.inspectors import InspectOptions, Inspector, Report, parse_json
from osbuilder.metadata import MANIFEST_JSON as ROOTFS_MANIFEST
from osbuilder.metadata import OSBUILDER_YAML
from osbuilder.tree import follow_links

DEFAULT_AGENT = "usr/bin/kata-agent"

for _name, _restype in (("entry_ino64", ffi.c_longlong), ("entry_nlink", ffi.c_uint)):
    if not hasattr(ffi, _name):
        ffi.ffi(_name, [ffi.c_archive_entry_p], _restype)


def detect_initrd(head: bytes, size: int) -> bool:
    # Asked after the more specific inspectors (image, kernel): a compressed stream is taken as an
    # initrd, and inspect() says so if it holds no cpio archive.
    return detect(head) is not None or head.startswith(LZ4_FRAME_MAGIC)


def _normal(name: str) -> str:
    name = name[2:] if name.startswith("./") else name
    return "" if name in (".", "") else name.strip("/")


@dataclass
class _Member:
    name: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str
    ino: int
    nlink: int


def _scan(path: Path) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    with libarchive.file_reader(str(path)) as archive:
        for entry in archive:
            name = _normal(entry.pathname)
            members[name] = _Member(name, entry.mode, entry.uid, entry.gid, entry.size if entry.isreg else 0,
                                    entry.linkpath if entry.issym else "", ffi.entry_ino64(entry._entry_p),
                                    ffi.entry_nlink(entry._entry_p))
    return members


def _resolve(members: dict[str, _Member], path: str) -> str | None:
    """Follow symlinks inside the archive as the kernel would after unpacking it."""

    def lookup(relative: str) -> tuple[bool, str | None]:
        member = members.get(relative)
        if member is None:
            return False, None
        return True, member.target if stat.S_ISLNK(member.mode) else None

    return follow_links(path, lookup)


def _data_holder(members: dict[str, _Member], name: str) -> str:
    """For a hard-linked file the data travels with one of its names (the last, in newc)."""
    member = members[name]
    if member.size or member.nlink < 2:
        return name
    for other in members.values():
        if other.ino == member.ino and other.size and not stat.S_ISDIR(other.mode):
            return other.name
    return name


def _read(path: Path, wanted: set[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with libarchive.file_reader(str(path)) as archive:
        for entry in archive:
            name = _normal(entry.pathname)
            if name in wanted:
                found[name] = b"".join(entry.get_blocks())
    return found


def inspect(path: Path, options: InspectOptions) -> Report:
    with path.open("rb") as handle:
        head = handle.read(16)
        size = handle.seek(0, 2)
    codec = detect(head)
    data: dict[str, Any] = {"path": str(path), "size": size}
    problems: list[str] = []
    if codec is None:
        reason = ("lz4 frame format: the kernel unpacks only the legacy format (lz4 -l)"
                  if head.startswith(LZ4_FRAME_MAGIC) else "unknown compression")
        return Report("initrd", data, [f"{path}: {reason}"], [reason])
    data["compression"] = codec.name
    data["kernel_option"] = codec.kernel_option
    try:
        members = _scan(path)
    except ArchiveError as error:
        return Report("initrd", data, [f"{path}: not a readable cpio archive"], [f"cannot read the archive: {error}"])
    data["entries"] = len(members)
    data["data_bytes"] = sum(member.size for member in members.values())
    init = members.get("init")
    init_info: dict[str, Any] = {"present": init is not None}
    resolved_init = None
    if init is None:
        problems.append("no /init: the kernel has nothing to run")
    else:
        init_info["symlink"] = init.target or None
        resolved_init = _resolve(members, "init")
        init_info["resolves_to"] = "/" + resolved_init if resolved_init is not None else None
        if resolved_init is None:
            problems.append(f"/init points to {init.target}, which is not in the archive")
        elif not stat.S_ISREG(members[resolved_init].mode) or not members[resolved_init].mode & 0o111:
            problems.append(f"/init resolves to /{resolved_init}, which is not an executable file")
    data["init"] = init_info
    systemd = resolved_init is not None and resolved_init.endswith("systemd/systemd")
    init_info["mode"] = "systemd" if systemd else "agent" if resolved_init else None
    wanted = {OSBUILDER_YAML, ROOTFS_MANIFEST}
    agent_path = None
    if resolved_init is not None and not systemd:
        agent_path = resolved_init
    else:
        agent_path = _resolve(members, DEFAULT_AGENT)
    if agent_path is not None and agent_path in members:
        wanted.add(_data_holder(members, agent_path))
    contents = _read(path, wanted)
    if agent_path is not None and agent_path in members:
        blob = contents.get(_data_holder(members, agent_path), b"")
        data["agent"] = {"path": "/" + agent_path, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    else:
        data["agent"] = None
        problems.append(f"no agent: /{DEFAULT_AGENT} is not in the archive" if systemd else "no agent found")
    metadata: dict[str, Any] = {"path": "/" + OSBUILDER_YAML, "present": OSBUILDER_YAML in contents}
    if OSBUILDER_YAML in contents:
        text_content = contents[OSBUILDER_YAML].decode(errors="replace")
        try:
            metadata["content"] = yaml.safe_load(text_content)
        except yaml.YAMLError as error:
            metadata["error"] = str(error).splitlines()[0]
        metadata["text"] = text_content
    data["osbuilder"] = metadata
    data["rootfs_manifest"] = parse_json(contents.get(ROOTFS_MANIFEST))
    text = [
        f"{path}: initrd, {size} bytes, {codec.name} ({codec.kernel_option}), {len(members)} entries, "
        f"{data['data_bytes']} bytes of file data",
        "  /init: " + (f"-> {init.target}" if init and init.target else "file" if init else "MISSING")
        + (f" (resolves to /{resolved_init}, {init_info['mode']} mode)" if resolved_init else ""),
        "  agent: " + (f"{data['agent']['path']}, {data['agent']['size']} bytes, sha256 {data['agent']['sha256']}"
                       if data["agent"] else "not found"),
        "  osbuilder.yaml: " + ("present" if metadata["present"] else "not present"),
    ]
    return Report("initrd", data, text, problems)


INSPECTOR = Inspector("initrd", "initrd (newc cpio, " + "/".join(CODECS) + ")", detect_initrd, inspect, order=60)
