"""Building a guest rootfs: plan (every input checked first), cache, bootstrap, provision, check,
install.

The cache keeps each finished rootfs as one uncompressed PAX tarball (rootfs/<key>/rootfs.tar)
with numeric owners. A tarball keeps guest ownership exactly whoever stores it (a rootless
caller cannot own files as root, but a tar header can say so), stays an ordinary file of the
caller that `rm -rf` removes, is written and read sequentially, and is what mmdebstrap produces
in unshare mode anyway. A cache hit is one `tar -x` into -o DIR, inside the caller's user
namespace when rootless, so the tree is owned by the caller's subordinate ids (osbuilder.userns).

A build edits the distribution as a RootfsTree. As root, mmdebstrap writes its directory next to
-o DIR, the edits are applied to it there and it is renamed into place: the tree is written once,
as by plain mmdebstrap. Otherwise mmdebstrap's tarball is edited and streamed into `tar -x` while
it is written to the cache. Either way the output equals what a cache hit unpacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from osbuilder import __version__, bootstrap, docker_backend, metadata, progress, provision, runner, userns
from osbuilder.agent_build import default_agent
from osbuilder.agent_input import AgentSource, from_file, from_tarball
from osbuilder.arch import Arch, host_arch, parse_arch
from osbuilder.cache import content_key, sha256_file, sha256_tree
from osbuilder.context import Context
from osbuilder.debarchive import ArchiveClient, extract_member
from osbuilder.errors import BuildError, CommandError, UsageError
from osbuilder.evidence import packagefacts
from osbuilder.paths import TEMPLATES_DIR
from osbuilder.recipes import InitMode, Recipe, Release
from osbuilder.rootfs_tree import RootfsTree
from osbuilder.tree import environment_epoch

log = logging.getLogger(__name__)

CACHE_KIND = "rootfs"
CACHE_FORMAT = 1  # bump when the entry layout changes
ROOTFS_TAR = "rootfs.tar"
MANIFEST = "manifest.json"
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# The modules whose code decides what a rootfs contains: their digest is part of the cache key.
BUILDER_MODULES = ("rootfs.py", "rootfs_tree.py", "provision.py", "bootstrap.py", "docker_backend.py",
                   "metadata.py", "agent_input.py", "evidence/packagefacts.py")
BUSYBOX_MEMBER = "bin/busybox"


@dataclass(frozen=True)
class Request:
    """What the user asked for (the command line)."""

    output: Path
    distro: str | None = None
    release: str | None = None
    arch: str | None = None
    agent_init: bool = False
    agent: Path | None = None
    agent_tarball: Path | None = None
    agent_name: str = "kata-agent"
    extra_packages: tuple[str, ...] = ()
    backend: str = "native"
    docker_base: str | None = None
    mirror: str | None = None
    no_cache: bool = False
    delete_unneeded: bool = False
    kernel_modules: Path | None = None
    busybox: bool | None = None
    force: bool = False


@dataclass(frozen=True)
class Plan:
    """A request resolved against the recipes and versions, every input checked."""

    request: Request
    recipe: Recipe
    release: Release
    arch: Arch
    init: InitMode
    extra_packages: tuple[str, ...]
    agent: AgentSource
    mode: str  # root, unshare, docker, or none (no distribution to bootstrap)
    mirror: str | None
    busybox: bool
    source_date_epoch: int | None
    output: Path
    agent_version: str  # the tarball's VERSION, else versions.yaml assets.agent.version

    @property
    def bootstraps(self) -> bool:
        return self.recipe.bootstrap.tool == "mmdebstrap"

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.init.packages, *self.extra_packages]))


@dataclass
class Result:
    plan: Plan
    cache_key: str
    cache_hit: bool
    meta: dict[str, Any]
    duration: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    tarball: Path | None = None  # the cache entry's rootfs.tar (later steps may read it directly)

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "ok": True,
            "output": str(plan.output),
            "distro": plan.recipe.name,
            "release": plan.release.codename,
            "arch": plan.arch.name,
            "init": plan.init.name,
            "backend": plan.request.backend,
            "mode": plan.mode,
            "cache_hit": self.cache_hit,
            "cache_key": self.cache_key,
            "cache_tarball": str(self.tarball) if self.tarball else None,
            "packages": self.meta.get("packages"),
            "packages_downloaded": None if self.cache_hit else self.meta.get("packages_downloaded"),
            "agent_sha256": self.meta.get("agent_sha256"),
            "agent_version": self.meta.get("agent_version"),
            "source_date_epoch": plan.source_date_epoch,
            "duration": round(self.duration, 3),
            "timings": self.timings,
        }


# --- planning -----------------------------------------------------------------------------------


def package_list(values: list[str]) -> tuple[str, ...]:
    """--extra-pkgs values: EXTRA_PKGS="a b" and --extra-pkgs a,b both work, as in Kata."""
    return tuple(name for value in values for name in value.replace(",", " ").split())


def check_output(output: Path, force: bool) -> Path:
    """The absolute output path, after making sure it can be created (bad input: exit 2)."""
    output = Path(os.path.abspath(output))
    where = f"-o {output}"
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UsageError(problem=f"{output} exists and is not a directory", where=where,
                         fix="choose another output directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UsageError(problem=f"{output} exists and is not empty", where=where,
                         fix="choose a new directory, empty this one, or pass --force to replace it")
    parent = output.parent
    if not parent.is_dir():
        raise UsageError(problem=f"the parent directory {parent} does not exist", where=where,
                         fix=f"create it first: mkdir -p {parent}")
    probe = parent / f".{output.name}.osbuilder-probe.{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise UsageError(problem=f"cannot create {output}: {exc.strerror}", where=where,
                         fix="choose an output directory in a writable place") from exc
    return output


def make_plan(context: Context, request: Request) -> Plan:
    arch = parse_arch(request.arch) if request.arch else host_arch()
    # Without --distro, the image's pinned distribution, release and init mode (versions.yaml).
    pin = context.versions.distro_pin("image", arch.name) if request.distro is None else None
    recipe = context.recipe(pin.distro if pin else str(request.distro))
    release = recipe.release(request.release or (pin.release if pin else None))
    if arch.name not in release.architectures:
        raise UsageError(problem=f"{recipe.name} {release.codename} is not available for {arch.name}",
                         where="--arch", fix=f"architectures of {release.codename}: {', '.join(release.architectures)}")
    init_name = "agent" if request.agent_init else (pin.init if pin else recipe.default_init)
    init = recipe.init(init_name)
    bootstraps = recipe.bootstrap.tool == "mmdebstrap"
    extra = tuple(dict.fromkeys(request.extra_packages))
    for package in extra:
        if not PACKAGE_NAME.fullmatch(package):
            raise UsageError(problem=f"'{package}' is not a Debian package name", where="--extra-pkgs",
                             fix="give package names such as 'strace' (lowercase letters, digits, + - .)")
    if extra and not bootstraps:
        raise UsageError(problem=f"{recipe.name} installs no packages", where="--extra-pkgs",
                         fix="use a distribution recipe (debian, ubuntu) for extra packages")
    if request.busybox and bootstraps:
        raise UsageError(problem=f"--busybox is for the minimal recipe; {recipe.name} has its own shell",
                         where="--busybox", fix="add busybox-static with --extra-pkgs instead")
    if not AGENT_NAME.fullmatch(request.agent_name):
        raise UsageError(problem=f"'{request.agent_name}' is not a file name", where="--agent-name",
                         fix="use a plain name such as kata-agent")
    if request.kernel_modules is not None and not request.kernel_modules.is_dir():
        raise UsageError(problem=f"{request.kernel_modules} is not a directory",
                         where=f"--kernel-modules {request.kernel_modules}",
                         fix="give the modules directory of the guest kernel (lib/modules/<version>)")
    if request.agent is not None and request.agent_tarball is not None:
        raise UsageError(problem="--agent and --agent-tarball exclude each other", where="--agent-tarball",
                         fix="give one of them")
    output = check_output(request.output, request.force)
    cache_root = Path(os.path.abspath(context.cache.root))
    if output == cache_root or cache_root in output.parents or output in cache_root.parents:
        # The cache keeps its rootfs entries in <cache>/rootfs: the two would overwrite each other.
        raise UsageError(problem=f"the output {output} and the cache directory {cache_root} overlap",
                         where=f"-o {output}", fix="write the rootfs outside the cache directory (see --cache-dir)")
    if bootstraps and request.backend == "native" and arch.name != host_arch().name \
            and not Path(f"/proc/sys/fs/binfmt_misc/qemu-{arch.qemu}").exists():
        raise UsageError(
            problem=f"bootstrapping {arch.name} on this {host_arch().name} host needs qemu-user emulation, "
                    "which is not registered",
            where=f"--arch {request.arch}", fix="apt-get install qemu-user-static binfmt-support, or build on a "
                                                f"{arch.name} host")
    sde = environment_epoch()
    if not bootstraps:
        mode = "none"
    elif request.backend == "docker":
        mode = "docker"
    else:
        mode = bootstrap.native_mode()
    mirror = bootstrap.bootstrap_mirror(recipe.bootstrap.archive or "debian", release.suite, request.mirror) \
        if bootstraps else request.mirror
    if request.agent_tarball is not None:
        agent = from_tarball(request.agent_tarball, request.agent_name)
    elif request.agent is not None:
        agent = from_file(request.agent)
    else:
        agent = from_file(default_agent(context), kind="default", where="the reference agent")
    return Plan(request, recipe, release, arch, init, extra, agent, mode, mirror,
                bool(request.busybox if request.busybox is not None else init.busybox), sde,
                output, agent.version or context.versions.agent_version)


# --- cache key ----------------------------------------------------------------------------------


def _builder_digest() -> str:
    package = Path(__file__).resolve().parent
    files = [package / name for name in BUILDER_MODULES]
    files += sorted((TEMPLATES_DIR / "rootfs").glob("*.j2"))
    return content_key({path.name: sha256_file(path) for path in files})


def strip_tool(arch: Arch) -> str:
    return "strip" if arch.name == host_arch().name else f"{arch.cross_prefix}strip"


def cache_inputs(plan: Plan, bootstrap_tool: str, memo: Path | None = None) -> dict[str, Any]:
    request = plan.request
    return {
        "kind": CACHE_KIND,
        "format": CACHE_FORMAT,
        "builder": _builder_digest(),
        # The package version, not the commit: the builder digest already covers the code that makes
        # a rootfs, and a cache hit keeps the osbuilder.yaml of the commit that built the entry.
        "osbuilder_version": __version__,
        "recipe": {"name": plan.recipe.name, "sha256": sha256_file(plan.recipe.path)},
        "release": plan.release.codename,
        "arch": plan.arch.name,
        "init": plan.init.name,
        "packages": sorted(plan.init.packages),
        "masked_units": sorted(plan.init.masked_units),
        "masked_generators": sorted(plan.init.masked_generators),
        "extra_packages": sorted(plan.extra_packages),
        "agent": {"source": plan.agent.kind, "sha256": plan.agent.sha256, "name": request.agent_name},
        "options": {
            "delete_unneeded": request.delete_unneeded,
            "busybox": plan.busybox,
            "kernel_modules": sha256_tree(request.kernel_modules) if request.kernel_modules else None,
        },
        "backend": request.backend if plan.bootstraps else "none",
        "bootstrap_tool": bootstrap_tool,
        "mirror": plan.mirror,
        "strip": runner.tool_version(strip_tool(plan.arch), memo, "strip the agent"),
        "source_date_epoch": plan.source_date_epoch,
    }


# --- building -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0.0) + time.monotonic() - started, 3)


def build(context: Context, plan: Plan) -> Result:
    started = time.monotonic()
    timings: dict[str, float] = {}
    memo = context.cache.root / runner.TOOL_VERSIONS
    builder: docker_backend.Builder | None = None
    engine = None
    if plan.mode == "docker":
        engine = docker_backend.client()
        base = plan.request.docker_base or docker_backend.default_base(plan.recipe.name, plan.release.codename)
        builder = docker_backend.builder_image(engine, plan.recipe.name, plan.release.codename, base)
        tool = f"docker:{builder.image_id}"
    elif plan.bootstraps:
        tool = bootstrap.mmdebstrap_version(memo)
    else:
        tool = "none"
    with _phase(timings, "cache_key"):
        inputs = cache_inputs(plan, tool, memo)
        key = content_key(inputs)
    existing = None if plan.request.no_cache else context.cache.lookup(CACHE_KIND, key)
    if existing is not None:
        log.info("cache hit: reusing rootfs %s (no bootstrap)", key[:16])
        hit = True
        meta = context.cache.entry_meta(CACHE_KIND, key)
        with _phase(timings, "install"):
            install(existing / ROOTFS_TAR, plan.output, plan.request.force, Split.from_json(meta.get("unpack_split")))
    else:
        log.info("building %s %s (%s, %s mode) for %s", plan.recipe.name, plan.release.codename, plan.init.name,
                 plan.mode, plan.arch.name)
        installer = Installer(plan.output, plan.request.force)
        try:
            made = context.cache.get_or_build(
                CACHE_KIND, key,
                lambda staging: _build_entry(context, plan, key, staging, engine, builder, timings, installer),
                force=plan.request.no_cache)
            meta = context.cache.entry_meta(CACHE_KIND, key)
            with _phase(timings, "install"):
                if installer.started:
                    installer.finish()  # the build filled it (in place, or by streaming the tarball)
                else:  # built by another process
                    install(made.path / ROOTFS_TAR, plan.output, plan.request.force,
                            Split.from_json(meta.get("unpack_split")))
        except BaseException:
            installer.abort()
            raise
        hit = made.hit
    return Result(plan, key, hit, meta, time.monotonic() - started, timings,
                  context.cache.entry(CACHE_KIND, key) / ROOTFS_TAR)


def _build_entry(context: Context, plan: Plan, key: str, staging: Path, engine: Any,
                 builder: docker_backend.Builder | None, timings: dict[str, float],
                 installer: Installer) -> dict[str, Any]:
    mtime = plan.source_date_epoch if plan.source_date_epoch is not None else int(time.time())
    base: Path | None = None
    downloaded: list[str] = []
    # As root, mmdebstrap writes its directory straight where the output will be, and the edits
    # are applied there: no tarball from mmdebstrap and no second copy of the tree (the cheapest
    # path, and the one that matters for speed). Otherwise (unshare, docker) its tarball is edited.
    in_place = plan.mode == "root" and _chroot_possible(plan.output.parent)
    if plan.bootstraps:
        base = installer.temporary if in_place else staging / "bootstrap.tar"
        with _phase(timings, "keyring"):  # once per cache: a fetch when the host lacks the keyring
            keyring = bootstrap.resolve_keyring(context, plan.recipe, plan.arch)
        with _phase(timings, "bootstrap"):
            downloaded = _bootstrap(context, plan, staging, base, keyring, engine, builder, in_place)
    with _phase(timings, "provision"):
        agent = _prepare_agent(plan, staging)
        if in_place and base is not None:
            tree = RootfsTree.from_directory(base, mtime=mtime, clamp=plan.source_date_epoch)
        else:
            tree = RootfsTree(base, mtime=mtime)
    with tree:
        with _phase(timings, "provision"):
            packages, manifest = _provision_tree(context, plan, key, tree, agent, staging)
        if in_place:
            with _phase(timings, "install"):
                tree.apply_to()  # the output is complete; the cache tarball is read from it
                installer.adopt()
        with _phase(timings, "write"), progress.bar(len(tree), "writing the rootfs", unit="files") as bar, \
                (staging / ROOTFS_TAR).open("wb") as cached:
            if in_place:
                tree.write(cached, bar.update)
            else:
                unpacking = installer.start()
                assert unpacking is not None
                tree.write(cast(BinaryIO, Tee(cached, unpacking)), bar.update)
    (staging / MANIFEST).write_text(manifest)
    agent.binary.unlink()
    if base is not None and not in_place:
        base.unlink()
    split = Split.of(tree)
    return {
        "unpack_split": split.to_json() if split else None,
        "packages": len(packages),
        "packages_downloaded": len(downloaded),
        "agent_sha256": agent.sha256,
        "agent_version": plan.agent_version,
        "distro": plan.recipe.name,
        "release": plan.release.codename,
        "init": plan.init.name,
        "mode": plan.mode,
    }


def _chroot_possible(directory: Path) -> bool:
    """Whether maintainer scripts can run in a chroot under directory (not noexec, not nodev)."""
    flags = os.statvfs(directory).f_flag
    return not flags & (os.ST_NOEXEC | os.ST_NODEV)


def _provision_tree(context: Context, plan: Plan, key: str, tree: RootfsTree, agent: provision.AgentInstall,
                    staging: Path) -> tuple[list[metadata.Package], str]:
    """Provision, describe and check the tree; return the installed packages and the manifest."""
    packages: list[metadata.Package] = []
    facts = None
    if plan.bootstraps:
        bootstrap.finish_tree(tree)
        # Evidence hook (SBOM): licenses and package origins, before provisioning trims them away.
        facts = packagefacts.collect(tree, plan.recipe.bootstrap.archive or "debian")
    else:
        provision.dirs_for_kernel_and_agent(tree)
        if plan.busybox:
            packages.append(_add_busybox(context, plan, tree, staging))
    spec = provision.Provisioning(
        init=plan.init.name, agent=agent, trims=plan.recipe.trim,
        delete_unneeded=plan.request.delete_unneeded, kernel_modules=plan.request.kernel_modules,
        masked_units=plan.init.masked_units, masked_generators=plan.init.masked_generators)
    provision.provision(tree, spec)
    if plan.bootstraps:
        packages = _installed_packages(tree, staging)
    tree.put_file(metadata.OSBUILDER_YAML, _osbuilder_yaml(plan).encode())
    manifest = _manifest(plan, key, agent, packages)
    tree.put_file(metadata.MANIFEST_JSON, manifest.encode())
    if facts is not None:
        tree.put_file(packagefacts.PACKAGES_JSON, packagefacts.render(facts))
    provision.require_ok(provision.check(tree, spec), "rootfs")
    return packages, manifest


def _phase_logger(description: str) -> tuple[Any, Any]:
    bar = progress.bar(None, description, unit="step")

    def on_line(line: str) -> None:
        log.debug("mmdebstrap: %s", line)
        if line.startswith("I: "):
            bar.set_postfix_str(line[3:60], refresh=False)
            bar.update(1)

    return bar, on_line


def _bootstrap(context: Context, plan: Plan, staging: Path, target: Path, keyring: Path | None, engine: Any,
               builder: docker_backend.Builder | None, in_place: bool) -> list[str]:
    recipe = plan.recipe
    spec = bootstrap.BootstrapSpec(
        suite=plan.release.suite, variant=recipe.bootstrap.variant, components=recipe.bootstrap.components,
        debian_arch=plan.arch.debian, packages=plan.packages, mirror=plan.mirror, trims=recipe.trim,
        options=recipe.bootstrap.options)
    packages = bootstrap.PackageCache(context.cache, recipe.bootstrap.archive or "debian", plan.release.suite,
                                      plan.arch.debian)
    debs_in, debs_out = staging / "debs-in", staging / "debs-out"
    debs_out.mkdir()
    packages.snapshot(debs_in)
    known = sorted(os.listdir(debs_in))
    bar, on_line = _phase_logger(f"bootstrap {recipe.name} {plan.release.codename}")
    with bar:
        if plan.mode == "docker":
            assert builder is not None
            root = docker_backend.MOUNT_ROOT
            paths = bootstrap.Paths(f"{root}/out/{target.name}", f"{root}/debs-in", f"{root}/out/{debs_out.name}",
                                    f"{root}/keyring.gpg" if keyring else None)
            mounts = [docker_backend.Mount(str(staging), f"{root}/out"),
                      docker_backend.Mount(str(debs_in), f"{root}/debs-in", read_only=True)]
            if keyring:
                mounts.append(docker_backend.Mount(str(keyring), f"{root}/keyring.gpg", read_only=True))
            argv = bootstrap.mmdebstrap_argv(spec, "root", paths, "tar")
            docker_backend.run(engine, builder, argv, mounts, owned_outputs=[f"{root}/out"], on_line=on_line)
        else:
            with bootstrap.keyring_for_apt(keyring) as readable:
                paths = bootstrap.Paths(str(target), str(debs_in), str(debs_out), str(readable) if readable else None)
                output_format = "directory" if in_place else "tar"
                bootstrap.run_native(
                    bootstrap.mmdebstrap_argv(spec, plan.mode, paths, output_format, direct=in_place), on_line)
    if in_place:
        archives = bootstrap.take_packages(target)
        downloaded = packages.merge(archives, known)
        for leftover in archives.glob("*.deb"):  # hard links to what the cache already has
            leftover.unlink()
    else:
        downloaded = packages.merge(debs_out, known)
    shutil.rmtree(debs_in)
    shutil.rmtree(debs_out)
    log.info("bootstrap done; %d packages downloaded, %d taken from the package cache", len(downloaded),
             len(known))
    return downloaded


def _prepare_agent(plan: Plan, staging: Path) -> provision.AgentInstall:
    """The agent binary, stripped (Kata strips it too)."""
    binary = staging / "agent.stripped"
    binary.write_bytes(plan.agent.binary)
    binary.chmod(0o755)
    runner.run([runner.require_tool(strip_tool(plan.arch), "strip the agent"), binary], what="strip the agent")
    return provision.AgentInstall(plan.request.agent_name, binary, sha256_file(binary), plan.agent.members)


def _add_busybox(context: Context, plan: Plan, tree: RootfsTree, staging: Path) -> metadata.Package:
    pin = context.versions.external("busybox")
    deb = ArchiveClient(context.fetcher, mirror=plan.request.mirror).resolve(pin, plan.arch.name, plan.arch.debian)
    binary = staging / "busybox"
    binary.write_bytes(extract_member(deb.path, BUSYBOX_MEMBER))
    binary.chmod(0o755)
    tree.put_file(BUSYBOX_MEMBER, binary.read_bytes(), mode=0o755)
    if plan.arch.name == host_arch().name:
        applets = runner.run([binary, "--list-full"], what="busybox --list-full").stdout.split()
    else:
        applets = ["bin/sh"]  # a foreign busybox cannot list its applets here
        log.warning("busybox for %s: only /bin/sh is linked (applets are listed by running busybox)",
                    plan.arch.name)
    for applet in sorted(applets):
        path = applet.strip("/")
        if path in ("sbin/init", "linuxrc", BUSYBOX_MEMBER) or tree.exists(path):
            continue  # the agent is init
        tree.put_symlink(path, f"/{BUSYBOX_MEMBER}")
    binary.unlink()
    return metadata.Package(pin.package, pin.version, plan.arch.debian)


def _installed_packages(tree: RootfsTree, staging: Path) -> list[metadata.Package]:
    """The installed packages, as dpkg-query reads the rootfs's own database."""
    admindir = staging / "dpkg"
    (admindir / "updates").mkdir(parents=True)
    (admindir / "status").write_bytes(tree.read("var/lib/dpkg/status"))
    query = runner.require_tool("dpkg-query", "list the installed packages")
    result = runner.run([query, f"--admindir={admindir}", "-W",
                         "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"],
                        what="dpkg-query")
    shutil.rmtree(admindir)
    return metadata.parse_dpkg_query(result.stdout)


