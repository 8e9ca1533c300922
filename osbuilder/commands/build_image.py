"""osbuilder build-image: a rootfs directory → Kata's DAX disk image (optionally measured)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.image.layout import DEFAULT_ALIGNMENT_MB, FS_TYPES, MIB
from osbuilder.outputs import check_output_path
from osbuilder.rootfs_source import add_rootfs_options, rootfs_input
from osbuilder.tree import parse_epoch

if TYPE_CHECKING:
    from osbuilder.image.builder import ImageOptions


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rootfs", nargs="?", type=Path, metavar="ROOTFS_DIR",
                        help="the rootfs directory; without it the rootfs is built first "
                             "(the options below, default: versions.yaml assets.image)")
    parser.add_argument("-o", "--output", type=Path, default=Path("kata-containers.img"), metavar="IMAGE",
                        help="the image to write (default: kata-containers.img)")
    parser.add_argument("--fs-type", choices=FS_TYPES, default="ext4", help="filesystem (FS_TYPE; default ext4)")
    parser.add_argument("--root-free-space", type=int, default=0, metavar="MB",
                        help="free space to add before alignment, in MiB (ROOT_FREE_SPACE)")
    parser.add_argument("--alignment-mb", type=int, default=DEFAULT_ALIGNMENT_MB, metavar="N",
                        help="round the image size up to N MiB (IMAGE_SIZE_ALIGNMENT_MB; default 128; "
                             "erofs images are not aligned)")
    parser.add_argument("--block-size", type=int, default=4096, metavar="BYTES",
                        help="filesystem block size (BLOCK_SIZE; DAX needs 4096, erofs only supports 4096)")
    parser.add_argument("--no-dax-header", action="store_true",
                        help="a plain image: one MBR, rootfs at 1 MiB, no NVDIMM header (SKIP_DAX_HEADER=yes)")
    parser.add_argument("--measured", action="store_true",
                        help="add a dm-verity hash partition and write the root hash line (MEASURED_ROOTFS=yes)")
    parser.add_argument("--agent-init", action="store_true",
                        help="the agent is /sbin/init, not systemd (AGENT_INIT=yes): checked in the rootfs")
    parser.add_argument("--skip-rootfs-check", action="store_true",
                        help="do not check /sbin/init and systemd (SKIP_ROOTFS_CHECK=yes, e.g. extension images)")
    parser.add_argument("--agent-bin", default="kata-agent", metavar="NAME", help="the agent's name (AGENT_BIN)")
    parser.add_argument("--variant", default="", metavar="NAME",
                        help="write the root hash to root_hash_NAME.txt (BUILD_VARIANT)")
    parser.add_argument("--root-hash-file", type=Path, metavar="PATH",
                        help="where to write the root hash line (default: root_hash.txt next to the image)")
    ids = parser.add_argument_group("identifiers (derived from the inputs unless given)")
    ids.add_argument("--disk-signature", metavar="HEX", help="the MBRs' 32-bit disk signature, e.g. 0x4b415441")
    ids.add_argument("--fs-uuid", metavar="UUID", help="the filesystem UUID")
    ids.add_argument("--hash-seed", metavar="UUID", help="ext4's directory hash seed")
    ids.add_argument("--verity-salt", metavar="HEX", help="the dm-verity salt")
    ids.add_argument("--source-date-epoch", metavar="SECONDS",
                     help="clamp every timestamp to this time (default: $SOURCE_DATE_EPOCH, else the newest "
                          "mtime in the rootfs)")

    parser.add_argument("--no-budgets", action="store_true", help="do not check the image against its size budgets")
    add_rootfs_options(parser)

def options_from_args(args: argparse.Namespace) -> ImageOptions:
    # The builder is imported when a build runs, not for every command's --help.
    from osbuilder.image.builder import ImageOptions, parse_disk_signature, parse_salt, parse_uuid

    return ImageOptions(
        output=args.output, fs_type=args.fs_type, root_free_space_mb=args.root_free_space,
        alignment_mb=args.alignment_mb, block_size=args.block_size, dax_header=not args.no_dax_header,
        measured=args.measured, agent_init=args.agent_init, skip_rootfs_check=args.skip_rootfs_check,
        agent_bin=args.agent_bin, variant=args.variant, root_hash_file=args.root_hash_file,
        disk_signature=parse_disk_signature(args.disk_signature) if args.disk_signature else None,
        fs_uuid=parse_uuid(args.fs_uuid, "--fs-uuid") if args.fs_uuid else None,
        hash_seed=parse_uuid(args.hash_seed, "--hash-seed") if args.hash_seed else None,
        verity_salt=parse_salt(args.verity_salt) if args.verity_salt else None,
        source_date_epoch=parse_epoch(args.source_date_epoch, "--source-date-epoch")
        if args.source_date_epoch is not None else None,
    )


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.arch import host_arch
    from osbuilder.evidence.budgets import check_rootfs_asset
    from osbuilder.evidence.sbom import for_built_asset
    from osbuilder.image.builder import build_image, validate

    options = validate(options_from_args(args))
    with rootfs_input(context, args, "image", check_output_path(args.output)) as source:
        # A built rootfs is identified by its cache key: the image's identifiers derive from it.
        result = build_image(source.path, dataclasses.replace(options, agent_init=source.agent_init,
                                                              seed=options.seed or source.cache_key))
        sbom = for_built_asset(source.path, result.path, "image", result.epoch)  # evidence hook (SBOM)
        if not args.no_budgets:  # evidence hook (budgets): exit 1 over the pinned image's budgets
            free = result.filesystem.details.get("free_blocks")
            check_rootfs_asset(context.versions, args.arch or host_arch().name, "image", source.path, result.path,
                               free * result.filesystem.block_size if isinstance(free, int) else None)
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
    return Outcome(data, "\n".join(lines))


COMMAND = Command("build-image", "build Kata's DAX disk image from a rootfs directory (no root, no loop devices)",
                  configure, run, order=30,
                  epilog="Layout: MBR #1 + NVDIMM pfn block in the first 2 MiB, MBR #2 at 2 MiB, the filesystem "
                         "at 3 MiB.\nWith --no-dax-header: one MBR, the filesystem at 1 MiB.")
