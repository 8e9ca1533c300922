"""Inspect a Kata disk image: both MBRs, the pfn block, the partitions, the filesystem, dm-verity
and the rootfs's osbuilder.yaml, all without mounting."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from osbuilder import runner
from osbuilder.errors import CommandError
from osbuilder.image import erofs, layout, mbr, verity
from osbuilder.image.layout import ImageLayout
from osbuilder.image.superblock import FsInfo, probe
from osbuilder.inspectors import InspectOptions, Inspector, Report, parse_json
from osbuilder.kernelcmdline import VerityLine
from osbuilder.metadata import MANIFEST_JSON as ROOTFS_MANIFEST
from osbuilder.metadata import OSBUILDER_YAML


def detect(head: bytes, size: int) -> bool:
    if len(head) < 512 or head[510:512] != mbr.BOOT_MAGIC or head[0x202:0x206] == b"HdrS":  # not a bzImage
        return False
    try:
        table = mbr.decode(head[:512])
    except mbr.MbrError:
        return False
    return bool(table.partitions)


def read_members(path: Path, info: FsInfo, offset: int, members: tuple[str, ...]) -> dict[str, tuple[str | None, str]]:
    """Files of the image's filesystem as text, without mounting, each with how it was read (or why
    not). One tool run for all of them: debugfs, the in-place erofs reader, or one extraction."""
    if info.fs_type == "ext4":
        return _debugfs_dump(path, offset, members)
    if info.fs_type == "erofs":
        found: dict[str, tuple[str | None, str]] = {}
        fd = os.open(path, os.O_RDONLY)
        try:
            reader = erofs.Reader(fd, offset)
            for member in members:
                data = reader.read_file(member)
                found[member] = (data.decode(errors="replace"), "erofs reader") if data is not None else \
                    (None, "not present")
            return found
        except erofs.ErofsError as error:
            reason = str(error)
        finally:
            os.close(fd)
        extracted = _erofs_extract(path, offset, info, members)
        return {member: (extracted[member], f"fsck.erofs --extract ({reason} in place)") for member in members}
    return {member: (None, "not read: xfs has no tool that reads a file without mounting") for member in members}


def _debugfs_dump(path: Path, offset: int, members: tuple[str, ...]) -> dict[str, tuple[str | None, str]]:
    debugfs = runner.require_tool("debugfs", "read files from ext4 images")
    with tempfile.TemporaryDirectory(prefix="osbuilder-inspect-") as work:
        commands = Path(work) / "commands"
        commands.write_text("".join(f"dump /{member} {work}/{index}\n" for index, member in enumerate(members)))
        try:
            runner.run([debugfs, "-f", commands, f"{path}?offset={offset}"], what="debugfs dump")
        except CommandError as error:
            return {member: (None, f"debugfs failed: {error.problem}") for member in members}
        found: dict[str, tuple[str | None, str]] = {}
        for index, member in enumerate(members):
            dumped = Path(work) / str(index)
            found[member] = (dumped.read_text(errors="replace"), "debugfs") if dumped.is_file() else \
                (None, "not present")
        return found


def _erofs_extract(path: Path, offset: int, info: FsInfo, members: tuple[str, ...]) -> dict[str, str | None]:
    """Fallback for compressed files: copy the filesystem out and let fsck.erofs extract it."""
    fsck = runner.require_tool("fsck.erofs", "read files from erofs images")
    with tempfile.TemporaryDirectory(prefix="osbuilder-inspect-") as work:
        blob = Path(work) / "fs.erofs"
        with path.open("rb") as source, blob.open("wb") as target:
            os.copy_file_range(source.fileno(), target.fileno(), info.size, offset, 0)
        runner.run([fsck, f"--extract={work}/tree", "--no-preserve", os.fspath(blob)], what="fsck.erofs --extract")
        files = {member: Path(work) / "tree" / member for member in members}
        return {member: file.read_text(errors="replace") if file.is_file() else None for member, file in files.items()}


def _verity(path: Path, image: ImageLayout, options: InspectOptions, problems: list[str]) -> dict[str, Any]:
    """Find the root hash record that belongs to this image and check it against the hash area."""
    report: dict[str, Any] = {"hash_partition": image.hash.to_json() if image.hash else None}
    candidates = [options.root_hash_file] if options.root_hash_file else sorted(path.parent.glob("root_hash*.txt"))
    checked = []
    matched: tuple[Path, VerityLine] | None = None
    fd = os.open(path, os.O_RDONLY)
    try:
        for candidate in candidates:
            try:
                line = VerityLine.parse(candidate.read_text())
            except (OSError, ValueError) as error:
                checked.append({"file": str(candidate), "matches": False, "reason": str(error)})
                continue
            fits = image.hash is not None and line.data_blocks * line.data_block_size <= image.root.size
            matches = fits and image.hash is not None and verity.top_block_matches(fd, line, image.hash.offset)
            checked.append({"file": str(candidate), "matches": matches})
            if matches and matched is None:
                matched = (candidate, line)
        if matched is not None:
            report["root_hash_file"] = str(matched[0])
            report["params"] = matched[1].to_json()
            report["line"] = matched[1].format()
            report["kernel_params_nvdimm"] = image.kernel_root_params(nvdimm=True, verity=matched[1]) \
                if image.dax_header else None
            report["kernel_params_virtio_blk"] = image.kernel_root_params(nvdimm=False, verity=matched[1])
            if options.verify and image.hash is not None:
                found = verity.verify_region(fd, matched[1], data_offset=image.root.offset,
                                             hash_offset=image.hash.offset)
                report["verified"] = not found
                problems.extend(f"dm-verity: {problem}" for problem in found)
    finally:
        os.close(fd)
    report["candidates"] = checked
    if options.root_hash_file and matched is None:
        problems.append(f"{options.root_hash_file} does not belong to this image (its root hash does not match "
                        "the hash partition)")
    if image.hash is not None and matched is None and not options.root_hash_file:
        report["note"] = "measured image, but no root_hash*.txt next to it matches its hash partition"
    return report


def inspect(path: Path, options: InspectOptions) -> Report:
    head, size = layout.read_head(path)
    decoded, problems, raw = layout.decode(head, size)
    data: dict[str, Any] = {"path": str(path), "size": size, "headers": raw}
    text = [f"{path}: disk image, {size} bytes ({size / layout.MIB:g} MiB)"]
    if decoded is None:
        return Report("image", data, text, problems or ["not a Kata image"])
    info = probe(path, decoded.root.offset)
    data["layout"] = decoded.to_json()
    data["layout"].pop("mbr1", None)
    data["layout"].pop("mbr2", None)
    pfn_text = "none (plain image)"
    if decoded.pfn is not None:
        pfn_text = (f"dataoff {decoded.pfn.dataoff}, align {decoded.pfn.align}, mode {decoded.pfn.mode}, "
                    f"version {decoded.pfn.version_major}.{decoded.pfn.version_minor}, checksum "
                    f"0x{decoded.pfn.checksum:016x} ({'ok' if decoded.pfn.checksum_ok else 'BAD'})")
    text.append(f"  DAX header: {'yes' if decoded.dax_header else 'no'}; pfn info block: {pfn_text}")
    for name in ("mbr1", "mbr2"):
        table = raw.get(name)
        if isinstance(table, dict):
            parts = ", ".join(f"p{i + 1} {p['offset']}+{p['size']} type {p['type']}{' boot' if p['bootable'] else ''}"
                              for i, p in enumerate(table["partitions"]))
            text.append(f"  {'MBR #1 at 0' if name == 'mbr1' else f'MBR #2 at {decoded.dataoff}'}: "
                        f"signature {table['disk_signature']}, {parts}")
    if info is None:
        problems.append(f"no ext4, xfs or erofs filesystem at offset {decoded.root.offset}")
    else:
        data["filesystem"] = info.to_json()
        text.append(f"  filesystem: {info.fs_type} at {decoded.root.offset}, {info.size} bytes, uuid {info.uuid}")
        if info.size > decoded.root.size:
            problems.append(f"the {info.fs_type} filesystem ({info.size} bytes) is larger than its partition "
                            f"({decoded.root.size} bytes)")
        decoded = ImageLayout(decoded.size, decoded.dax_header, decoded.measured, decoded.disk_signature, decoded.root,
                              decoded.hash, info.fs_type, decoded.pfn)
        data["layout"]["fs_type"] = info.fs_type
        data["kernel_params"] = {
            "nvdimm": decoded.kernel_root_params(nvdimm=True) if decoded.dax_header else None,
            "virtio_blk": decoded.kernel_root_params(nvdimm=False),
        }
        read = read_members(path, info, decoded.root.offset, (OSBUILDER_YAML, ROOTFS_MANIFEST))
        content, how = read[OSBUILDER_YAML]
        metadata: dict[str, Any] = {"path": "/" + OSBUILDER_YAML, "read_by": how}
        if content is not None:
            try:
                metadata["content"] = yaml.safe_load(content)
            except yaml.YAMLError as error:
                metadata["content"] = None
                metadata["error"] = str(error).splitlines()[0]
            metadata["text"] = content
        data["osbuilder"] = metadata
        manifest_text, _how = read[ROOTFS_MANIFEST]
        data["rootfs_manifest"] = parse_json(manifest_text)
        summary = metadata.get("content") or {}
        if isinstance(summary, dict):
            version = (summary.get("osbuilder") or {}).get("version") if isinstance(summary.get("osbuilder"), dict) else None
            distro = summary.get("base-distro") or {}
            text.append(f"  osbuilder.yaml: {how}" + (f", osbuilder {version}" if version else "")
                        + (f", {distro.get('name')} {distro.get('version')}" if isinstance(distro, dict) and distro else ""))
    if decoded.measured or options.root_hash_file:
        data["verity"] = _verity(path, decoded, options, problems)
        verity_data = data["verity"]
        text.append("  dm-verity: hash partition " + (f"at {decoded.hash.offset}, {decoded.hash.size} bytes"
                                                      if decoded.hash else "missing")
                    + (f"; root hash {verity_data['params']['root_hash']} from {verity_data['root_hash_file']}"
                       if "params" in verity_data else "; no matching root_hash*.txt"))
    return Report("image", data, text, problems)


INSPECTOR = Inspector("image", "Kata disk image (MBR, optional NVDIMM pfn block, ext4/xfs/erofs)", detect, inspect,
                      order=40)
