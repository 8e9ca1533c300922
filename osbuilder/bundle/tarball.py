"""Reproducible tar.zst: sorted entries, owner 0, mtimes clamped, deterministic zstd.

zstd's multi-threaded mode produces the same bytes whatever the number of threads (for a given
zstd version and level), so `-T0` uses every core without giving up reproducibility. Entries come
from a staging tree; only its names, modes, link targets and contents reach the archive.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from pathlib import Path

from osbuilder import runner
from osbuilder.errors import BuildError
from osbuilder.outputs import atomic_output

ZSTD_LEVEL = 19


def _sorted_walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(directory)
        for name in sorted([*dirnames, *filenames]):
            found.append(base / name)
    return sorted(found, key=lambda path: path.relative_to(root).as_posix().split("/"))


def _info(root: Path, path: Path, epoch: int) -> tarfile.TarInfo:
    relative = path.relative_to(root).as_posix()
    st = path.lstat()
    info = tarfile.TarInfo("./" + relative)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = min(int(st.st_mtime), epoch)
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        # Only the executable bit carries meaning; everything else is normalised.
        info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    else:
        raise BuildError(problem=f"{relative} is not a file, directory or symlink", where=str(path),
                         fix="a bundle holds regular files, directories and symlinks only")
    return info


def write_tar_zst(root: Path, destination: Path, epoch: int, level: int = ZSTD_LEVEL) -> None:
    """Archive the tree under `root` (its entries as ./relative/path) into destination."""
    zstd = runner.require_tool("zstd", "compress the bundle")
    with atomic_output(destination) as temporary, temporary.open("wb") as out:
        process = runner.spawn([zstd, f"-{level}", "-T0", "-q", "-c"], stdin=subprocess.PIPE, stdout=out,
                               stderr=subprocess.PIPE, die_with_parent=True)
        assert process.stdin is not None
        try:
            with tarfile.open(fileobj=process.stdin, mode="w|", format=tarfile.GNU_FORMAT) as archive:
                top = tarfile.TarInfo(".")
                top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, epoch
                top.uname = top.gname = "root"
                archive.addfile(top)
                for path in _sorted_walk(root):
                    info = _info(root, path, epoch)
                    if info.type == tarfile.REGTYPE:
                        with path.open("rb") as handle:
                            archive.addfile(info, handle)
                    else:
                        archive.addfile(info)
            process.stdin.close()
            assert process.stderr is not None
            err = process.stderr.read()
            process.wait()
        except BaseException:
            runner.terminate(process)
            raise
        if process.returncode != 0:
            raise BuildError(problem=f"zstd failed: {err.decode(errors='replace').strip()}", where=str(destination))
