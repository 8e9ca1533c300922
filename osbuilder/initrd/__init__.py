"""Kata's initrd: the rootfs as a reproducible, compressed newc cpio (`osbuilder.initrd.builder`)."""
