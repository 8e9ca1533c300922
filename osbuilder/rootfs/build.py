"""Building a planned rootfs: a cache hit installs the cached tarball; otherwise prepare, bootstrap,
provision, check, store in the cache and install.

The cache keeps each finished rootfs as one uncompressed PAX tarball (rootfs/<key>/rootfs.tar)
with numeric owners. A tarball keeps guest ownership exactly whoever stores it (a rootless
caller cannot own files as root, but a tar header can say so), stays an ordinary file of the
caller that `rm -rf` removes, is written and read sequentially, and is what mmdebstrap produces
in unshare mode anyway.

A build edits the distribution as a RootfsTree. When the bootstrapper can write in place (root on
this host), the base tree is written next to -o DIR, the edits are applied to it there and it is
renamed into place: the tree is written once, as by plain mmdebstrap. Otherwise the bootstrap's
tarball is edited and streamed into `tar -x` while it is written to the cache. Either way the output
equals what a cache hit unpacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from osbuilder import metadata, progress, staging, userns
from osbuilder.cache import BUILT, Cache
from osbuilder.fetch import Fetcher
from osbuilder.rootfs import manifest, packagefacts, provision
from osbuilder.rootfs.bootstrappers.base import Workspace
from osbuilder.rootfs.busybox import add_busybox
from osbuilder.rootfs.install import Installer, Split, Tee, install
from osbuilder.rootfs.plan import CACHE_KIND, Plan
from osbuilder.rootfs.prepare import Prepared, phase, prepare, probe_output, strip_agent
from osbuilder.rootfs.tree import RootfsTree
from osbuilder.versions import Versions

log = logging.getLogger(__name__)

ROOTFS_TAR = "rootfs.tar"
MANIFEST = "manifest.json"


@dataclass
class Result:
    plan: Plan
    cache_key: str
    cache_hit: bool
    meta: dict[str, Any]
    duration: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    tarball: Path | None = None  # the cache entry's rootfs.tar (later steps may read it directly)
    cache_source: str = BUILT  # local | remote | built (osbuilder.cache)

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "ok": True,
            "output": str(plan.output),
            "distro": plan.recipe.name,
            "release": plan.release.codename,
            "arch": plan.arch.name,
            "init": plan.init.name if plan.init is not None else None,
            "container": plan.container,
            "backend": plan.request.backend,
            "mode": plan.mode,
            "cache_hit": self.cache_hit,
            "cache": self.cache_source,
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


def marker(plan: Plan) -> str:
    """The file every complete tree of this plan's kind has (an unpack that lacks it is damaged)."""
    return metadata.MANIFEST_JSON if plan.container else metadata.OSBUILDER_YAML


