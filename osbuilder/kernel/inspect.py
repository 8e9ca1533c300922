"""What a guest kernel is: format, architecture, version, config_version, and the guest features its
configuration has (DAX, vsock, virtio-fs, virtio-serial, dm-verity/dm-init, initrd codecs, PVH).

The configuration comes from the config-<name> file next to the kernel (found by Kata's naming),
the build record kernel-<name>.json, a .config in the build directory it sits in, or the copy
embedded by CONFIG_IKCONFIG. The image itself gives the format, architecture and version banner
(the bzImage setup header, the arm64 Image header, the ELF header and its PVH entry note).

Seam for `osbuilder inspect`: `detect_kernel(head, size)` recognises a kernel from its first bytes,
`inspect_kernel(path)` returns a JSON-able dict, `render_kernel(report)` the text lines.
"""

from __future__ import annotations

import gzip
import json
import mmap
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from osbuilder.kernel.fragments import parse_config
from osbuilder.kernel.naming import base_of

HEAD_SIZE = 64 * 1024
_ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
_ARM64_MAGIC = b"ARM\x64"
_BANNER = re.compile(rb"Linux version (\d+\.\d+[^\s\x00]*) [^\x00\n]*")
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_PT_NOTE = 4
_BUILD_IMAGE_NAMES = ("vmlinux", "bzImage", "Image", "Image.gz", "zImage")

# feature -> the options that must all be =y
FEATURES: dict[str, tuple[str, ...]] = {
    "dax_nvdimm_root": ("ACPI_NFIT", "LIBNVDIMM", "BLK_DEV_PMEM", "NVDIMM_PFN", "ZONE_DEVICE", "FS_DAX"),
    "virtio_pmem": ("VIRTIO_PMEM",),
    "vsock": ("VSOCKETS", "VIRTIO_VSOCKETS"),
    "virtio_fs": ("FUSE_FS", "VIRTIO_FS"),
    "virtio_fs_dax": ("FUSE_DAX",),
    "virtio_serial_console": ("VIRTIO_CONSOLE",),
    "virtio_blk": ("VIRTIO_BLK",),
    "virtio_scsi": ("SCSI_VIRTIO",),
    "virtio_net": ("VIRTIO_NET",),
    "9p": ("NET_9P_VIRTIO", "9P_FS"),
    "dm_verity": ("BLK_DEV_DM", "DM_VERITY"),
    "dm_init": ("DM_INIT",),
    "initrd": ("BLK_DEV_INITRD",),
    "pvh": ("PVH",),
    "modules": ("MODULES",),
    "tdx_guest": ("INTEL_TDX_GUEST", "TDX_GUEST_DRIVER"),
    "sev_snp_guest": ("AMD_MEM_ENCRYPT", "SEV_GUEST"),
    "ikconfig": ("IKCONFIG",),
}
INITRD_CODECS = {"gzip": "RD_GZIP", "zstd": "RD_ZSTD", "xz": "RD_XZ", "lz4": "RD_LZ4", "bzip2": "RD_BZIP2",
                 "lzma": "RD_LZMA", "lzo": "RD_LZO"}
FILESYSTEMS = {"ext4": "EXT4_FS", "xfs": "XFS_FS", "erofs": "EROFS_FS", "overlay": "OVERLAY_FS"}


def detect_kernel(head: bytes, size: int = 0) -> bool:
    """A bzImage, an arm64 Image (plain or gzip), or a kernel ELF (entry point in the upper half)."""
    return _format(head) is not None


def kernel_arch(head: bytes) -> str | None:
    """The architecture (uname -m name) a kernel's first bytes say it runs on, or None."""
    found = _format(head)
    if found == "bzimage":
        return _bzimage_arch(head)
    if found in ("arm64-image", "arm64-image.gz"):
        return "aarch64"
    if found == "elf":
        return _ELF_MACHINES.get(struct.unpack_from("<H", head, 18)[0])
    return None


def looks_like_config(head: bytes) -> bool:
    text = head[:4096].decode(errors="replace")
    return "# Automatically generated file; DO NOT EDIT." in text or bool(re.search(r"^CONFIG_\w+=", text, re.M))


def _format(head: bytes) -> str | None:
    if head[:4] == b"\x7fELF" and len(head) >= 64 and head[4] == 2:  # ELF64
        return "elf" if _kernel_elf(head) else None
    if len(head) >= 0x206 and head[0x1FE:0x200] == b"\x55\xaa" and head[0x202:0x206] == b"HdrS":
        return "bzimage"
    if len(head) >= 0x40 and head[0x38:0x3C] == _ARM64_MAGIC:
        return "arm64-image"
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 0x40)
        except zlib.error:
            return None
        if inner[0x38:0x3C] == _ARM64_MAGIC:
            return "arm64-image.gz"
    return None


