"""mmdebstrap, on this host: the bootstrapper of Debian-style recipes, as root or rootless.

As root, mmdebstrap writes a directory where the output will be, and provisioning edits it in
place; otherwise (unshare mode, and in the builder container of osbuilder.rootfs.bootstrappers.docker)
it writes a tarball, bit-reproducible with SOURCE_DATE_EPOCH, that provisioning edits as tar
members. Device nodes are left out (`--skip=output/dev`): devtmpfs provides them in the guest and a
rootless extraction could not create them.

The package cache (osbuilder.rootfs.bootstrappers.apt_cache) is handed to mmdebstrap the way its
documentation describes: a setup hook `sync-in`s a snapshot into the chroot's /var/cache/apt/archives
(apt then fetches only what is missing or changed, as it checks every file against the signed
index), `--skip=download/empty` allows the non-empty archive directory, `--skip=essential/unlink`
keeps the essential packages there, and a customize hook `sync-out`s the directory again. The
special hooks copy across the user-namespace boundary, so this works in root, unshare and container
runs alike and the cached files stay owned by the caller.

As root, mmdebstrap mounts /proc, /sys and /dev parts into the chroot; it runs in a mount namespace
of its own (runner.run(..., contained=True)), so a killed build leaves nothing mounted on the host.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from osbuilder import runner, staging, userns
from osbuilder.binfmt import require_emulation
from osbuilder.cache import Cache
from osbuilder.errors import BuildError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.mirrors import archive_mirror
from osbuilder.modes import Backend, BuildMode
from osbuilder.rootfs.bootstrappers.apt_cache import APT_ARCHIVES, PackageCache, take_packages
from osbuilder.rootfs.bootstrappers.archive_index import explained_index_failures, require_architecture_index
from osbuilder.rootfs.bootstrappers.base import Bootstrapped, Bootstrapper, Choice, Factory, Job, Workspace
from osbuilder.rootfs.bootstrappers.keyring import keyring_for_apt, resolve_keyring
from osbuilder.rootfs.tree import RootfsTree
from osbuilder.versions import Versions

log = logging.getLogger(__name__)

TOOL = "mmdebstrap"
# dpkg settings for the bootstrap only, in a file of ours that finish() removes again: no fsync per
# unpacked file, and the recipe's trims never unpacked by the packages installed after the essential
# set. (Not --dpkgopt=path-exclude: with it mmdebstrap pipes every essential package through
# mmtarfilter, a Python process each, which costs more than it saves.)
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
    keep_apt_lists: bool = False  # Job.keep_apt_lists


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
    argv += ["--skip=output/dev", "--skip=download/empty", "--skip=essential/unlink"]
    if spec.keep_apt_lists:
        argv.append("--skip=cleanup/apt/lists")
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
        # The copyright files give the packages' licenses (osbuilder.rootfs.packagefacts); provisioning
        # removes them with the rest of the trims.
        lines.append("path-include=/usr/share/doc/*/copyright")
    return lines


def spec_of(job: Job) -> BootstrapSpec:
    recipe = job.recipe.bootstrap
    return BootstrapSpec(suite=job.release.suite, variant=job.variant, components=recipe.components,
                         debian_arch=job.arch.debian, packages=job.packages, mirror=job.mirror, trims=job.trims,
                         options=recipe.options, keep_apt_lists=job.keep_apt_lists)


def finish_tree(tree: RootfsTree) -> None:
    """Take our bootstrap-only dpkg settings out of the rootfs."""
    tree.remove(DPKG_CONFIG)


def mmdebstrap_version(memo: Path | None = None) -> str:
    return runner.tool_version(TOOL, memo, "bootstrap the rootfs")


def native_mode() -> BuildMode:
    """mmdebstrap's mode on this host: root as root, unshare for a user with subordinate ids."""
    if os.geteuid() == 0:
        return BuildMode.ROOT
    problem = userns.unshare_problem()
    if problem:
        raise UsageError(
            problem=f"cannot bootstrap without root here: {problem}",
            where="--backend native",
            fix="use --backend docker, run as root, or give this user subordinate ids "
                "(usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER) with uidmap installed",
        )
    return BuildMode.UNSHARE


def bootstrap_mirror(archive: str, suite: str, explicit: str | None,
                     environment: Mapping[str, str] | None = None) -> str | None:
    """--mirror, else OSBUILDER_<ARCHIVE>_MIRROR, else None (mmdebstrap's defaults, which include the
    suite's updates and security suites; a single mirror URL bootstraps from that suite only)."""
    return archive_mirror(archive, suite, explicit, sources=[], environment=environment)


