"""osbuilder build-initrd: a rootfs directory → a compressed newc initrd."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.initrd.compression import CODECS, DEFAULT
from osbuilder.outputs import check_output_path
from osbuilder.rootfs_source import add_rootfs_options, rootfs_input
from osbuilder.tree import parse_epoch


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rootfs", nargs="?", type=Path, metavar="ROOTFS_DIR",
                        help="the rootfs directory; without it the rootfs is built first "
                             "(the options below, default: versions.yaml assets.initrd)")
    parser.add_argument("-o", "--output", type=Path, default=Path("kata-containers-initrd.img"), metavar="INITRD",
                        help="the initrd to write (default: kata-containers-initrd.img)")
    parser.add_argument("--compression", choices=list(CODECS), default=DEFAULT,
                        help=f"compressor (default {DEFAULT}: smaller than gzip -9, much faster to build and to "
                             "unpack at boot; the kernel needs the matching CONFIG_RD_*)")
    parser.add_argument("--level", type=int, metavar="N", help="compression level (default: the codec's)")
    parser.add_argument("--agent-init", action="store_true",
                        help="the agent is /sbin/init (AGENT_INIT=yes): /init -> /sbin/init instead of systemd")
    parser.add_argument("--skip-rootfs-check", action="store_true", help="do not check /sbin/init and the agent")
    parser.add_argument("--agent-bin", default="kata-agent", metavar="NAME", help="the agent's name (AGENT_BIN)")
    parser.add_argument("--source-date-epoch", metavar="SECONDS",
                        help="clamp every mtime to this time (default: $SOURCE_DATE_EPOCH, else the newest mtime)")

    parser.add_argument("--no-budgets", action="store_true", help="do not check the initrd against its size budget")
    add_rootfs_options(parser)

def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.arch import host_arch
    from osbuilder.evidence.budgets import check_rootfs_asset
    from osbuilder.evidence.sbom import for_built_asset
    from osbuilder.initrd.builder import InitrdOptions, build_initrd, validate

    options = InitrdOptions(
        output=check_output_path(args.output), compression=args.compression, level=args.level,
        agent_init=args.agent_init, skip_rootfs_check=args.skip_rootfs_check, agent_bin=args.agent_bin,
        source_date_epoch=parse_epoch(args.source_date_epoch, "--source-date-epoch")
        if args.source_date_epoch is not None else None,
    )
    validate(options)
    with rootfs_input(context, args, "initrd", options.output) as source:
        result = build_initrd(source.path, dataclasses.replace(options, agent_init=source.agent_init))
        sbom = for_built_asset(source.path, result.path, "initrd", result.epoch)  # evidence hook (SBOM)
        if not args.no_budgets:  # evidence hook (budgets)
            check_rootfs_asset(context.versions, args.arch or host_arch().name, "initrd", source.path, result.path)
    data = result.to_json()
    data["sbom"] = str(sbom) if sbom else None
    if source.built is not None:
        data["rootfs"] = source.built
    text = (f"{result.path}: {result.size} bytes, {result.compression} level {result.level}, {result.entries} entries "
            f"({result.cpio_bytes} bytes of cpio)\n  /init -> {result.init_target}"
            f"{' (added)' if result.init_added else ''}; built in {result.timings.get('total', 0):.2f} s"
            + (f"\n  SBOM: {sbom}" if sbom else ""))
    return Outcome(data, text)


COMMAND = Command("build-initrd", "build a reproducible, compressed cpio initrd from a rootfs directory",
                  configure, run, order=31)
