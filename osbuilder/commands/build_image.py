"""osbuilder build-image: a rootfs directory → Kata's DAX disk image (optionally measured)."""

from __future__ import annotations

import argparse
import dataclasses

from osbuilder import options
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.evidence.options import BUDGETS
from osbuilder.image.layout import MIB
from osbuilder.image.options import IDENTIFIERS, IMAGE, image_options
from osbuilder.outputs import check_output_path
from osbuilder.rootfs.options import ASSET, ROOTFS
from osbuilder.rootfs.plan import Request
from osbuilder.rootfs.source import rootfs_input

TABLES = (ASSET, IMAGE, IDENTIFIERS, ROOTFS, BUDGETS)


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # every option is in the tables


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.arch import host_arch
    from osbuilder.evidence.assets import after_build
    from osbuilder.image.builder import build_image, validate

    values = options.values(args, *TABLES)
    settings = validate(image_options(values))
    request = options.request(Request, args, ROOTFS)
    with rootfs_input(args.rootfs, request, "image", check_output_path(settings.output), versions=context.versions,
                      recipe_named=context.recipe, cache=context.cache, fetcher=context.fetcher,
                      verbose=context.verbose > 0, from_make=options.set_by_make(args, ROOTFS)) as source:
        # A built rootfs is identified by its cache key: the image's identifiers derive from it.
        result = build_image(source.path, dataclasses.replace(settings, agent_init=source.agent_init,
                                                               seed=settings.seed or source.cache_key))
        free = result.filesystem.details.get("free_blocks")
        sbom = after_build(source.path, result.path, "image", result.epoch, arch=request.arch or host_arch().name,
                           versions=None if values["no_budgets"] else context.versions,
                           free_bytes=free * result.filesystem.block_size if isinstance(free, int) else None)
    layout = result.layout
    lines = [
        f"{result.path}: {layout.size // MIB} MiB {result.filesystem.fs_type} image"
        f" ({'DAX header' if layout.dax_header else 'no DAX header'}{', measured' if layout.measured else ''})",
        f"  rootfs partition at {layout.root.offset} ({layout.root.size} bytes), filesystem uuid {result.filesystem.uuid}",
    ]
    if result.verity is not None:
        lines.append(f"  root hash: {result.verity.root_hash} (written to {result.root_hash_file})")
    lines.append(f"  built in {result.timings.get('total', 0):.2f} s; timestamps clamped to {result.epoch} "
                 f"({result.epoch_source})")
    if sbom is not None:
        lines.append(f"  SBOM: {sbom}")
    data = result.to_json()
    data["sbom"] = str(sbom) if sbom else None
    if source.built is not None:
        data["rootfs"] = source.built
        data["content_key"] = dataclasses.replace(settings, seed=settings.seed or source.cache_key).content_key()
    return Outcome(data, "\n".join(lines))


COMMAND = Command("build-image", "build Kata's DAX disk image from a rootfs directory (no root, no loop devices)",
                  configure, run, order=30, options=TABLES,
                  epilog="Layout: MBR #1 + NVDIMM pfn block in the first 2 MiB, MBR #2 at 2 MiB, the filesystem "
                         "at 3 MiB.\nWith --no-dax-header: one MBR, the filesystem at 1 MiB.")
