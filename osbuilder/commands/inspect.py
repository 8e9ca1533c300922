"""osbuilder inspect: tell what a built asset is. This branch knows kernels (and kernel configs).

Kept minimal on purpose: the dispatch is "read the first bytes, ask each kind whether it is one".
Kernel support is the pair osbuilder.kernel.inspect.detect_kernel(head, size) /
inspect_kernel(path) (+ render_kernel(report) for text), which another dispatcher can register as
one more kind of file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.kernel.inspect import (
    HEAD_SIZE,
    detect_kernel,
    inspect_kernel,
    looks_like_config,
    render_kernel,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH",
                        help="a kernel (vmlinux, vmlinuz/bzImage, Image, Image.gz, a .container link) or its config")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    path: Path = args.path
    if not path.is_file():
        raise UsageError(problem="no such file", where=str(path), fix="give the path of a built asset")
    with path.open("rb") as handle:
        head = handle.read(HEAD_SIZE)
    if detect_kernel(head, path.stat().st_size) or looks_like_config(head):
        report = inspect_kernel(path)
        return Outcome({"ok": True, **report}, "\n".join(render_kernel(report)))
    raise UsageError(problem="not a file osbuilder can inspect", where=str(path),
                     fix="osbuilder inspects kernels (vmlinux, bzImage, Image, Image.gz) and kernel configs")


COMMAND = Command("inspect", "tell what a built asset is: a kernel's version, architecture and guest features",
                  configure, run, order=40)