def _kernel_elf(head: bytes) -> bool:
    """A kernel ELF is linked to run in the upper half of the address space: its entry (arm64) or
    its first loadable segment (x86_64, whose entry is the physical PVH/startup address) is there.
    User-space programs, such as the agent, live in the lower half."""
    machine, = struct.unpack_from("<H", head, 18)
    if machine not in _ELF_MACHINES:
        return False
    entry, phoff = struct.unpack_from("<QQ", head, 24)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    addresses = [entry]
    for index in range(phnum):
        base = phoff + index * phentsize
        if base + 24 > len(head):
            break
        p_type, = struct.unpack_from("<I", head, base)
        if p_type == 1:  # PT_LOAD
            addresses.append(struct.unpack_from("<Q", head, base + 16)[0])
            break
    return any(address >= 0xFFFF000000000000 for address in addresses)


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(HEAD_SIZE)


def _banner(data: bytes | mmap.mmap) -> str | None:
    """linux_banner. vmlinux also holds the placeholder that init/version.c links before the final
    timestamp ("... # SMP"); prefer the one with a build number and date."""
    found = [match.group(0).decode(errors="replace").strip() for match in _BANNER.finditer(data)]
    complete = [text for text in found if re.search(r" #\d+ ", text)]
    candidates = complete or found
    return candidates[0] if candidates else None


