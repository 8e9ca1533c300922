"""Kernel sources: what to build from (known before anything is fetched), and the extracted tree.

Three kinds, each recorded with its version and digest:
  debian   Debian's linux-source-X.Y .deb, resolved through the archive's signed metadata (default);
           the .deb's usr/src/linux-source-X.Y.tar.xz is unpacked once into the cache.
  tarball  a kernel.org-style release tarball (URL and sha256 in versions.yaml), unpacked once.
  local    --source PATH: a tarball (digest: its sha256, unpacked once) or a tree (digest: a digest
           of its files; used in place, never written to).

Unpacked trees live in the cache under kernel-source/<key>/tree, keyed by the sha256 of what they
were unpacked from, and appear by an atomic rename (Cache.get_or_build). Patches are applied to a
hard-linked copy (kernel-tree/<key>/tree) whose patched files are first unshared, so the pristine
tree is never modified.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder import runner
from osbuilder.arch import host_arch
from osbuilder.cache import Cache, content_key, sha256_file, sha256_tree
from osbuilder.debarchive import ArchiveClient
from osbuilder.errors import BuildError, CommandError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.kernel.fragments import Patch
from osbuilder.versions import KERNEL_SOURCE_KINDS, ArchivePackage, Versions

log = logging.getLogger(__name__)

SOURCE_KIND = "kernel-source"  # cache kinds: pristine trees, patched trees
TREE_KIND = "kernel-tree"
_MAKEFILE_VAR = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(.*?)\s*$")
_MAGIC = ((b"\xfd7zXZ\x00", "-J"), (b"\x1f\x8b", "-z"), (b"BZh", "-j"), (b"\x28\xb5\x2f\xfd", "--zstd"))


@dataclass(frozen=True)
class SourceSpec:
    """The source's identity, known before fetching or unpacking (so a cache hit needs neither)."""

    kind: str  # debian | tarball | local-tarball | local-tree
    digest: str  # sha256 of the .deb or tarball, or the tree digest
    version: str  # the kernel version the tree must have ("" when only the tree can tell)
    details: dict[str, Any] = field(default_factory=dict)  # recorded in the build record
    path: Path | None = None  # local sources
    url: str = ""  # tarball
    package: ArchivePackage | None = None  # debian: the pinned linux-source package

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "sha256" if self.kind != "local-tree" else "tree_digest": self.digest,
                "version": self.version, **self.details}


@dataclass(frozen=True)
class PreparedSource:
    spec: SourceSpec
    tree: Path  # pristine: never written to
    version: str  # from the tree's Makefile
    epoch: int  # mtime of the tree's top Makefile: the default SOURCE_DATE_EPOCH


def normalise_version(value: str) -> str:
    return value[1:] if value.startswith("v") else value


def plan_source(versions: Versions, *, version: str | None, source_path: Path | None,
                source_kind: str | None) -> SourceSpec:
    """Which source, with its digest; bad combinations are UsageErrors (exit 2)."""
    wanted = normalise_version(version) if version else None
    if source_path is not None:
        if source_kind is not None:
            raise UsageError(problem="--source and --source-kind exclude each other", where="--source-kind",
                             fix="--source PATH builds a local tree or tarball; --source-kind picks a pinned source")
        return _local_spec(source_path, wanted)
    pinned = versions.kernel_version
    if wanted is not None and wanted != pinned:
        raise UsageError(
            problem=f"versions.yaml pins Linux {pinned} (with checksums); {wanted} is not pinned",
            where=f"--version {version}",
            fix="pin the new version's sources in versions.yaml (assets.kernel), or pass --source PATH "
                "with a tree or tarball of that version",
        )
    kind = source_kind or versions.kernel_default_source
    if kind == "debian":
        pin = versions.kernel_debian_source()
        digest = pin.sha256_for(host_arch().name)
        return SourceSpec("debian", digest, pinned, {"package": pin.package, "package_version": pin.version,
                                                    "suite": pin.suite, "archive": pin.archive}, package=pin)
    if kind == "tarball":
        download = versions.kernel_tarball_source()
        return SourceSpec("tarball", download.sha256, pinned, {"url": download.url}, url=download.url)
    raise UsageError(problem=f"unknown source kind '{kind}'", where="--source-kind",
                     fix=f"use one of: {', '.join(KERNEL_SOURCE_KINDS)}")


