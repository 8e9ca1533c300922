"""build-image's options, declared once (osbuilder.options); Kata's image_builder.sh variables are
their Make variables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbuilder.image.layout import DEFAULT_ALIGNMENT_MB
from osbuilder.kernelcmdline import FS_TYPES
from osbuilder.options import Kind, Option, Table
from osbuilder.tree import parse_epoch

if TYPE_CHECKING:
    from osbuilder.image.builder import ImageOptions

DEFAULT_OUTPUT = Path("kata-containers.img")

IMAGE = Table("the image", (
    Option("output", ("-o", "--output"), f"the image to write (default: {DEFAULT_OUTPUT})", kind=Kind.PATH,
           default=DEFAULT_OUTPUT, metavar="IMAGE"),
    Option("fs_type", ("--fs-type",), "filesystem (default ext4)", make="FS_TYPE", choices=FS_TYPES, default="ext4"),
    Option("root_free_space", ("--root-free-space",), "free space to add before alignment, in MiB",
           make="ROOT_FREE_SPACE", kind=Kind.INT, default=0, metavar="MB"),
    Option("alignment_mb", ("--alignment-mb",), f"round the image size up to N MiB (default {DEFAULT_ALIGNMENT_MB}; "
           "erofs images are not aligned)", make="IMAGE_SIZE_ALIGNMENT_MB", kind=Kind.INT,
           default=DEFAULT_ALIGNMENT_MB, metavar="N"),
    Option("block_size", ("--block-size",), "filesystem block size (DAX needs 4096, erofs only supports 4096)",
           make="BLOCK_SIZE", kind=Kind.INT, default=4096, metavar="BYTES"),
    Option("no_dax_header", ("--no-dax-header",), "a plain image: one MBR, rootfs at 1 MiB, no NVDIMM header",
           make="SKIP_DAX_HEADER", kind=Kind.FLAG, default=False),
    Option("measured", ("--measured",), "add a dm-verity hash partition and write the root hash line",
           make="MEASURED_ROOTFS", kind=Kind.FLAG, default=False),
    Option("variant", ("--variant",), "write the root hash to root_hash_NAME.txt", make="BUILD_VARIANT", default="",
           metavar="NAME"),
    Option("root_hash_file", ("--root-hash-file",),
           "where to write the root hash line (default: root_hash.txt next to the image)", kind=Kind.PATH,
           metavar="PATH"),
))

IDENTIFIERS = Table("identifiers (derived from the inputs unless given)", (
    Option("disk_signature", ("--disk-signature",), "the MBRs' 32-bit disk signature, e.g. 0x4b415441",
           metavar="HEX"),
    Option("fs_uuid", ("--fs-uuid",), "the filesystem UUID", metavar="UUID"),
    Option("hash_seed", ("--hash-seed",), "ext4's directory hash seed", metavar="UUID"),
    Option("verity_salt", ("--verity-salt",), "the dm-verity salt", metavar="HEX"),
))


def image_options(values: dict[str, Any]) -> ImageOptions:
    """ImageOptions from the values of IMAGE, IDENTIFIERS and the asset and rootfs tables."""
    # The builder is imported when a build runs, not for every command's --help.
    from osbuilder.image.builder import ImageOptions, parse_disk_signature, parse_salt, parse_uuid

    return ImageOptions(
        output=values["output"], fs_type=values["fs_type"], root_free_space_mb=values["root_free_space"],
        alignment_mb=values["alignment_mb"], block_size=values["block_size"],
        dax_header=not values["no_dax_header"], measured=values["measured"], agent_init=values["agent_init"],
        skip_rootfs_check=values["skip_rootfs_check"], agent_bin=values["agent_name"], variant=values["variant"],
        root_hash_file=values["root_hash_file"],
        disk_signature=parse_disk_signature(values["disk_signature"]) if values["disk_signature"] else None,
        fs_uuid=parse_uuid(values["fs_uuid"], "--fs-uuid") if values["fs_uuid"] else None,
        hash_seed=parse_uuid(values["hash_seed"], "--hash-seed") if values["hash_seed"] else None,
        verity_salt=parse_salt(values["verity_salt"]) if values["verity_salt"] else None,
        source_date_epoch=parse_epoch(values["source_date_epoch"], "--source-date-epoch")
        if values["source_date_epoch"] is not None else None,
    )