def _elf_info(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        machine, = struct.unpack_from("<H", data, 18)
        phoff, = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
        pvh = False
        for index in range(phnum):
            base = phoff + index * phentsize
            p_type, = struct.unpack_from("<I", data, base)
            if p_type != _PT_NOTE:
                continue
            offset, = struct.unpack_from("<Q", data, base + 8)
            size, = struct.unpack_from("<Q", data, base + 32)
            pvh = pvh or _has_xen_pvh_note(bytes(data[offset:offset + size]))
        info: dict[str, Any] = {"architecture": _ELF_MACHINES.get(machine), "banner": _banner(data),
                                "pvh_entry_note": pvh if machine == 62 else None}
        info["embedded_config"] = _ikconfig(data)
    return info


def _has_xen_pvh_note(notes: bytes) -> bool:
    position = 0
    while position + 12 <= len(notes):
        namesz, descsz, note_type = struct.unpack_from("<III", notes, position)
        name = notes[position + 12:position + 12 + namesz].rstrip(b"\x00")
        if name == b"Xen" and note_type == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        position += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _ikconfig(data: bytes | mmap.mmap) -> str | None:
    """The gzip'd .config that CONFIG_IKCONFIG embeds between IKCFG_ST and IKCFG_ED."""
    start = data.find(b"IKCFG_ST")
    if start < 0:
        return None
    end = data.find(b"IKCFG_ED", start)
    if end < 0:
        return None
    try:
        return gzip.decompress(bytes(data[start + 8:end])).decode(errors="replace")
    except (OSError, EOFError, zlib.error):
        return None


def _bzimage_arch(head: bytes) -> str:
    """A bzImage is a 64-bit kernel when its setup header (protocol 2.12 and later) says it can be
    loaded above 4 GiB (XLF_KERNEL_64)."""
    protocol, = struct.unpack_from("<H", head, 0x206)
    xloadflags = struct.unpack_from("<H", head, 0x236)[0] if protocol >= 0x20C else 0
    return "x86_64" if xloadflags & 1 else "i386"


def _bzimage_info(path: Path, head: bytes) -> dict[str, Any]:
    protocol, = struct.unpack_from("<H", head, 0x206)
    pointer, = struct.unpack_from("<H", head, 0x20E)
    version_text = None
    if pointer:
        raw = head[0x200 + pointer:0x200 + pointer + 256]
        version_text = raw.split(b"\x00", 1)[0].decode(errors="replace")
    return {"architecture": _bzimage_arch(head),
            "boot_protocol": f"{protocol >> 8}.{protocol & 0xFF:02d}",
            "banner": f"Linux version {version_text}" if version_text else None}


def _arm64_info(data: bytes) -> dict[str, Any]:
    flags, = struct.unpack_from("<Q", data, 0x18)
    page = {0: None, 1: "4K", 2: "16K", 3: "64K"}[(flags >> 1) & 3]
    return {"architecture": "aarch64", "page_size": page, "banner": _banner(data),
            "embedded_config": _ikconfig(data)}


def find_config(path: Path) -> tuple[Path | None, Path | None]:
    """(config file, build record) next to a kernel, by Kata's names or in its build directory."""
    base = base_of(path.name)
    if base is not None:
        config = path.parent / f"config-{base}"
        record = path.parent / f"kernel-{base}.json"
        return (config if config.is_file() else None), (record if record.is_file() else None)
    if path.name in _BUILD_IMAGE_NAMES:
        for directory in list(path.parents)[:5]:
            if (directory / ".config").is_file():
                return directory / ".config", None
    return None, None


def features_of(values: dict[str, str | None]) -> dict[str, Any]:
    def on(symbol: str) -> bool:
        return values.get(symbol) == "y"

    features: dict[str, Any] = {name: all(on(symbol) for symbol in symbols) for name, symbols in FEATURES.items()}
    features["initrd_codecs"] = [codec for codec, symbol in INITRD_CODECS.items() if on(symbol)] \
        if features["initrd"] else []
    features["filesystems"] = [name for name, symbol in FILESYSTEMS.items() if on(symbol)]
    return features


def _config_arch(values: dict[str, str | None]) -> str | None:
    if values.get("X86_64") == "y":
        return "x86_64"
    if values.get("ARM64") == "y":
        return "aarch64"
    return None


def inspect_kernel(path: Path) -> dict[str, Any]:
    """Everything osbuilder can tell about a kernel image (or a kernel .config) without booting it."""
    shown = path
    path = path.resolve()
    head = _read_head(path)
    kind = _format(head)
    report: dict[str, Any] = {"kind": "kernel", "path": str(shown), "file": str(path), "format": kind,
                              "size": path.stat().st_size}
    if shown.is_symlink():
        report["link_target"] = str(shown.readlink())
    image: dict[str, Any] = {}
    config_text: str | None = None
    config_from: str | None = None
    if kind == "elf":
        image = _elf_info(path)
    elif kind == "bzimage":
        image = _bzimage_info(path, head)
    elif kind == "arm64-image":
        image = _arm64_info(path.read_bytes())
    elif kind == "arm64-image.gz":
        image = _arm64_info(gzip.decompress(path.read_bytes()))
    elif looks_like_config(head):
        report["format"] = "config"
        config_text, config_from = path.read_text(errors="replace"), str(path)
    else:
        raise ValueError(f"{shown} is not a kernel image or a kernel configuration")
    embedded = image.pop("embedded_config", None)
    report.update(image)
    config_path, record_path = find_config(path) if kind else (None, None)
    record: dict[str, Any] = {}
    if record_path is not None:
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = {}
        report["record"] = str(record_path)
    if config_text is None and config_path is not None:
        config_text, config_from = config_path.read_text(errors="replace"), str(config_path)
    if config_text is None and embedded:
        config_text, config_from = embedded, "embedded (CONFIG_IKCONFIG)"
    banner = report.get("banner")
    banner_version = banner.split()[2] if banner else None
    header = re.search(r"^# Linux/\S+ (\S+) Kernel Configuration", config_text or "", re.M)
    report["version"] = record.get("kernel_version") or banner_version or (header.group(1) if header else None)
    report["release"] = banner_version
    base = base_of(path.name)
    report["name"] = record.get("name") or base
    report["config_version"] = record.get("config_version") or _config_version_from_name(base, report["version"])
    report["config"] = config_from
    if record:
        report["source"] = record.get("source")
        report["variant"] = record.get("variant")
        report["cache_key"] = record.get("cache_key")
    if config_text is not None:
        values = parse_config(config_text)
        report["features"] = features_of(values)
        report["architecture"] = report.get("architecture") or _config_arch(values)
    else:
        report["features"] = None
    return report


def _config_version_from_name(base: str | None, version: str | None) -> str | None:
    if not base or not version or not base.startswith(version + "-"):
        return None
    rest = base[len(version) + 1:]
    number = rest.split("-", 1)[0]
    return number if number.isdigit() else None


def render_kernel(report: dict[str, Any]) -> list[str]:
    lines = [f"{report['path']}: Linux kernel, {report.get('format')}, {report.get('architecture') or '?'}, "
             f"version {report.get('version') or '?'}, config_version {report.get('config_version') or '?'}"]
    if report.get("banner"):
        lines.append(f"  banner: {report['banner']}")
    if report.get("pvh_entry_note") is not None:
        lines.append(f"  PVH entry note: {'yes' if report['pvh_entry_note'] else 'no'}")
    features = report.get("features")
    if features is None:
        lines.append("  configuration: not found (no config-<name> or .config next to it, no CONFIG_IKCONFIG)")
        return lines
    lines.append(f"  configuration: {report.get('config')}")
    flags = [name for name in FEATURES if features.get(name)]
    missing = [name for name in FEATURES if not features.get(name)]
    lines.append(f"  features: {', '.join(flags)}")
    lines.append(f"  absent: {', '.join(missing)}")
    lines.append(f"  initrd codecs: {', '.join(features['initrd_codecs']) or 'none'}")
    lines.append(f"  root filesystems: {', '.join(features['filesystems']) or 'none'}")
    if report.get("source"):
        source = report["source"]
        lines.append(f"  source: {source.get('kind')} {source.get('package_version') or source.get('version') or ''} "
                     f"({(source.get('sha256') or source.get('tree_digest') or '')[:16]}...)")
    return lines