def build(plan: Plan, versions: Versions, cache: Cache, fetcher: Fetcher, verbose: bool = False) -> Result:
    """The rootfs of a plan at plan.output: from the cache, or built (and stored) if absent."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    probe_output(plan.output)
    # What a killed build left next to the output and in the cache, said as it is removed; a rootless
    # build's staging tree belongs to the caller's subordinate ids and is removed in their namespace.
    staging.sweep(plan.output.parent, userns.remove_staging)
    staging.sweep_temporary(userns.remove_staging)  # mmdebstrap's directories of killed builds
    cache.sweep_stale()
    with phase(timings, "cache_key"):
        key = plan.cache_key
    installer = Installer(plan.output, plan.request.force, marker(plan))

    def build_entry(workdir: Path) -> dict[str, Any]:
        log.info("building %s %s (%s, %s mode) for %s", plan.recipe.name, plan.release.codename,
                 plan.init.name if plan.init is not None else "container root", plan.mode, plan.arch.name)
        prepared = prepare(plan, versions, cache, fetcher, timings, verbose)
        return _build_entry(prepared, workdir, cache, fetcher, versions, timings, installer)

    try:
        with cache.using(CACHE_KIND, key, build_entry, force=plan.request.no_cache,
                         inputs=plan.cache_inputs()) as made:
            meta = cache.entry_meta(CACHE_KIND, key)
            if made.hit:
                log.info("cache hit (%s): reusing rootfs %s (no bootstrap)", made.source, key[:16])
            with phase(timings, "install"):
                if installer.started:
                    installer.finish()  # the build filled it (in place, or by streaming the tarball)
                else:  # a cache hit, or built by another process
                    install(made.path / ROOTFS_TAR, plan.output, plan.request.force,
                            Split.from_json(meta.get("unpack_split")), marker(plan))
    except BaseException:
        installer.abort()
        raise
    return Result(plan, key, made.hit, meta, time.monotonic() - started, timings, cache.entry(CACHE_KIND, key) / ROOTFS_TAR,
                  made.source)


def _phase_logger(description: str) -> tuple[Any, Callable[[str], None]]:
    bar = progress.bar(None, description, unit="step")

    def on_line(line: str) -> None:
        log.debug("bootstrap: %s", line)
        if line.startswith("I: "):
            bar.set_postfix_str(line[3:60], refresh=False)
            bar.update(1)

    return bar, on_line


def _build_entry(prepared: Prepared, workdir: Path, cache: Cache, fetcher: Fetcher, versions: Versions,
                 timings: dict[str, float], installer: Installer) -> dict[str, Any]:
    plan = prepared.plan
    mtime = plan.source_date_epoch if plan.source_date_epoch is not None else int(time.time())
    bootstrapper = prepared.bootstrapper
    # As root, the base tree is written straight where the output will be, and the edits are
    # applied there: no tarball and no second copy of the tree (the cheapest path, and the one that
    # matters for speed). Otherwise (rootless, in a container) its tarball is edited.
    in_place = bootstrapper.can_write_in_place(plan.output.parent)
    target = installer.temporary if in_place else workdir / "bootstrap.tar"
    bar, on_line = _phase_logger(f"bootstrap {plan.recipe.name} {plan.release.codename}")
    with phase(timings, "bootstrap"), bar:
        bootstrapped = bootstrapper.bootstrap(plan.job, Workspace(target, in_place, workdir, cache, on_line))
    base = bootstrapped.base
    with phase(timings, "provision"):
        agent = strip_agent(plan, prepared.agent, workdir) if prepared.agent is not None else None
        if in_place and base is not None:
            tree = RootfsTree.from_directory(base, mtime=mtime, clamp=plan.source_date_epoch)
        else:
            tree = RootfsTree(base, mtime=mtime)
    with tree:
        with phase(timings, "provision"):
            packages, described = _provision(prepared, tree, agent, workdir, versions, fetcher)
        if in_place:
            with phase(timings, "install"):
                tree.apply_to()  # the output is complete; the cache tarball is read from it
                installer.adopt()
        with phase(timings, "write"), progress.bar(len(tree), "writing the rootfs", unit="files") as written, \
                (workdir / ROOTFS_TAR).open("wb") as cached:
            if in_place:
                tree.write(cached, written.update)
            else:
                unpacking = installer.start()
                assert unpacking is not None
                tree.write(cast(BinaryIO, Tee(cached, unpacking)), written.update)
    (workdir / MANIFEST).write_text(described)
    if agent is not None:
        agent.binary.unlink()
    if base is not None and not in_place:
        base.unlink()
    split = Split.of(tree)
    return {
        "unpack_split": split.to_json() if split else None,
        "packages": len(packages),
        "packages_downloaded": len(bootstrapped.downloaded),
        "agent_sha256": agent.sha256 if agent is not None else None,
        "agent_version": plan.agent_version,
        "distro": plan.recipe.name,
        "release": plan.release.codename,
        "init": plan.init.name if plan.init is not None else None,
        "container": plan.container,
        "mode": plan.mode,
    }


def _provision(prepared: Prepared, tree: RootfsTree, agent: provision.AgentInstall | None, workdir: Path,
               versions: Versions, fetcher: Fetcher) -> tuple[list[metadata.Package], str]:
    """Provision (guest roots), describe and check the tree; the installed packages and the manifest."""
    plan = prepared.plan
    packages: list[metadata.Package] = []
    prepared.bootstrapper.finish(tree)
    facts = None
    if plan.bootstraps and plan.job.keep_apt_lists:
        # Licenses and package origins, read before provisioning removes the copyright files and apt's lists.
        facts = packagefacts.collect(tree, plan.recipe.bootstrap.archive or "debian")
    if plan.busybox:
        packages.append(add_busybox(tree, plan.arch, workdir, versions, fetcher, plan.request.mirror))
    spec = None
    if plan.init is not None and agent is not None:
        spec = provision.Provisioning(
            init=plan.init.name, agent=agent, trims=plan.recipe.trim,
            delete_unneeded=plan.request.delete_unneeded, kernel_modules=plan.request.kernel_modules,
            masked_units=plan.init.masked_units, masked_generators=plan.init.masked_generators)
        provision.provision(tree, spec)
    else:
        # A container root gets no provisioning, but the build host's files have no place in it.
        provision.reset_host_files(tree)
    if plan.bootstraps:
        packages = manifest.installed_packages(tree, workdir)
    if spec is not None:
        tree.put_file(metadata.OSBUILDER_YAML, manifest.osbuilder_yaml(plan).encode())
    source_sha256 = prepared.agent.sha256 if prepared.agent is not None else None
    described = manifest.manifest_json(plan, agent, source_sha256, packages)
    tree.put_file(metadata.MANIFEST_JSON, described.encode())
    if facts is not None:
        tree.put_file(packagefacts.PACKAGES_JSON, packagefacts.render(facts))
    if spec is not None:
        provision.require_ok(provision.check(tree, spec), "rootfs")
    return packages, described


def describe(result: Result) -> str:
    plan = result.plan
    verb = {"local": "reused the cached rootfs", "remote": "pulled the rootfs from the remote cache"}.get(
        result.cache_source, "built the rootfs")
    kind = f"{plan.init.name} init" if plan.init is not None else "container root"
    lines = [
        f"{verb} {plan.recipe.name} {plan.release.codename} ({kind}, {plan.arch.name}, {plan.mode} mode) in "
        f"{result.duration:.2f} s",
        f"output:   {plan.output}",
        f"packages: {result.meta.get('packages')}",
    ]
    if not plan.container:
        lines.append(f"agent:    sha256 {result.meta.get('agent_sha256') or ''}")
    lines.append(f"cache:    {result.cache_key}")
    return "\n".join(lines)
