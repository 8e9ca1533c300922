"""Bootstrapping a distribution with mmdebstrap, and the package cache shared between builds.

As root, mmdebstrap writes a directory where the output will be, and provisioning edits it in
place; otherwise (unshare mode, the docker backend) it writes a tarball, bit-reproducible with
SOURCE_DATE_EPOCH, that provisioning edits as tar members. Device nodes are left out
(`--skip=output/dev`): devtmpfs provides them in the guest and a rootless extraction could not
create them.

Package cache: downloaded .debs are kept under <cache>/apt-archives/<archive>/<suite>/<arch>/.
mmdebstrap's documented recipe reuses them: a setup hook `sync-in`s a snapshot of that directory
into the chroot's /var/cache/apt/archives (apt then only fetches what is missing or changed, as it
checks every file against the signed index), `--skip=download/empty` allows the non-empty archive
directory, `--skip=essential/unlink` keeps the essential packages there, and a customize hook
`sync-out`s the directory again. The special hooks copy across the user-namespace boundary, so
this works in root, unshare and container runs alike and the cached files stay owned by the
caller. New packages enter the shared directory by rename, and a package's older versions are
dropped when a build used a newer one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shlex
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from osbuilder import runner, userns
from osbuilder.arch import Arch
from osbuilder.cache import Cache
from osbuilder.context import Context
from osbuilder.debarchive import ArchiveClient, extract_member
from osbuilder.errors import BuildError, UsageError
from osbuilder.mirrors import archive_mirror
from osbuilder.outputs import write_atomically
from osbuilder.recipes import Recipe
from osbuilder.rootfs_tree import RootfsTree

log = logging.getLogger(__name__)

APT_ARCHIVES = "/var/cache/apt/archives"
# dpkg settings for the bootstrap only, in a file of ours that provisioning removes again:
# no fsync per unpacked file, and the recipe's trims never unpacked by the packages installed after
# the essential set. (Not --dpkgopt=path-exclude: with it mmdebstrap pipes every essential package
# through mmtarfilter, a Python process each, which costs more than it saves.)
DPKG_CONFIG = "etc/dpkg/dpkg.cfg.d/90osbuilder-bootstrap"
DPKG_SPEEDUP = "force-unsafe-io"


@dataclass(frozen=True)
class BootstrapSpec:
    suite: str
    variant: str
    components: tuple[str, ...]
    debian_arch: str
    packages: tuple[str, ...]
    mirror: str | None  # None: mmdebstrap's default mirrors for the suite
    trims: tuple[str, ...]  # not unpacked after the essential set (provisioning removes the rest)
    options: tuple[str, ...]  # the recipe's extra mmdebstrap options


@dataclass(frozen=True)
class Paths:
    """Where mmdebstrap finds things: host paths natively, mount points in a container."""

    target: str
    debs_in: str
    debs_out: str
    keyring: str | None


def mmdebstrap_argv(spec: BootstrapSpec, mode: str, paths: Paths, output_format: str = "tar",
                    direct: bool = False) -> list[str]:
    """The mmdebstrap command line. `direct`: the hooks run as root on this host and the chroot is
    the output directory itself, so the cached packages are hard-linked in rather than copied, and
    taken out again after the run (take_packages) instead of being copied out by sync-out."""
    argv = [
        "mmdebstrap",
        f"--mode={mode}",
        f"--format={output_format}",
        f"--variant={spec.variant}",
        f"--architectures={spec.debian_arch}",
        f"--components={','.join(spec.components)}",
    ]
    if spec.packages:
        argv.append(f"--include={','.join(spec.packages)}")
    if paths.keyring:
        argv.append(f"--keyring={paths.keyring}")
    # cleanup/apt/lists: apt's signed package lists stay until provisioning has read the packages'
    # origins from them (osbuilder.evidence.packagefacts) and removed /var/lib/apt.
    argv += ["--skip=output/dev", "--skip=download/empty", "--skip=essential/unlink", "--skip=cleanup/apt/lists"]
    config = f'"$1"/{DPKG_CONFIG}'
    argv += [
        f'--setup-hook=mkdir -p "$1"/{DPKG_CONFIG.rsplit("/", 1)[0]} && echo {DPKG_SPEEDUP} > {config}',
        *([f"--essential-hook=printf '%s\\n' {' '.join(shlex.quote(line) for line in trim_lines(spec.trims))}"
           f" >> {config}"] if spec.trims else []),
        f'--setup-hook=mkdir -p "$1"{APT_ARCHIVES}',
    ]
    cached = shlex.quote(f"{paths.debs_in}/.")
    if direct:
        argv.append(f'--setup-hook=cp -al {cached} "$1"{APT_ARCHIVES}/ 2>/dev/null || cp -a {cached} "$1"{APT_ARCHIVES}/')
        argv.append("--skip=cleanup/apt/cache")  # apt-get clean would delete what take_packages() keeps
    else:
        argv += [
            f"--setup-hook=sync-in {shlex.quote(paths.debs_in)} {APT_ARCHIVES}/",
            f"--customize-hook=sync-out {APT_ARCHIVES} {shlex.quote(paths.debs_out)}",
            # The packages are in the cache now; they do not belong in the rootfs tarball.
            f'--customize-hook=rm -f "$1"{APT_ARCHIVES}/*.deb',
        ]
    argv += list(spec.options)
    argv += [spec.suite, paths.target]
    if spec.mirror:
        argv.append(spec.mirror)
    return argv


def trim_lines(trims: Sequence[str]) -> list[str]:
    lines = [f"path-exclude=/{trim.strip('/')}/*" for trim in trims]
    if "usr/share/doc" in (trim.strip("/") for trim in trims):
        # The copyright files are read for the SBOM's licenses before provisioning trims the rest.
        lines.append("path-include=/usr/share/doc/*/copyright")
    return lines


def finish_tree(tree: RootfsTree) -> None:
    """Take our bootstrap-only dpkg settings out of the rootfs."""
    tree.remove(DPKG_CONFIG)


def mmdebstrap_version(memo: Path | None = None) -> str:
    return runner.tool_version("mmdebstrap", memo, "bootstrap the rootfs")


def native_mode() -> str:
    """mmdebstrap's mode on this host: root as root, unshare for a user with subordinate ids."""
    if os.geteuid() == 0:
        return "root"
    problem = userns.unshare_problem()
    if problem:
        raise UsageError(
            problem=f"cannot bootstrap without root here: {problem}",
            where="--backend native",
            fix="use --backend docker, run as root, or give this user subordinate ids "
                "(usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER) with uidmap installed",
        )
    return "unshare"


