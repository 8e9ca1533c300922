"""The command-line options that say what to boot and how: one declaration for `boot` and `run`."""

from __future__ import annotations

import argparse
from pathlib import Path

from osbuilder.boot.qemu import AGENT_PORT_NAME
from osbuilder.boot.transport import TRANSPORTS
from osbuilder.image.layout import FS_TYPES


def add_asset_options(parser: argparse.ArgumentParser, *, bundle_help: str) -> None:
    assets = parser.add_argument_group("what to boot")
    assets.add_argument("--kernel", type=Path, help="guest kernel (vmlinux or bzImage)")
    what = assets.add_mutually_exclusive_group()
    what.add_argument("--image", type=Path, help="rootfs disk image")
    what.add_argument("--initrd", type=Path, help="initrd (the agent is init)")
    assets.add_argument("--config", type=Path, metavar="TOML",
                        help="Kata runtime configuration: kernel, image or initrd, kernel_params, rootfs_type, "
                             "disable_image_nvdimm, kernel_verity_params")
    assets.add_argument("--bundle", type=Path, metavar="TARBALL", help=bundle_help)


def add_vm_options(parser: argparse.ArgumentParser) -> None:
    how = parser.add_argument_group("how to boot")
    how.add_argument("--no-dax", action="store_true", help="attach the image as virtio-blk instead of an NVDIMM")
    how.add_argument("--fs-type", choices=FS_TYPES, help="rootfs filesystem type (default: ext4, or the config's)")
    how.add_argument("--verity", metavar="LINE|FILE",
                     help="kernel_verity_params of a measured image, or the root_hash file written next to it")
    how.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                     help="auto: KVM only if a probe guest makes progress, else TCG")
    how.add_argument("--transport", choices=TRANSPORTS, default="auto",
                     help="agent channel; auto: vsock when the host has a usable vhost-vsock, else virtio-serial")
    how.add_argument("--port-name", default=AGENT_PORT_NAME, help="virtio-serial port name of the agent")
    how.add_argument("--kernel-params", default="", metavar="PARAMS", help="extra kernel parameters")
    how.add_argument("--verbosity", choices=("quiet", "normal", "debug"), default="normal",
                     help="quiet/debug: the runtime's kernel parameters for those modes")
    how.add_argument("--memory", type=int, metavar="MB", help="guest memory (default 2048)")
    how.add_argument("--cpus", type=int, help="guest vCPUs (default 1)")
    how.add_argument("--arch", help="guest architecture (default: the host's)")
    how.add_argument("--qemu", metavar="PATH", help="QEMU binary (default qemu-system-<arch>)")
    how.add_argument("--console-log", type=Path, metavar="FILE", help="write the guest console here")
