"""A rootfs tarball unpacked as the output directory, atomically.

The cache keeps each finished rootfs as one uncompressed PAX tarball with numeric owners; a cache
hit is one `tar -x` into -o DIR (two at once where the tree splits), inside the caller's user
namespace when rootless, so the tree is owned by the caller's subordinate ids (osbuilder.userns).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from osbuilder import metadata, progress, runner, staging, userns
from osbuilder.errors import BuildError, CommandError
from osbuilder.rootfs.tree import RootfsTree


@dataclass(frozen=True)
class Split:
    """How a cached tarball unpacks in two tar processes at once: one takes the subtree `root`,
    the other everything else; `mtimes` restores the directories both write into."""

    root: str
    mtimes: dict[str, int]

    @staticmethod
    def of(tree: RootfsTree) -> Split | None:
        root = tree.split_point()
        if root is None:
            return None
        parts = root.split("/")
        ancestors = ["/".join(parts[:depth]) for depth in range(len(parts))]
        return Split(root, {path: tree.entries[path].mtime for path in ancestors})

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "mtimes": self.mtimes}

    @staticmethod
    def from_json(data: Any) -> Split | None:
        if not isinstance(data, dict) or not isinstance(data.get("root"), str):
            return None
        return Split(data["root"], {str(key): int(value) for key, value in data.get("mtimes", {}).items()})


@dataclass
class _Tar:
    argv: list[str]
    process: subprocess.Popen[bytes]
    errors: IO[bytes]


class Installer:
    """Unpacks a rootfs tarball as `output`, atomically: `tar -x` into a sibling directory, then one
    rename; an existing `output` (empty, or allowed by --force) is replaced only once the new tree
    is complete. Rootless, tar runs in the caller's user namespace, so the tree belongs to the
    caller's subordinate ids. A build streams its tarball here while writing it to the cache (start);
    a cached tarball unpacks in two processes at once where it can be split (unpack): creating
    thousands of inodes is most of a cache hit's time, and two processes share that work."""

    def __init__(self, output: Path, force: bool = False, marker: str = metadata.OSBUILDER_YAML) -> None:
        self.output = output
        self.force = force
        self.marker = marker  # a file every complete tree of this kind has
        self.idmap = userns.caller_map()
        self.temporary = staging.entry_path(output, "new")
        self.retired = staging.entry_path(output, "old")
        self.tars: list[_Tar] = []
        self.adopted = False

    @property
    def started(self) -> bool:
        return bool(self.tars) or self.adopted

    def adopt(self) -> None:
        """The temporary directory was filled by other means (a bootstrap in place)."""
        self.adopted = True

    def _extract(self, *selection: str) -> list[str]:
        argv = ["tar", "--extract", f"--directory={self.temporary}", "--numeric-owner", "--same-permissions",
                "--xattrs", "--xattrs-include=*", *selection]
        if self.idmap.kind == userns.SELF_KIND:
            argv.append("--no-same-owner")  # everything becomes the caller's (guest root)
        return userns.wrap(argv, self.idmap) if self.idmap.kind == userns.SUBID_KIND else argv

    def _create_temporary(self) -> None:
        if self.idmap.kind == userns.SUBID_KIND:  # owned by guest root, like the rest of the tree
            runner.run(userns.wrap(["mkdir", "--", self.temporary], self.idmap), what="create the rootfs directory")
        else:
            self.temporary.mkdir()

    def _spawn(self, argv: list[str], source: BinaryIO | int | None = None) -> _Tar:
        errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _wait)
        process = runner.spawn(argv, stdin=source if source is not None else subprocess.DEVNULL, stderr=errors)
        tar = _Tar(argv, process, errors)
        self.tars.append(tar)
        return tar

    def start(self, source: BinaryIO | None = None) -> IO[bytes] | None:
        """Start one tar; it reads `source`, or the returned pipe when no source is given."""
        self._create_temporary()
        tar = self._spawn(self._extract("--file=-"), source if source is not None else subprocess.PIPE)
        return tar.process.stdin

    def unpack(self, tarball: Path, split: Split | None) -> None:
        """Unpack a tarball file, in two processes when a split is known."""
        if split is None:
            with tarball.open("rb") as source:
                self.start(source)
            return
        self._create_temporary()
        self._spawn(self._extract(f"--file={tarball}", f"./{split.root}"))
        self._spawn(self._extract(f"--file={tarball}", f"--exclude=./{split.root}"))
        self._wait()
        # Both wrote into the split's parent directories: their times are set again last.
        paths = [(self.temporary / path if path else self.temporary, mtime) for path, mtime in split.mtimes.items()]
        if self.idmap.kind == userns.SUBID_KIND:
            script = "; ".join(f"touch -h -c -d @{mtime} {shlex.quote(str(path))}" for path, mtime in paths)
            runner.run(userns.wrap(["sh", "-ec", script], self.idmap), what="set directory times")
        else:
            for path, mtime in paths:
                os.utime(path, (mtime, mtime), follow_symlinks=False)
        self.adopted = True  # complete: finish() only checks and renames

    def finish(self) -> None:
        if self.tars:
            self._wait()
        elif not self.adopted:
            raise RuntimeError("Installer.finish() before start(), unpack() or adopt()")
        if not (self.temporary / self.marker).is_file():
            raise BuildError(problem=f"the unpacked rootfs has no /{self.marker}",
                             where=str(self.output), fix="the cached tarball is damaged: rebuild with --no-cache")
        if self.output.exists():
            if not self.force and (not self.output.is_dir() or any(self.output.iterdir())):
                raise BuildError(problem=f"{self.output} was filled by something else during the build",
                                 where=f"-o {self.output}", fix="build into another directory, or pass --force")
            _rename(self.output, self.retired, self.idmap)
        _rename(self.temporary, self.output, self.idmap)
        if self.retired.exists():
            userns.remove_tree(self.retired)

    def _wait(self) -> None:
        failed: _Tar | None = None
        for tar in self.tars:
            if tar.process.stdin is not None:
                tar.process.stdin.close()
            if tar.process.wait() != 0 and failed is None:
                failed = tar
        if failed is not None:
            failed.errors.seek(0)
            errors = failed.errors.read().decode(errors="replace")
        for tar in self.tars:
            tar.errors.close()
        self.tars = [tar for tar in self.tars if tar.process.returncode is None]
        if failed is not None:
            status = failed.process.returncode
            raise CommandError(problem=f"unpacking the rootfs into {self.temporary} failed with exit status {status}",
                               where=runner.format_argv(failed.argv), fix="see the messages of tar below",
                               argv=failed.argv, returncode=status, stderr_tail=runner.output_tail(errors))

    def abort(self) -> None:
        for tar in self.tars:
            if tar.process.stdin is not None:
                with contextlib.suppress(OSError):
                    tar.process.stdin.close()
            runner.terminate(tar.process)
        userns.remove_tree(self.temporary, self.idmap)
        if self.retired.exists() and not self.output.exists():
            _rename(self.retired, self.output, self.idmap)


def install(tarball: Path, output: Path, force: bool = False, split: Split | None = None,
            marker: str = metadata.OSBUILDER_YAML) -> None:
    """Unpack a cached rootfs tarball as `output` (see Installer)."""
    installer = Installer(output, force, marker)
    try:
        with progress.bar(None, f"installing {output.name}", unit="tree"):
            installer.unpack(tarball, split)
            installer.finish()
    except BaseException:
        installer.abort()
        raise


class Tee:
    """A write-only stream that writes everything to several streams (the cache file and tar -x)."""

    def __init__(self, *targets: IO[bytes]) -> None:
        self.targets = targets

    def write(self, data: bytes) -> int:
        for target in self.targets:
            target.write(data)
        return len(data)


def _rename(source: Path, destination: Path, idmap: userns.IdMap) -> None:
    try:
        os.rename(source, destination)
    except PermissionError:
        # A sticky parent (/tmp) lets only a tree's owner rename it: do it as guest root.
        runner.run(userns.wrap(["mv", "-T", "--", source, destination], idmap), what="rename the rootfs")
