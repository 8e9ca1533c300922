"""The options that say what to boot and how, declared once (osbuilder.options) for every command
that boots assets (`boot`, `run`); `make boot` and `make run` pass FS_TYPE and SKIP_DAX_HEADER
through, the variables the image was built with. ASSETS and HOW are what any boot needs; CHECKS
are the boot check's."""

from __future__ import annotations

from osbuilder.boot.qemu import AGENT_PORT_NAME
from osbuilder.boot.transport import TRANSPORTS
from osbuilder.kernelcmdline import FS_TYPES
from osbuilder.options import Kind, Option, Table

ASSETS = Table("what to boot", (
    Option("kernel", ("--kernel",), "guest kernel (vmlinux or bzImage)", kind=Kind.PATH, metavar="KERNEL"),
    Option("image", ("--image",), "rootfs disk image", kind=Kind.PATH, metavar="IMAGE", exclusive="root"),
    Option("initrd", ("--initrd",), "initrd (the agent is init)", kind=Kind.PATH, metavar="INITRD", exclusive="root"),
    Option("config", ("--config",), "Kata runtime configuration: kernel, image or initrd, kernel_params, "
           "rootfs_type, disable_image_nvdimm, kernel_verity_params", kind=Kind.PATH, metavar="TOML"),
    Option("bundle", ("--bundle",), "a release bundle: boot checks its image and its initrd with each of its "
           "configuration-qemu*.toml, run uses its configuration-qemu.toml", kind=Kind.PATH, metavar="TARBALL"),
))

HOW = Table("how to boot", (
    Option("no_dax", ("--no-dax",), "attach the image as virtio-blk instead of an NVDIMM", make="SKIP_DAX_HEADER",
           kind=Kind.FLAG, default=False),
    Option("fs_type", ("--fs-type",), "rootfs filesystem type (default: ext4, or the config's)", make="FS_TYPE",
           choices=FS_TYPES),
    Option("verity", ("--verity",), "kernel_verity_params of a measured image, or the root_hash file written next "
           "to it", metavar="LINE|FILE"),
    Option("accel", ("--accel",), "auto: KVM only if a probe guest makes progress, else TCG",
           choices=("auto", "kvm", "tcg"), default="auto"),
    Option("transport", ("--transport",), "agent channel; auto: vsock when the host has a usable vhost-vsock, "
           "else virtio-serial", choices=TRANSPORTS, default="auto"),
    Option("port_name", ("--port-name",), "virtio-serial port name of the agent", default=AGENT_PORT_NAME,
           metavar="NAME"),
    Option("kernel_params", ("--kernel-params",), "extra kernel parameters", default="", metavar="PARAMS"),
    Option("verbosity", ("--verbosity",), "quiet/debug: the runtime's kernel parameters for those modes",
           choices=("quiet", "normal", "debug"), default="normal"),
    Option("memory_mb", ("--memory",), "guest memory (default 2048)", kind=Kind.INT, metavar="MB"),
    Option("cpus", ("--cpus",), "guest vCPUs (default 1)", kind=Kind.INT, metavar="N"),
    Option("arch", ("--arch",), "guest architecture (default: the host's)", metavar="ARCH"),
    Option("qemu", ("--qemu",), "QEMU binary (default qemu-system-<arch>)", metavar="PATH"),
    Option("console_log", ("--console-log",), "write the guest console here", kind=Kind.PATH, metavar="FILE"),
))

CHECKS = Table("checks", (
    Option("timeout", ("--timeout",), "deadline for the whole boot check, from QEMU's start (default 300)",
           kind=Kind.FLOAT, default=300.0, metavar="SECONDS"),
    Option("expect_agent_version", ("--expect-agent-version",),
           "fail unless the agent's Health/Version reports this version", metavar="VERSION"),
))
