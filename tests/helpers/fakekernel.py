"""A tiny stand-in for a Linux source tree, so the whole build pipeline runs in a second.

Its Makefile takes what osbuilder passes to the real one (-C, O=, ARCH=, CROSS_COMPILE=, CC=,
KCONFIG_ALLCONFIG=, allnoconfig, olddefconfig, vmlinux, bzImage, Image, Image.gz) and a small Python
"kconfig" that knows only the symbols listed in its Kconfig file, with `depends on` (one symbol) and
`range`: unknown symbols vanish, symbols with unmet dependencies are not written, out-of-range
values fall back to the default, exactly the three ways the real kconfig drops a request.

The images it "compiles" carry real headers (ELF with an upper-half load address and a PVH note,
the bzImage setup header, the arm64 Image header), so inspection can be tested on them. Each make
goal is appended to $FAKEKERNEL_LOG (with the variables it got), so tests can tell a cache hit
(nothing run) from a build. CONFIG_FAIL_BUILD=y in the configuration makes the compile fail.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

VERSION = "6.12.107"

KCONFIG = """\
config X86_64
config ARM64
config SMP
config PCI
config VIRTIO_PCI
	depends on PCI
config VIRTIO_BLK
	depends on VIRTIO_PCI
config VIRTIO_CONSOLE
	depends on VIRTIO_PCI
config VSOCKETS
config VIRTIO_VSOCKETS
	depends on VSOCKETS
config MODULES
config NR_CPUS
	range 2 512
	default 64
config SOUND
config SND_HDA_INTEL
	depends on SOUND_CARDS_THAT_NOBODY_ENABLES
config PVH
config BLK_DEV_INITRD
config RD_GZIP
	depends on BLK_DEV_INITRD
config FAIL_BUILD
config LOCALVERSION
	string
"""

FAKE_TOOL = r'''
import gzip, json, os, re, struct, sys
from pathlib import Path

goal = sys.argv[1]
tree = Path(__file__).resolve().parent.parent
out = Path(os.environ.get("O") or tree)
arch = os.environ.get("ARCH", "")
log = os.environ.get("FAKEKERNEL_LOG")
if log:
    with open(log, "a") as handle:
        names = ("ARCH", "CROSS_COMPILE", "CC", "RUSTC", "MAKEFLAGS", "KBUILD_BUILD_USER", "KBUILD_BUILD_HOST",
                 "KBUILD_BUILD_TIMESTAMP", "SOURCE_DATE_EPOCH", "CCACHE_DIR", "CCACHE_DISABLE")
        handle.write(json.dumps({"goal": goal, "env": {n: os.environ.get(n, "") for n in names}}) + "\n")
version = "VERSION_PLACEHOLDER"

def symbols():
    found, current = {}, None
    for line in (tree / "Kconfig").read_text().splitlines():
        if line.startswith("config "):
            current = line.split()[1]
            found[current] = {"depends": None, "range": None, "default": None, "type": "bool"}
        elif current and line.strip().startswith("depends on"):
            found[current]["depends"] = line.split()[-1]
        elif current and line.strip().startswith("range"):
            low, high = line.split()[1:3]
            found[current]["range"] = (int(low), int(high))
            found[current]["type"] = "int"
        elif current and line.strip().startswith("default"):
            found[current]["default"] = line.split()[1]
        elif current and line.strip() == "string":
            found[current]["type"] = "string"
    return found

def read(path):
    values = {}
    for line in Path(path).read_text().splitlines():
        m = re.fullmatch(r"CONFIG_(\w+)=(.*)", line)
        if m:
            values[m.group(1)] = m.group(2)
        m = re.fullmatch(r"# CONFIG_(\w+) is not set", line)
        if m:
            values[m.group(1)] = None
    return values

def resolve(requested):
    known = symbols()
    if arch == "x86_64":
        requested["X86_64"] = "y"
    if arch == "arm64":
        requested["ARM64"] = "y"
    values = {}
    for name, info in known.items():
        wanted = requested.get(name)
        if info["type"] == "int":
            low, high = info["range"]
            default = info["default"] or str(low)
            values[name] = wanted if wanted is not None and low <= int(wanted) <= high else default
        elif info["type"] == "string":
            values[name] = wanted if wanted is not None else '""'
        else:
            values[name] = "y" if wanted == "y" else None
    changed = True
    while changed:  # drop symbols whose dependency is off
        changed = False
        for name, info in known.items():
            dep = info["depends"]
            if dep and name in values and (dep not in values or values[dep] != "y"):
                del values[name]
                changed = True
    return values

def write_config(values):
    lines = ["#", f"# Linux/{arch} {version} Kernel Configuration", "#"]
    for name, value in values.items():
        lines.append(f"# CONFIG_{name} is not set" if value is None else f"CONFIG_{name}={value}")
    (out / ".config").write_text("\n".join(lines) + "\n")
    (out / "include" / "config").mkdir(parents=True, exist_ok=True)
    (out / "include" / "config" / "kernel.release").write_text(version + "\n")

def banner():
    user = os.environ.get("KBUILD_BUILD_USER", "user")
    host = os.environ.get("KBUILD_BUILD_HOST", "host")
    stamp = os.environ.get("KBUILD_BUILD_TIMESTAMP", "now")
    return f"Linux version {version} ({user}@{host}) (fake gcc) #1 SMP {stamp}".encode()

def elf(machine):
    note_name = b"Xen\0"
    note = struct.pack("<III", 4, 4, 18) + note_name + struct.pack("<I", 0x1000000)
    body = banner() + b"\0"
    phoff, phnum = 64, 2
    note_offset = 64 + 56 * phnum
    data_offset = note_offset + len(note)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x1000000, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0xFFFFFFFF81000000, 0x1000000, 4096, 4096, 0x200000)
    notes = struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(note), len(note), 4)
    return header + load + notes + note + body

def bzimage():
    data = bytearray(0x400)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, 0x020F)
    text = banner()[len(b"Linux version "):] + b"\0"
    struct.pack_into("<H", data, 0x20E, 0x400 - 0x200)
    struct.pack_into("<H", data, 0x236, 1)
    return bytes(data) + text + b"compressed kernel"

def arm64_image():
    data = bytearray(0x40)
    struct.pack_into("<Q", data, 0x18, 0b0010)
    data[0x38:0x3C] = b"ARM\x64"
    return bytes(data) + banner() + b"\0"

def compile_lines():
    for name in ("init/main.o", "kernel/fork.o", "mm/memory.o", "fs/dax.o"):
        print(f"  CC      {name}", flush=True)

config = out / ".config"
if goal == "allnoconfig":
    allconfig = os.environ.get("KCONFIG_ALLCONFIG")
    write_config(resolve(read(allconfig) if allconfig else {}))
    print("#\n# configuration written to .config\n#")
elif goal == "olddefconfig":
    write_config(resolve(read(config)))
else:
    values = read(config)
    if values.get("FAIL_BUILD") == "y":
        print("fake.c:1:1: error: CONFIG_FAIL_BUILD asked for a failure", file=sys.stderr)
        sys.exit(2)
    compile_lines()
    if goal == "vmlinux":
        (out / "vmlinux").write_bytes(elf(62 if arch == "x86_64" else 183))
        (out / "System.map").write_text("ffffffff81000000 T _text\n")
    elif goal == "bzImage":
        (out / "arch/x86/boot").mkdir(parents=True, exist_ok=True)
        (out / "arch/x86/boot/bzImage").write_bytes(bzimage())
    elif goal == "Image":
        (out / "arch/arm64/boot").mkdir(parents=True, exist_ok=True)
        (out / "arch/arm64/boot/Image").write_bytes(arm64_image())
        (out / "vmlinux").write_bytes(elf(183))
        (out / "System.map").write_text("ffff800080000000 T _text\n")
    elif goal == "Image.gz":
        (out / "arch/arm64/boot").mkdir(parents=True, exist_ok=True)
        (out / "arch/arm64/boot/Image.gz").write_bytes(gzip.compress(arm64_image(), mtime=0))
    print(f"  LD      {goal}", flush=True)
'''

MAKEFILE = """\
# SPDX-License-Identifier: GPL-2.0
VERSION = {major}
PATCHLEVEL = {minor}
SUBLEVEL = {sub}
EXTRAVERSION =
NAME = Fake Tree

