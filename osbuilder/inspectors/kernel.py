"""Kernels (vmlinux, bzImage, Image, Image.gz) and kernel configs, for `osbuilder inspect`."""

from __future__ import annotations

from pathlib import Path

from osbuilder.inspectors import InspectOptions, Inspector, Report
from osbuilder.kernel.inspect import detect_kernel, inspect_kernel, looks_like_config, render_kernel


def detect(head: bytes, size: int) -> bool:
    return detect_kernel(head, size) or looks_like_config(head)


def inspect(path: Path, options: InspectOptions) -> Report:
    del options
    report = inspect_kernel(path)
    return Report("kernel", report, render_kernel(report))


# Before the image inspector: a bzImage also ends its first sector with 55 AA.
INSPECTOR = Inspector("kernel", "guest kernel or kernel config (version, architecture, guest features)", detect,
                      inspect, order=20)
