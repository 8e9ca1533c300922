"""osbuilder build-initrd: a rootfs directory → a compressed newc initrd."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from osbuilder import options
from osbuilder.assetcache import ENTRY_INITRD, INITRD_KIND, deliver
from osbuilder.cache import BUILT, content_key
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.evidence.options import BUDGETS
from osbuilder.initrd.options import INITRD
from osbuilder.outputs import check_output_path
from osbuilder.rootfs.options import ASSET, ROOTFS
from osbuilder.tree import parse_epoch

TABLES = (ASSET, INITRD, ROOTFS, BUDGETS)


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # every option is in the tables


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.arch import host_arch
    from osbuilder.evidence.assets import after_build, check_hit
    from osbuilder.evidence.sbom import SUFFIX as SBOM_SUFFIX
    from osbuilder.evidence.sbom import name_delivered_asset
    from osbuilder.initrd.builder import InitrdOptions, build_initrd, validate
    from osbuilder.rootfs import plan  # the planners load every bootstrapper: not at start-up
    from osbuilder.rootfs.plan import Request
    from osbuilder.rootfs.source import rootfs_input_for

    values = options.values(args, *TABLES)
    settings = InitrdOptions(
        output=check_output_path(values["output"]), compression=values["compression"], level=values["level"],
        agent_init=values["agent_init"], skip_rootfs_check=values["skip_rootfs_check"],
        agent_bin=values["agent_name"],
        source_date_epoch=parse_epoch(values["source_date_epoch"], "--source-date-epoch")
        if values["source_date_epoch"] is not None else None,
    )
    validate(settings)
    request = options.request(Request, args, ROOTFS)
    arch = request.arch or host_arch().name
    budgets = None if values["no_budgets"] else context.versions

    rootfs = rootfs_input_for(context, request, "initrd", settings.output, options.set_by_make(args, ROOTFS))

    if args.rootfs is not None:  # a tree of the user's: no key, no cache entry
        with rootfs(args.rootfs) as source:
            result = build_initrd(source.path, dataclasses.replace(settings, agent_init=source.agent_init))
            sbom = after_build(source.path, result.path, "initrd", result.epoch, arch=arch, versions=budgets)
        data = {**result.to_json(), "sbom": str(sbom) if sbom else None, "cache": BUILT, "cache_hit": False}
        return Outcome(data, describe(data))
    # A rootfs osbuilder builds has a cache key: the initrd is keyed by it and its options, and a
    # cached initrd (here or in the remote cache) needs no rootfs at all.
    planned = plan.plan(request, context.versions, context.recipe, context.cache.root, "initrd", key_only=True)
    keyed = dataclasses.replace(settings, agent_init=plan.is_agent_init(planned))

    def build(staging: Path) -> dict[str, Any]:
        with rootfs(None) as source:
            result = build_initrd(source.path, dataclasses.replace(keyed, output=staging / ENTRY_INITRD))
            # The SBOM is part of the entry: a hit needs no rootfs to have it.
            after_build(source.path, result.path, "initrd", result.epoch, arch=planned.arch.name,
                        versions=budgets, delivered_as=settings.output)
        return {"report": result.to_json(), "rootfs": source.built}

    sbom = settings.output.with_name(settings.output.name + SBOM_SUFFIX)
    inputs = keyed.key_inputs(planned.cache_key)  # once: it asks the compressor for its version
    delivered = deliver(context.cache, INITRD_KIND, content_key(inputs), inputs, build,
                        {ENTRY_INITRD: settings.output, ENTRY_INITRD + SBOM_SUFFIX: sbom})
    name_delivered_asset(sbom, settings.output.name)
    if delivered.source != BUILT:
        check_hit(budgets, planned, "initrd", settings.output)
    data = {**delivered.report, "initrd": str(settings.output), "sbom": str(sbom),
            "rootfs": delivered.meta.get("rootfs") if delivered.source == BUILT else None,
            **delivered.cache_fields()}
    return Outcome(data, describe(data))


def describe(data: dict[str, Any]) -> str:
    how = {"local": "from the cache", "remote": "pulled from the remote cache"}.get(data["cache"], "built")
    return (f"{data['initrd']}: {data['size']} bytes, {data['compression']} level {data['level']}, {data['entries']} "
            f"entries ({data['cpio_bytes']} bytes of cpio)\n  /init -> {data['init']}"
            f"{' (added)' if data['init_added'] else ''}; {how}" + (f"\n  SBOM: {data['sbom']}" if data.get("sbom") else ""))


COMMAND = Command("build-initrd", "build a reproducible, compressed cpio initrd from a rootfs directory",
                  configure, run, order=31, options=TABLES,
                  epilog="Without ROOTFS_DIR the initrd is a cache entry keyed by its rootfs's key and its options "
                         "(content_key in --json): a hit, here or in the remote cache, builds no rootfs.")
