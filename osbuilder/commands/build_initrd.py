"""osbuilder build-initrd: a rootfs directory → a compressed newc initrd."""

from __future__ import annotations

import argparse
import dataclasses

from osbuilder import options
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.evidence.options import BUDGETS
from osbuilder.initrd.options import INITRD
from osbuilder.outputs import check_output_path
from osbuilder.rootfs.options import ASSET, ROOTFS
from osbuilder.rootfs.plan import Request
from osbuilder.rootfs.source import rootfs_input
from osbuilder.tree import parse_epoch

TABLES = (ASSET, INITRD, ROOTFS, BUDGETS)


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # every option is in the tables


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.arch import host_arch
    from osbuilder.evidence.assets import after_build
    from osbuilder.initrd.builder import InitrdOptions, build_initrd, validate

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
    with rootfs_input(args.rootfs, request, "initrd", settings.output, versions=context.versions,
                      recipe_named=context.recipe, cache=context.cache, fetcher=context.fetcher,
                      verbose=context.verbose > 0, from_make=options.set_by_make(args, ROOTFS)) as source:
        result = build_initrd(source.path, dataclasses.replace(settings, agent_init=source.agent_init))
        sbom = after_build(source.path, result.path, "initrd", result.epoch, arch=request.arch or host_arch().name,
                           versions=None if values["no_budgets"] else context.versions)
    data = result.to_json()
    data["sbom"] = str(sbom) if sbom else None
    if source.built is not None and source.cache_key is not None:
        data["rootfs"] = source.built
        data["content_key"] = dataclasses.replace(settings, agent_init=source.agent_init).content_key(source.cache_key)
    text = (f"{result.path}: {result.size} bytes, {result.compression} level {result.level}, {result.entries} entries "
            f"({result.cpio_bytes} bytes of cpio)\n  /init -> {result.init_target}"
            f"{' (added)' if result.init_added else ''}; built in {result.timings.get('total', 0):.2f} s"
            + (f"\n  SBOM: {sbom}" if sbom else ""))
    return Outcome(data, text)


COMMAND = Command("build-initrd", "build a reproducible, compressed cpio initrd from a rootfs directory",
                  configure, run, order=31, options=TABLES)