def bootstrap_mirror(archive: str, suite: str, explicit: str | None) -> str | None:
    """--mirror, else OSBUILDER_<ARCHIVE>_MIRROR, else None (mmdebstrap's defaults, which include the
    suite's updates and security suites; a single mirror URL bootstraps from that suite only)."""
    return archive_mirror(archive, suite, explicit, sources=[])


def resolve_keyring(context: Context, recipe: Recipe, arch: Arch) -> Path | None:
    """The archive keyring for --keyring: the host's, else the pinned keyring package's file, kept
    in the cache (Debian hosts lack the Ubuntu archive keys)."""
    keyring = recipe.keyring
    if keyring is None:
        return None
    if keyring.host_path and Path(keyring.host_path).is_file():
        return Path(keyring.host_path)
    if not keyring.external or not keyring.member:
        raise UsageError(
            problem=f"the archive keyring {keyring.host_path} is not installed",
            where=f"{recipe.document.where('keyring')} (keyring)",
            fix="install the keyring package, or name a versions.yaml external with its member",
        )
    pin = context.versions.external(keyring.external)
    deb = ArchiveClient(context.fetcher).resolve(pin, arch.name, arch.debian)
    target = context.cache.path("keyrings") / f"{deb.sha256[:16]}-{Path(keyring.member).name}"
    if not target.is_file():
        write_atomically(target, extract_member(deb.path, keyring.member))
    return target


