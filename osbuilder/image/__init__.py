"""Kata's DAX disk image: layout (MBRs, pfn block, partitions), filesystems, sizing, dm-verity.

The public entry points: `osbuilder.image.builder.build_image` (rootfs directory → image) and
`osbuilder.image.layout.read_layout` (image → where its partitions are and what they hold).
"""