def _local_spec(path: Path, wanted: str | None) -> SourceSpec:
    path = Path(os.path.abspath(path))
    if path.is_file():
        # A tarball's version is read from its top Makefile, without unpacking it (planning is pure).
        return SourceSpec("local-tarball", sha256_file(path), wanted or tarball_version(path), {"path": str(path)},
                          path=path)
    if not path.is_dir():
        raise UsageError(problem="no such file or directory", where=f"--source {path}",
                         fix="give a kernel source tree or a release tarball")
    check_tree(path, f"--source {path}")
    found = tree_version(path)
    if wanted is not None and wanted != found:
        raise UsageError(problem=f"the tree is Linux {found}, not {wanted}", where=f"--source {path}",
                         fix="drop --version or give a tree of that version")
    log.info("computing the digest of %s", path)
    return SourceSpec("local-tree", sha256_tree(path), found, {"path": str(path)}, path=path)


def check_tree(tree: Path, where: str) -> None:
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise UsageError(problem="not a kernel source tree (no top-level Makefile and Kconfig)", where=where,
                         fix="give the top directory of a Linux source tree")
    for leftover in (".config", "include/config"):
        if (tree / leftover).exists():
            raise UsageError(
                problem=f"the tree was configured in place ({leftover} exists); out-of-tree builds need a clean tree",
                where=where, fix="run 'make mrproper' in it, or give a clean copy",
            )


