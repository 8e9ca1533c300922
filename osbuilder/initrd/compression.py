"""Initrd compressors: what the kernel can unpack, and how to use every core reproducibly.

Measured with benchmarks/initrd.py on a Debian bookworm tree (mmdebstrap --variant=required with
systemd and busybox-static: 9803 entries, 185 MiB) on the 2-core build machine, under load:

    codec                      build     size       decompress (user space)
    Kata: find|cpio|gzip -9    33.9 s    67.7 MiB   1.08 s
    gzip -9 (pigz, 2 cores)    29.5 s    67.1 MiB   1.02 s
    zstd -3 -T0                 1.3 s    58.6 MiB   0.21 s
    zstd -6 -T0 (default)       3.1 s    54.8 MiB   0.31 s   (0.09x the time, 0.81x the size)
    zstd -9 -T0                 5-5.5 s  52.0 MiB   0.19 s
    zstd -19 -T0               95 s      46.2 MiB   0.30 s
    xz -6 -T0                  87 s      43.6 MiB   3.08 s
    lz4 -l -9                   6.5 s    76.0 MiB   0.09 s

The default is zstd at level 6: smaller than Kata's gzip -9 by a fifth, ten times faster to build,
and three to five times faster to unpack, which the guest kernel does on every boot. Level 9 saves
another 5 % for twice the build time; lz4 unpacks faster still but is larger than gzip. No --long:
a long window would make the guest kernel allocate the window (128 MiB at --long=27) while
unpacking. The kernel needs CONFIG_RD_ZSTD (set by the guest kernel fragments, as are RD_GZIP, RD_XZ
and RD_LZ4).

Reproducible bytes: pigz and gzip run with -n (no name, no time); pigz, zstd -T0 and xz -T0 give
the same output whatever the number of threads (xz's single-threaded mode, -T1, would not: -T0 is
always passed). lz4 must use the legacy frame format (-l) for the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from osbuilder.hosttools import find_tool


@dataclass(frozen=True)
class Codec:
    name: str
    kernel_option: str
    magic: bytes
    default_level: int
    levels: range
    extension: str

    def argv(self, level: int) -> list[str]:
        """The compressor reading stdin and writing stdout; [] for no compression."""
        if self.name == "gzip":
            if find_tool("pigz"):
                return ["pigz", f"-{level}", "-n", "-c"]
            return ["gzip", f"-{level}", "-n", "-c"]
        if self.name == "zstd":
            return ["zstd", f"-{level}", "-T0", "-q", "-c", *(["--ultra"] if level > 19 else [])]
        if self.name == "xz":
            # The kernel's xz decoder supports CRC32 (and none), not xz's default CRC64.
            return ["xz", f"-{level}", "-T0", "--check=crc32", "-c"]
        if self.name == "lz4":
            return ["lz4", "-l", f"-{level}", "-c"]
        return []

    def decompress_argv(self) -> list[str]:
        return {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"], "xz": ["xz", "-dc"], "lz4": ["lz4", "-dc"],
                "none": ["cat"]}[self.name]


CODECS: dict[str, Codec] = {
    "gzip": Codec("gzip", "CONFIG_RD_GZIP", b"\x1f\x8b", 9, range(1, 10), ".gz"),
    "zstd": Codec("zstd", "CONFIG_RD_ZSTD", b"\x28\xb5\x2f\xfd", 6, range(1, 23), ".zst"),
    "xz": Codec("xz", "CONFIG_RD_XZ", b"\xfd7zXZ\x00", 6, range(0, 10), ".xz"),
    "lz4": Codec("lz4", "CONFIG_RD_LZ4", b"\x02\x21\x4c\x18", 9, range(1, 13), ".lz4"),
    "none": Codec("none", "CONFIG_BLK_DEV_INITRD", b"070701", 0, range(0, 1), ""),
}
DEFAULT = "zstd"


def detect(head: bytes) -> Codec | None:
    """The codec of an initrd from its first bytes (None if it is not one we know)."""
    for codec in CODECS.values():
        if head.startswith(codec.magic):
            return codec
    return None


LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"  # lz4's default format, which the kernel does not unpack
