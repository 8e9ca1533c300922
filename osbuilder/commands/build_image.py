"""osbuilder build-image: a rootfs directory → Kata's DAX disk image (optionally measured)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbuilder import options
from osbuilder.assetcache import ENTRY_IMAGE, ENTRY_ROOT_HASH, IMAGE_KIND, deliver
from osbuilder.cache import BUILT, content_key
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.evidence.options import BUDGETS
from osbuilder.image.layout import MIB
from osbuilder.image.options import IDENTIFIERS, IMAGE, image_options
from osbuilder.outputs import check_output_path
from osbuilder.rootfs.options import ASSET, ROOTFS

if TYPE_CHECKING:
    from osbuilder.image.builder import ImageOptions, ImageResult

TABLES = (ASSET, IMAGE, IDENTIFIERS, ROOTFS, BUDGETS)


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # every option is in the tables


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.arch import host_arch
    from osbuilder.evidence.assets import after_build, check_hit
    from osbuilder.evidence.sbom import SUFFIX as SBOM_SUFFIX
    from osbuilder.evidence.sbom import name_delivered_asset
    from osbuilder.image.builder import build_image, validate
    from osbuilder.rootfs import plan  # the planners load every bootstrapper: not at start-up
    from osbuilder.rootfs.plan import Request
    from osbuilder.rootfs.source import rootfs_input_for

    values = options.values(args, *TABLES)
    settings = validate(image_options(values))
    request = options.request(Request, args, ROOTFS)
    output = check_output_path(settings.output)
    arch = request.arch or host_arch().name
    budgets = None if values["no_budgets"] else context.versions

    def free_bytes(result: ImageResult) -> int | None:
        free = result.filesystem.details.get("free_blocks")
        return free * result.filesystem.block_size if isinstance(free, int) else None

    rootfs = rootfs_input_for(context, request, "image", output, options.set_by_make(args, ROOTFS))

    if args.rootfs is not None:  # a tree of the user's: no key, no cache entry
        with rootfs(args.rootfs) as source:
            result = build_image(source.path, dataclasses.replace(settings, agent_init=source.agent_init))
            sbom = after_build(source.path, result.path, "image", result.epoch, arch=arch, versions=budgets,
                               free_bytes=free_bytes(result))
        data = {**result.to_json(), "sbom": str(sbom) if sbom else None, "cache": BUILT, "cache_hit": False}
        return Outcome(data, describe(data))
    # A rootfs osbuilder builds has a cache key: the image is keyed by it and its options, and a
    # cached image (here or in the remote cache) needs no rootfs at all.
    planned = plan.plan(request, context.versions, context.recipe, context.cache.root, "image", key_only=True)
    keyed = dataclasses.replace(settings, agent_init=plan.is_agent_init(planned),
                                seed=settings.seed or planned.cache_key)
    inputs = keyed.key_inputs()

    def build(staging: Path) -> dict[str, Any]:
        with rootfs(None) as source:
            result = build_image(source.path, _into(keyed, staging))
            # The SBOM is part of the entry: a hit needs no rootfs to have it.
            after_build(source.path, result.path, "image", result.epoch, arch=planned.arch.name, versions=budgets,
                        free_bytes=free_bytes(result), delivered_as=output)
        return {"report": result.to_json(), "rootfs": source.built}

    root_hash = settings.root_hash_path() if settings.measured else None
    sbom = output.with_name(output.name + SBOM_SUFFIX)
    delivered = deliver(context.cache, IMAGE_KIND, content_key(inputs), inputs, build,
                        {ENTRY_IMAGE: output, ENTRY_ROOT_HASH: root_hash, ENTRY_IMAGE + SBOM_SUFFIX: sbom})
    name_delivered_asset(sbom, output.name)
    if delivered.source != BUILT:
        filesystem = delivered.report.get("filesystem") or {}
        free, block = filesystem.get("free_blocks"), filesystem.get("block_size")
        check_hit(budgets, planned, "image", output,
                  free * block if isinstance(free, int) and isinstance(block, int) else None)
    data = {**delivered.report, "image": str(output), "root_hash_file": str(root_hash) if root_hash else None,
            "sbom": str(sbom),
            "rootfs": delivered.meta.get("rootfs") if delivered.source == BUILT else None,
            **delivered.cache_fields()}
    return Outcome(data, describe(data))


def _into(keyed: ImageOptions, staging: Path) -> ImageOptions:
    return dataclasses.replace(keyed, output=staging / ENTRY_IMAGE,
                               root_hash_file=staging / ENTRY_ROOT_HASH if keyed.measured else None)


def describe(data: dict[str, Any]) -> str:
    layout, filesystem = data["layout"], data["filesystem"]
    dax = "DAX header" if layout.get("dax_header") else "no DAX header"
    lines = [
        f"{data['image']}: {data['size'] // MIB} MiB {filesystem.get('type')} image"
        f" ({dax}{', measured' if layout.get('measured') else ''})",
        f"  filesystem uuid {filesystem.get('uuid')}",
    ]
    if data.get("verity"):
        lines.append(f"  root hash: {data['verity'].get('root_hash')} (written to {data['root_hash_file']})")
    how = {"local": "from the cache", "remote": "pulled from the remote cache"}.get(data["cache"], "built")
    lines.append(f"  {how}; timestamps clamped to {data['source_date_epoch']} ({data['source_date_epoch_from']})")
    if data.get("sbom"):
        lines.append(f"  SBOM: {data['sbom']}")
    return "\n".join(lines)


COMMAND = Command("build-image", "build Kata's DAX disk image from a rootfs directory (no root, no loop devices)",
                  configure, run, order=30, options=TABLES,
                  epilog="Layout: MBR #1 + NVDIMM pfn block in the first 2 MiB, MBR #2 at 2 MiB, the filesystem "
                         "at 3 MiB.\nWith --no-dax-header: one MBR, the filesystem at 1 MiB.\n\n"
                         "Without ROOTFS_DIR the image is a cache entry keyed by its rootfs's key and its options "
                         "(content_key in --json): a hit, here or in the remote cache, builds no rootfs.")