def tree_version(tree: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL plus EXTRAVERSION, from the top Makefile."""
    makefile = tree / "Makefile"
    with makefile.open(errors="replace") as handle:
        return _makefile_version(handle.read(1 << 16).splitlines(), makefile)


def tarball_version(path: Path) -> str:
    """The kernel version in a source tarball's top Makefile, read without unpacking anything."""
    import libarchive  # only a local tarball needs it

    try:
        with libarchive.file_reader(str(path)) as archive:
            top: str | None = None  # the one top directory, if the tarball has one
            for index, entry in enumerate(archive):
                parts = [part for part in entry.pathname.split("/") if part not in ("", ".")]
                if index == 0 and (entry.isdir or len(parts) > 1):
                    top = parts[0]
                if entry.isreg and (parts == ["Makefile"] or parts == [top, "Makefile"]):
                    text = b"".join(entry.get_blocks()).decode(errors="replace")
                    return _makefile_version(text.splitlines(), path)
    except libarchive.ArchiveError as exc:
        raise UsageError(problem=f"cannot read the tarball: {exc}", where=f"--source {path}",
                         fix="give a Linux source tarball (tar.xz, tar.gz, tar.bz2 or tar.zst)") from exc
    raise UsageError(problem="the tarball has no top-level Makefile", where=f"--source {path}",
                     fix="give a Linux source tarball (one top directory with the Makefile)")


def _makefile_version(lines: list[str], where: Path) -> str:
    values: dict[str, str] = {}
    for line in lines:
        match = _MAKEFILE_VAR.match(line)
        if match and match.group(1) not in values:
            values[match.group(1)] = match.group(2)
        if len(values) == 4:
            break
    try:
        return f"{values['VERSION']}.{values['PATCHLEVEL']}.{values['SUBLEVEL']}{values.get('EXTRAVERSION', '')}"
    except KeyError as exc:
        raise BuildError(problem=f"the top Makefile has no {exc.args[0]} line", where=str(where),
                         fix="give a Linux source tree") from exc


@contextlib.contextmanager
def prepare_source(spec: SourceSpec, cache: Cache, fetcher: Fetcher, mirror: str | None = None
                   ) -> Iterator[PreparedSource]:
    """The pristine tree for a source: unpacked into the cache once, or the local tree itself. The
    cached tree is in use (never pruned) until the block ends."""
    with contextlib.ExitStack() as stack:
        if spec.kind == "local-tree":
            assert spec.path is not None
            tree = spec.path
        else:
            key = content_key({"kind": "kernel-source", "format": 1, "sha256": spec.digest})

            def unpack(staging: Path) -> dict[str, Any]:
                archive = _fetch(spec, fetcher, mirror, staging)
                tree = _unpack_tarball(archive, staging)
                version = tree_version(tree)
                return {"version": version, "source": spec.to_json()}

            hit = stack.enter_context(cache.using(SOURCE_KIND, key, unpack))
            if not hit.hit:
                log.info("unpacked the kernel source into %s", hit.path)
            tree = hit.path / "tree"
        version = tree_version(tree)
        if spec.version and version != spec.version:
            raise BuildError(problem=f"the source tree is Linux {version}, but {spec.version} was expected",
                             where=spec.details.get("path") or spec.url or spec.details.get("package", spec.kind),
                             fix="the source does not match its pin; check versions.yaml")
        yield PreparedSource(spec, tree, version, int((tree / "Makefile").stat().st_mtime))


def _fetch(spec: SourceSpec, fetcher: Fetcher, mirror: str | None, staging: Path) -> Path:
    """The tarball to unpack (for a .deb: its usr/src/linux-source-*.tar.*, unpacked into staging)."""
    if spec.kind == "local-tarball":
        assert spec.path is not None
        return spec.path
    if spec.kind == "tarball":
        return fetcher.fetch(spec.url, spec.digest, what=f"linux-{spec.version} tarball")
    if spec.kind != "debian":
        raise AssertionError(spec.kind)
    pin = spec.package
    assert pin is not None
    host = host_arch()
    deb = ArchiveClient(fetcher, mirror=mirror).resolve(pin, host.name, host.debian).path
    unpacked = staging / "deb"
    dpkg_deb = runner.require_tool("dpkg-deb", "unpack Debian's linux-source package")
    runner.run([dpkg_deb, "-x", deb, unpacked], what=f"dpkg-deb -x {pin.package}")
    found = sorted((unpacked / "usr" / "src").glob("linux-source-*.tar.*"))
    if len(found) != 1:
        raise BuildError(problem=f"{pin.package} {pin.version} has {len(found)} usr/src/linux-source-*.tar.* files",
                         where=str(deb), fix="pin a linux-source package (it ships one source tarball)")
    return found[0]


def _unpack_tarball(archive: Path, staging: Path) -> Path:
    with archive.open("rb") as handle:
        head = handle.read(8)
    flags = [flag for magic, flag in _MAGIC if head.startswith(magic)]
    target = staging / "unpack"
    target.mkdir()
    tar = runner.require_tool("tar")
    log.info("unpacking %s", archive.name)
    runner.run([tar, "-x", *flags, "-f", archive, "-C", target, "--no-same-owner"], what=f"tar -x {archive.name}")
    entries = [entry for entry in target.iterdir() if entry.name != "pax_global_header"]
    if len(entries) == 1 and entries[0].is_dir():
        top = entries[0]
    elif (target / "Makefile").is_file():
        top = target
    else:
        raise BuildError(problem="the tarball does not hold one kernel source directory", where=str(archive),
                         fix="give a Linux source tarball (one top directory with the Makefile)")
    check_tree(top, str(archive))
    tree = staging / "tree"
    os.rename(top, tree)
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(staging / "deb", ignore_errors=True)  # the .deb's other files, and the inner tarball
    return tree


# --- patches --------------------------------------------------------------------------------------


@contextlib.contextmanager
def patched_tree(cache: Cache, prepared: PreparedSource, patches: list[Patch]) -> Iterator[Path]:
    """The tree to build: the pristine tree itself without patches, else a cached patched copy (in use,
    never pruned, until the block ends)."""
    if not patches:
        yield prepared.tree
        return
    key = content_key({"kind": "kernel-tree", "format": 1, "source": prepared.spec.digest,
                       "patches": [[patch.label, patch.sha256] for patch in patches]})

    def build(staging: Path) -> dict[str, Any]:
        tree = staging / "tree"
        _link_copy(prepared.tree, tree)
        tool = runner.require_tool("patch")
        for patch in patches:
            for relative in touched_files(patch.path.read_text(errors="replace")):
                _unshare(tree / relative)
            try:
                runner.run([tool, "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-d", tree,
                            "-i", patch.path], what=f"patch {patch.label}")
            except CommandError as error:
                raise BuildError(problem=f"{patch.label} does not apply to Linux {prepared.version}",
                                 where=str(patch.path), fix="refresh the patch against this kernel version",
                                 ) from error
            log.info("applied %s", patch.label)
        return {"patches": [patch.label for patch in patches], "source": prepared.spec.digest}

    with cache.using(TREE_KIND, key, build) as hit:
        yield hit.path / "tree"


def touched_files(patch_text: str) -> list[str]:
    """Paths (after stripping one component, as patch -p1) that a unified diff modifies."""
    found: dict[str, None] = {}
    for line in patch_text.splitlines():
        if not line.startswith(("--- ", "+++ ")):
            continue
        name = line[4:].split("\t", 1)[0].strip()
        if name == "/dev/null" or "/" not in name:
            continue
        relative = name.split("/", 1)[1]
        if relative and not relative.startswith("/") and ".." not in Path(relative).parts:
            found[relative] = None
    return list(found)


def _link_copy(source: Path, destination: Path) -> None:
    """A copy whose files are hard links to the source's (fast, no space); copies across filesystems."""
    cp = runner.require_tool("cp")
    try:
        runner.run([cp, "-al", source, destination], what="cp -al (hard-linked copy of the kernel tree)")
    except CommandError:
        shutil.rmtree(destination, ignore_errors=True)
        runner.run([cp, "-a", source, destination], what="cp -a (copy of the kernel tree)")


def _unshare(path: Path) -> None:
    """Give a hard-linked file its own inode so that patching it cannot touch the pristine tree."""
    if not path.is_file() or path.is_symlink() or path.stat().st_nlink == 1:
        return
    temporary = path.with_name(f".{path.name}.unshare")
    shutil.copy2(path, temporary)
    os.replace(temporary, path)
