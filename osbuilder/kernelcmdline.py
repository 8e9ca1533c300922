"""The guest kernel command line, built the way the Kata runtime builds it (reference §9.4), and
the facts it is made of: the root filesystem types and the dm-verity parameter line.

One place for these rules, below both the image and the boot packages (neither imports the other
for them): `osbuilder boot` boots like the runtime with them, the image layout names its root
parameters with them, and the bundle's runtime configurations get their `kernel_params` from
them, so what ships is what was tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from osbuilder.errors import UsageError

FS_TYPES = ("ext4", "xfs", "erofs")

# x86_64 defaults the Go runtime adds for QEMU guests.
X86_DEFAULTS = (
    "tsc=reliable", "no_timer_check", "rcupdate.rcu_expedited=1", "i8042.direct=1", "i8042.dumbkbd=1",
    "i8042.nopnp=1", "i8042.noaux=1", "noreplace-smp", "reboot=k", "cryptomgr.notests", "net.ifnames=0",
    "pci=lastbus=0",
)
ARM64_DEFAULTS = ("iommu.passthrough=0",)
SYSTEMD_PARAMS = (
    "systemd.unit=kata-containers.target", "systemd.mask=systemd-networkd.service",
    "systemd.mask=systemd-networkd.socket", "systemd.show_status=false",
)


@dataclass(frozen=True)
class VerityLine:
    """The one-line record Kata writes next to a measured image (root_hash*.txt) and the runtime
    passes as kernel_verity_params."""

    root_hash: str
    salt: str
    data_blocks: int
    data_block_size: int = 4096
    hash_block_size: int = 4096

    def format(self) -> str:
        return (f"root_hash={self.root_hash},salt={self.salt},data_blocks={self.data_blocks},"
                f"data_block_size={self.data_block_size},hash_block_size={self.hash_block_size}")

    @classmethod
    def parse(cls, text: str) -> VerityLine:
        fields: dict[str, str] = {}
        for part in text.strip().split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {part!r}")
            fields[key.strip()] = value.strip()
        try:
            line = cls(fields["root_hash"], fields["salt"], int(fields["data_blocks"]),
                       int(fields["data_block_size"]), int(fields["hash_block_size"]))
        except KeyError as missing:
            raise ValueError(f"missing {missing.args[0]}") from None
        for size in (line.data_block_size, line.hash_block_size):
            if size <= 0 or size % 512:
                raise ValueError(f"block size {size} is not a non-zero multiple of 512")
        bytes.fromhex(line.root_hash)
        bytes.fromhex(line.salt)
        return line

    def to_json(self) -> dict[str, object]:
        return {"root_hash": self.root_hash, "salt": self.salt, "data_blocks": self.data_blocks,
                "data_block_size": self.data_block_size, "hash_block_size": self.hash_block_size}



def parse_verity(text: str, where: str = "kernel_verity_params") -> VerityLine:
    """The runtime's `kernel_verity_params` line, with errors that name where it came from."""
    try:
        line = VerityLine.parse(text)
    except ValueError as exc:
        raise UsageError(problem=f"invalid verity parameters: {exc}", where=where,
                         fix="use root_hash=…,salt=…,data_blocks=…,data_block_size=…,hash_block_size=… as the "
                             "image builder writes it") from exc
    if len(line.root_hash) != 64:
        raise UsageError(problem="root_hash must be 64 hex digits (sha256)", where=where,
                         fix="use the root_hash file written next to the measured image")
    return line


@dataclass(frozen=True)
class RootSpec:
    """How the guest finds its root: an image (NVDIMM with DAX, or virtio-blk), or an initrd."""

    kind: str  # "image" | "initrd"
    fs_type: str = "ext4"
    nvdimm: bool = True  # image exposed as an NVDIMM (DAX); False: virtio-blk
    verity: VerityLine | None = None

    def dax(self, arch: str) -> bool | None:
        """Whether the root is mounted with DAX: None when there is no NVDIMM to ask about. As the Go
        runtime does: only on amd64 NVDIMMs, and never with dm-verity on top."""
        if self.kind != "image" or not self.nvdimm:
            return None
        return self.verity is None and arch == "x86_64"


def root_params(spec: RootSpec, arch: str = "x86_64") -> list[str]:
    if spec.kind == "initrd":
        return []
    if spec.fs_type not in FS_TYPES:
        raise UsageError(problem=f"unknown rootfs type '{spec.fs_type}'", where="rootfs_type",
                         fix=f"use one of {', '.join(FS_TYPES)}")
    data_dev, hash_dev = ("/dev/pmem0p1", "/dev/pmem0p2") if spec.nvdimm else ("/dev/vda1", "/dev/vda2")
    flags = ["data=ordered", "errors=remount-ro"] if spec.fs_type == "ext4" else []
    if spec.dax(arch):
        flags.insert(0, "dax")
    # The runtime writes "rootflags=<flags> ro": mount options, then `ro` as a parameter of its own.
    mount = ([f"rootflags={','.join(flags)}"] if flags else []) + ["ro", f"rootfstype={spec.fs_type}"]
    if spec.verity is None:
        return [f"root={data_dev}", *mount]
    verity = spec.verity
    sectors = verity.data_blocks * verity.data_block_size // 512
    table = (f"dm-verity,,,ro,0 {sectors} verity 1 {data_dev} {hash_dev} {verity.data_block_size} "
             f"{verity.hash_block_size} {verity.data_blocks} 0 sha256 {verity.root_hash} {verity.salt}")
    return [f'dm-mod.create="{table}"', "root=/dev/dm-0", *mount]


def serial_console(arch: str) -> str:
    """The first serial port's device name in the guest."""
    return "ttyS0" if arch == "x86_64" else "ttyAMA0"


def kernel_params(spec: RootSpec, *, arch: str = "x86_64", console: str | None = "ttyS0",
                  extra: str = "", verbosity: str = "normal") -> str:
    """The full command line: root, systemd unit (images), runtime defaults, console, extra.

    verbosity: "quiet" is the runtime's default (`quiet`), "debug" its enable_debug mode; "normal"
    adds neither, so a boot check sees the kernel's own messages and can time the boot.
    """
    params = root_params(spec, arch)
    if spec.kind == "image":
        # The Go runtime adds these for every image, whatever its init: harmless for agent-init.
        params.extend(SYSTEMD_PARAMS)
        if verbosity == "debug":
            params[-1] = "systemd.show_status=true"
            params.append("systemd.log_level=debug")
    params.append({"quiet": "quiet", "debug": "debug"}.get(verbosity, ""))
    params.append("panic=1")
    params.extend(X86_DEFAULTS if arch == "x86_64" else ARM64_DEFAULTS)
    if console:
        params.append(f"console={console}")
    if extra:
        params.append(extra)
    return " ".join(param for param in params if param)


def split_params(line: str) -> list[str]:
    """Split a command line on spaces outside double quotes (dm-mod.create="… …")."""
    return re.findall(r'(?:[^\s"]+|"[^"]*")+', line)
