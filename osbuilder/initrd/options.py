"""build-initrd's options, declared once (osbuilder.options)."""

from __future__ import annotations

from pathlib import Path

from osbuilder.initrd.compression import CODECS, DEFAULT
from osbuilder.options import Kind, Option, Table

DEFAULT_OUTPUT = Path("kata-containers-initrd.img")

INITRD = Table("the initrd", (
    Option("output", ("-o", "--output"), f"the initrd to write (default: {DEFAULT_OUTPUT})", kind=Kind.PATH,
           default=DEFAULT_OUTPUT, metavar="INITRD"),
    Option("compression", ("--compression",), f"compressor (default {DEFAULT}: smaller than gzip -9, much faster to "
           "build and to unpack at boot; the kernel needs the matching CONFIG_RD_*)", make="INITRD_COMPRESSION",
           choices=tuple(CODECS), default=DEFAULT),
    Option("level", ("--level",), "compression level (default: the codec's)", kind=Kind.INT, metavar="N"),
))