export O ARCH CROSS_COMPILE CC KCONFIG_ALLCONFIG RUSTC LOCALVERSION
GOALS := allnoconfig olddefconfig vmlinux bzImage Image Image.gz
.PHONY: $(GOALS)
$(GOALS):
\t@{python} $(CURDIR)/scripts/fake.py $@
"""


def make_tree(root: Path, version: str = VERSION, kconfig: str = KCONFIG) -> Path:
    """Write the fake tree at root (the directory is created) and return it."""
    major, minor, sub = version.split(".")
    (root / "scripts").mkdir(parents=True)
    (root / "Makefile").write_text(MAKEFILE.format(major=major, minor=minor, sub=sub, python=sys.executable))
    (root / "Kconfig").write_text(kconfig)
    (root / "scripts" / "fake.py").write_text(FAKE_TOOL.replace("VERSION_PLACEHOLDER", version))
    (root / "init").mkdir()
    (root / "init" / "main.c").write_text("int start_kernel(void)\n{\n\treturn 0;\n}\n")
    mtime = 1_700_000_000
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime))
    return root


def tarball(tree: Path, top: str) -> bytes:
    """The tree as a .tar.xz with one top directory, like a kernel.org release."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        archive.add(tree, arcname=top, filter=lambda info: _normalise(info))
    return buffer.getvalue()


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


FAKE_KCONFIG_FRAGMENTS = {
    "common/base.conf": "# Base.\nCONFIG_SMP=y\nCONFIG_PCI=y\n# CONFIG_MODULES is not set\n",
    "common/virtio.conf": "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_CONSOLE=y\n",
    "common/vsock.conf": "# !confidential\nCONFIG_VSOCKETS=y\nCONFIG_VIRTIO_VSOCKETS=y\n",
    "common/initrd.conf": "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\n",
    "x86_64/base.conf": "CONFIG_PVH=y\nCONFIG_NR_CPUS=256\n",
    "arm64/base.conf": "CONFIG_NR_CPUS=128\n",
    "debug/debug.conf": "CONFIG_SOUND=y\n",
    "measured/verity.conf": "CONFIG_LOCALVERSION=\"\"\n",
}


def make_configs(root: Path, fragments: dict[str, str] | None = None, config_version: str = "7",
                 whitelist: str = "# nothing\n") -> Path:
    """A kernel-configs directory for the fake tree's symbols."""
    for name, text in (fragments or FAKE_KCONFIG_FRAGMENTS).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "config_version").write_text(config_version + "\n")
    (root / "whitelist.conf").write_text(whitelist)
    return root