def _osbuilder_yaml(plan: Plan) -> str:
    return metadata.OsbuilderYaml(
        osbuilder_version=metadata.source_version(),
        creation_time=metadata.creation_time(plan.source_date_epoch),
        architecture=plan.arch.name,
        distro=plan.recipe.name,
        release=plan.release.codename,
        packages=plan.init.packages,
        extra_packages=plan.extra_packages,
        agent_name=plan.request.agent_name,
        agent_version=plan.agent_version,
        agent_is_init=plan.init.name == "agent",
    ).render()


def _manifest(plan: Plan, key: str, agent: provision.AgentInstall, packages: list[metadata.Package]) -> str:
    request = plan.request
    return metadata.manifest(
        osbuilder_version=metadata.source_version(),
        recipe={"name": plan.recipe.name, "release": plan.release.codename, "version": plan.release.version,
                "sha256": sha256_file(plan.recipe.path)},
        arch=plan.arch.name,
        init=plan.init.name,
        options={
            "backend": request.backend if plan.bootstraps else "none",
            "extra_packages": list(plan.extra_packages),
            "delete_unneeded": request.delete_unneeded,
            "kernel_modules": request.kernel_modules.name if request.kernel_modules else None,
            "busybox": plan.busybox,
            "mirror": plan.mirror,
            "source_date_epoch": plan.source_date_epoch,
        },
        agent={"name": agent.name, "source": plan.agent.kind, "version": plan.agent_version,
               "sha256": agent.sha256, "source_sha256": plan.agent.sha256},
        packages=packages,
        cache_key=key,
    )


