"""The options of `osbuilder run` beyond what to boot and how (osbuilder.boot.options): the
container, how its root reaches the guest, the workload's stdin, deadlines, and the command."""

from __future__ import annotations

from osbuilder.boot.qemu import SHARED_FS_KINDS
from osbuilder.options import Kind, Option, Table

CONTAINER = Table("the container", (
    Option("oci_bundle", ("--oci-bundle",), "an OCI runtime bundle (config.json + root)", kind=Kind.PATH,
           metavar="DIR", exclusive="container"),
    Option("rootfs", ("--rootfs",), "a root tree, run with runc's default spec", kind=Kind.PATH, metavar="DIR",
           exclusive="container"),
    Option("shared_fs", ("--shared-fs",), "how the root reaches the guest (default: the configuration's shared_fs, "
           "else virtio-fs)", choices=SHARED_FS_KINDS),
    Option("virtiofsd", ("--virtiofsd",), "virtiofsd to use (default: the configuration's virtio_fs_daemon, a Rust "
           "virtiofsd, or QEMU's /usr/lib/qemu/virtiofsd)", kind=Kind.PATH, metavar="PATH"),
    Option("timeout", ("--timeout",), "kill the workload after this long (exit status 137)", kind=Kind.FLOAT,
           metavar="SECONDS"),
    Option("boot_timeout", ("--boot-timeout",), "deadline for the agent to answer, from QEMU's start (default 300)",
           kind=Kind.FLOAT, default=300.0, metavar="SECONDS"),
    Option("stdin", ("--stdin",), "feed FILE to the workload's stdin (- for osbuilder's)", metavar="FILE"),
    Option("interactive", ("-i", "--interactive"), "feed osbuilder's stdin (--stdin -)", kind=Kind.FLAG,
           default=False),
    Option("command", (), "the command to run instead of the spec's process.args", kind=Kind.COMMAND,
           metavar="-- CMD [ARG...]"),
))