def _readable_by_anyone(path: Path) -> bool:
    if not path.stat().st_mode & 0o004:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in path.resolve().parents)


@contextlib.contextmanager
def keyring_for_apt(keyring: Path | None) -> Iterator[Path | None]:
    """The keyring where apt can read it. apt verifies the archive as the unprivileged _apt user
    (and, in unshare mode, as a subordinate id), which cannot enter a private cache directory such
    as ~/.cache; a copy in the temporary directory can be read by anyone (it is public data)."""
    if keyring is None or _readable_by_anyone(keyring):
        yield keyring
        return
    base = Path(tempfile.gettempdir())
    if not base.stat().st_mode & 0o001:
        base = Path("/tmp")
    directory = Path(tempfile.mkdtemp(prefix="osbuilder-keyring-", dir=base))
    try:
        directory.chmod(0o755)
        copy = directory / keyring.name
        shutil.copyfile(keyring, copy)
        copy.chmod(0o644)
        yield copy
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the package cache -----------------------------------------------------------------------


_DEB = re.compile(r"^(?P<name>[^_]+)_(?P<version>[^_]+)_(?P<arch>[^_]+)\.deb$")


class PackageCache:
    def __init__(self, cache: Cache, archive: str, suite: str, debian_arch: str) -> None:
        self.cache = cache
        self.label = f"apt-archives-{archive}-{suite}-{debian_arch}"
        self.directory = cache.path("apt-archives", archive, suite, debian_arch)

    def debs(self) -> list[str]:
        return sorted(name for name in os.listdir(self.directory) if name.endswith(".deb"))

    def snapshot(self, destination: Path) -> int:
        """Hard-link the cached packages into a directory private to one build (so a concurrent
        merge cannot change what that build copies in)."""
        destination.mkdir(parents=True, exist_ok=True)
        with self.cache.lock(self.label):
            names = self.debs()
            for name in names:
                try:
                    os.link(self.directory / name, destination / name)
                except OSError:  # another filesystem or no hard links: copy instead
                    (destination / name).write_bytes((self.directory / name).read_bytes())
        return len(names)

    def merge(self, used: Path, known: Sequence[str]) -> list[str]:
        """Take the packages a build used into the cache (moved out of `used`); return the ones it
        downloaded."""
        built = sorted(name for name in os.listdir(used) if _DEB.match(name))
        taken = set(known)
        downloaded = [name for name in built if name not in taken]
        with self.cache.lock(self.label):
            present = set(self.debs())
            for name in built:
                if name not in present:
                    _move(used / name, self.directory / name)
            current = {_package_key(name): name for name in built}
            for name in present:
                key = _package_key(name)
                if key in current and current[key] != name:
                    (self.directory / name).unlink(missing_ok=True)  # superseded by a newer version
        return downloaded


def _move(source: Path, destination: Path) -> None:
    """Rename, or copy to a temporary name and rename across file systems."""
    try:
        os.replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temporary = destination.with_name(f".{destination.name}.{os.getpid()}")
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
        source.unlink()


def take_packages(chroot: Path) -> Path:
    """Where a direct run left the packages it used (they leave the tree with merge())."""
    return chroot / APT_ARCHIVES.lstrip("/")


def _package_key(filename: str) -> tuple[str, str]:
    match = _DEB.match(filename)
    if not match:
        return filename, ""
    return urllib.parse.unquote(match["name"]), match["arch"]


def run_native(argv: Sequence[str], on_line: Callable[[str], None]) -> None:
    try:
        runner.run(argv, stream=True, on_line=on_line, what="mmdebstrap")
    except BuildError as error:
        error.fix = ("see the mmdebstrap output above; run the command by hand with --verbose to debug "
                     "(network access to the archive mirror is needed)")
        raise
