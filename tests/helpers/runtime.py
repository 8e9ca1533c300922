"""A stand-in for the Kata runtime release (GitHub is not reachable from the test machines).

A kata-static-style tarball whose containerd-shim-kata-v2 answers --version the way the real Rust
shim does; a test serves it from 127.0.0.1 where a download is exercised.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

SHIM = "./opt/kata/runtime-rs/bin/containerd-shim-kata-v2"


def make_runtime_tarball(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = ("#!/bin/sh\n"
              f'echo "Kata Containers containerd shim (Rust): id: io.containerd.kata.v2, version: {version}, '
              'commit: 0000000000000000000000000000000000000000"\n').encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo(SHIM)
        info.size, info.mode, info.mtime = len(script), 0o755, 1700000000
        archive.addfile(info, io.BytesIO(script))
    tarball = directory / f"kata-static-{version}-amd64.tar.zst"
    tarball.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True,
                                       check=True).stdout)
    return tarball
