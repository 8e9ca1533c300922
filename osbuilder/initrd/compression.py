"""Initrd compressors: what the kernel can unpack, and how to use every core reproducibly.

Measured on a 191 MB Debian bookworm cpio (systemd, busybox) on the 2-core build machine, one run
(benchmarks/initrd.py prints the current figures):

    codec            build     size      decompress
    gzip -9 (gzip)   27.6 s    70.5 MB   1.07 s
    pigz -9          21.3 s    70.4 MB
    zstd -3 -T0       0.7 s    61.8 MB   0.20 s
    zstd -6 -T0       2.2 s    57.7 MB
    zstd -9 -T0       4.4 s    54.8 MB   0.29 s
    zstd -19 -T0    102 s      48.8 MB
    xz -6 -T0        95 s      45.9 MB
    lz4 -l -9         6.9 s    79.7 MB   0.07 s

The default is zstd at level 6: smaller than Kata's gzip -9 by a fifth, ten times faster to build,
and about five times faster for the guest kernel to unpack (the kernel's zstd decoder is as fast as
the user-space one relative to gzip). No --long: a long window would make the guest kernel allocate
the window (128 MiB at --long=27) while unpacking. The kernel needs CONFIG_RD_ZSTD (set by the guest
kernel fragments, as are RD_GZIP, RD_XZ and RD_LZ4).

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