# --- installing ---------------------------------------------------------------------------------


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

    def __init__(self, output: Path, force: bool = False) -> None:
        self.output = output
        self.force = force
        self.idmap = userns.caller_map()
        self.temporary = output.with_name(f".{output.name}.osbuilder-new.{os.getpid()}")
        self.retired = output.with_name(f".{output.name}.osbuilder-old.{os.getpid()}")
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
        if not (self.temporary / metadata.OSBUILDER_YAML).is_file():
            raise BuildError(problem=f"the unpacked rootfs has no /{metadata.OSBUILDER_YAML}",
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


def install(tarball: Path, output: Path, force: bool = False, split: Split | None = None) -> None:
    """Unpack a cached rootfs tarball as `output` (see Installer)."""
    installer = Installer(output, force)
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


def describe(result: Result) -> str:
    plan = result.plan
    verb = "reused the cached rootfs" if result.cache_hit else "built the rootfs"
    agent = result.meta.get("agent_sha256") or ""
    return "\n".join([
        f"{verb} {plan.recipe.name} {plan.release.codename} ({plan.init.name} init, {plan.arch.name}, "
        f"{plan.mode} mode) in {result.duration:.2f} s",
        f"output:   {plan.output}",
        f"packages: {result.meta.get('packages')}",
        f"agent:    sha256 {agent}",
        f"cache:    {result.cache_key}",
    ])