def chroot_possible(directory: Path) -> bool:
    """Whether maintainer scripts can run in a chroot under directory (not noexec, not nodev)."""
    flags = os.statvfs(directory).f_flag
    return not flags & (os.ST_NOEXEC | os.ST_NODEV)


def with_package_cache(job: Job, workspace: Workspace, direct: bool,
                       run: Callable[[Path, Path], None]) -> Bootstrapped:
    """Run a bootstrap with the package cache: `run(debs_in, debs_out)` gets a snapshot of the cached
    packages and a directory to leave the used ones in (a direct run leaves them in the chroot)."""
    packages = PackageCache(workspace.cache, job.recipe.bootstrap.archive or "debian", job.release.suite,
                            job.arch.debian)
    debs_in, debs_out = workspace.staging / "debs-in", workspace.staging / "debs-out"
    debs_out.mkdir()
    packages.snapshot(debs_in)
    known = sorted(os.listdir(debs_in))
    run(debs_in, debs_out)
    if direct:
        archives = take_packages(workspace.target)
        downloaded = packages.merge(archives, known)
        for leftover in archives.glob("*.deb"):  # hard links to what the cache already has
            leftover.unlink()
    else:
        downloaded = packages.merge(debs_out, known)
    shutil.rmtree(debs_in)
    shutil.rmtree(debs_out)
    log.info("bootstrap done; %d packages downloaded, %d taken from the package cache", len(downloaded),
             len(known))
    return Bootstrapped(workspace.target, downloaded, len(known))


def run_native(argv: Sequence[str], on_line: Callable[[str], None]) -> None:
    # mmdebstrap's own temporary directory (a whole tree, of subordinate ids in unshare mode) goes
    # into a staging entry of ours in the temporary directory: a killed build cannot remove it, the
    # next build's sweep does (see rootfs.build). It stays in the temporary directory because in
    # unshare mode the namespace's root, a subordinate id, must reach it, and the cache may be under
    # a home directory it cannot enter.
    with staging.temporary_directory(None, "mmdebstrap") as scratch:
        scratch.chmod(0o755)
        try:
            # Contained: mmdebstrap's mounts in the chroot live in a mount namespace of its own, and
            # the whole process tree dies with osbuilder (see runner.run).
            runner.run(argv, env={"TMPDIR": str(scratch)}, stream=True, on_line=on_line, what="mmdebstrap",
                       contained=True)
        except BuildError as error:
            error.fix = ("see the mmdebstrap output above; run the command by hand with --verbose to debug "
                         "(network access to the archive mirror is needed)")
            raise


@dataclass(frozen=True)
class Native:
    """mmdebstrap run on this host: root mode as root, unshare mode for a user with subordinate ids."""

    mode: BuildMode
    version: str  # mmdebstrap --version
    keyring: Path | None = None  # resolved by prepare()

    @property
    def identity(self) -> str:
        return self.version

    def check_host(self, job: Job, where: str) -> None:
        require_emulation(job.arch, where)

    def prepare(self, job: Job, versions: Versions, cache: Cache, fetcher: Fetcher) -> Bootstrapper:
        keyring = resolve_keyring(job.recipe, job.arch, versions, cache, fetcher)
        require_architecture_index(job, keyring, fetcher)
        return dataclasses.replace(self, keyring=keyring)

    def can_write_in_place(self, directory: Path) -> bool:
        return self.mode is BuildMode.ROOT and chroot_possible(directory)

    def bootstrap(self, job: Job, workspace: Workspace) -> Bootstrapped:
        def run(debs_in: Path, debs_out: Path) -> None:
            with keyring_for_apt(self.keyring) as readable:
                paths = Paths(str(workspace.target), str(debs_in), str(debs_out), str(readable) if readable else None)
                output_format = "directory" if workspace.in_place else "tar"
                run_native(mmdebstrap_argv(spec_of(job), self.mode, paths, output_format, direct=workspace.in_place),
                           workspace.on_line)

        with explained_index_failures(job):
            return with_package_cache(job, workspace, workspace.in_place, run)

    def finish(self, tree: RootfsTree) -> None:
        finish_tree(tree)


def plan_native(memo: Path | None) -> Native:
    return Native(native_mode(), mmdebstrap_version(memo))


def _choose(choice: Choice) -> Bootstrapper:
    return plan_native(choice.memo)


FACTORIES: dict[tuple[str, Backend], Factory] = {(TOOL, Backend.NATIVE): _choose}
