"""What a built rootfs says about itself: Kata's osbuilder.yaml (guest roots) and manifest.json
(every root: the recipe, the options, the agent, every installed package and the cache key)."""

from __future__ import annotations

import shutil
from pathlib import Path

from osbuilder import metadata, runner
from osbuilder.cache import sha256_file
from osbuilder.modes import InitMode
from osbuilder.rootfs.plan import Plan
from osbuilder.rootfs.provision import AgentInstall
from osbuilder.rootfs.tree import RootfsTree


def installed_packages(tree: RootfsTree, staging: Path) -> list[metadata.Package]:
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


def osbuilder_yaml(plan: Plan) -> str:
    """Kata's /var/lib/osbuilder/osbuilder.yaml of a guest rootfs."""
    assert plan.init is not None and plan.agent_version is not None
    return metadata.OsbuilderYaml(
        osbuilder_version=metadata.step_version(plan.code),
        creation_time=metadata.creation_time(plan.source_date_epoch),
        architecture=plan.arch.name,
        distro=plan.recipe.name,
        release=plan.release.codename,
        packages=plan.init.packages,
        extra_packages=plan.extra_packages,
        agent_name=plan.request.agent_name,
        agent_version=plan.agent_version,
        agent_is_init=plan.init.name is InitMode.AGENT,
    ).render()


def manifest_json(plan: Plan, agent: AgentInstall | None, source_sha256: str | None,
                  packages: list[metadata.Package]) -> str:
    request = plan.request
    options = {
        "backend": request.backend if plan.bootstraps else "none",
        "extra_packages": list(plan.extra_packages),
        "delete_unneeded": request.delete_unneeded,
        "kernel_modules": plan.kernel_modules,
        "busybox": plan.busybox,
        "mirror": plan.mirror,
        "source_date_epoch": plan.source_date_epoch,
    }
    described_agent = None if agent is None or plan.agent is None else {
        "name": agent.name, "source": plan.agent.kind, "version": plan.agent_version, "sha256": agent.sha256,
        "source_sha256": source_sha256}
    return metadata.manifest(
        osbuilder_version=metadata.step_version(plan.code),
        recipe={"name": plan.recipe.name, "release": plan.release.codename, "version": plan.release.version,
                "sha256": sha256_file(plan.recipe.path)},
        arch=plan.arch.name,
        init=plan.init.name if plan.init is not None else None,
        options=options,
        agent=described_agent,
        packages=packages,
        cache_key=plan.cache_key,
        container=plan.container,
    )
