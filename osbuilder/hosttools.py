"""Which host tools each build step needs, and the Debian package that provides each one.

`osbuilder doctor` reports from this table, `runner.require_tool` uses it to name the package in
its error, and the Makefile/CI install the union of the packages.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tool:
    name: str
    package: str
    optional: bool = False
    why: str = ""


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    tools: tuple[Tool, ...]
    packages: tuple[str, ...] = ()  # headers and data the step needs that no single tool stands for


_T = Tool
STEPS: tuple[Step, ...] = (
    Step(
        "fetch",
        "download and verify inputs; check signed Debian archive metadata",
        (_T("gpgv", "gpgv", why="verifies InRelease signatures"),),
    ),
    Step(
        "rootfs",
        "bootstrap a distro rootfs (native backend)",
        (
            _T("mmdebstrap", "mmdebstrap"),
            _T("tar", "tar", why="unpacks the rootfs"),
            _T("dpkg-query", "dpkg", why="lists the installed packages"),
            _T("strip", "binutils", why="strips the agent"),
            _T("newuidmap", "uidmap", optional=True, why="unshare mode for unprivileged users"),
            _T("newgidmap", "uidmap", optional=True, why="unshare mode for unprivileged users"),
            _T("unshare", "util-linux", optional=True, why="rootless trees (osbuilder.userns)"),
            _T("zstd", "zstd", optional=True, why="agent tarballs in .tar.zst"),
            # A foreign --arch (aarch64 on x86_64): mmdebstrap runs the target's maintainer scripts
            # through qemu-user, registered with the kernel's binfmt_misc (osbuilder.binfmt).
            _T("qemu-aarch64-static", "qemu-user-static", optional=True, why="--arch aarch64 on another host"),
            _T("update-binfmts", "binfmt-support", optional=True, why="registers qemu-user with binfmt_misc"),
            _T("arch-test", "arch-test", optional=True, why="mmdebstrap's check of a foreign --arch"),
            _T("aarch64-linux-gnu-strip", "binutils-aarch64-linux-gnu", optional=True,
               why="strips an aarch64 agent"),
        ),
        # mmdebstrap picks the default mirror of an Ubuntu suite from distro-info-data
        ("distro-info-data",),
    ),
    Step(
        "rootfs-docker",
        "bootstrap a distro rootfs inside a builder container",
        (_T("dockerd", "docker.io", why="the Docker engine"),),
    ),
    Step(
        "image",
        "build the DAX disk image",
        (
            _T("mkfs.ext4", "e2fsprogs"),
            _T("e2fsck", "e2fsprogs"),
            _T("debugfs", "e2fsprogs", why="edits and reads ext4 images without mounting"),
            _T("mkfs.erofs", "erofs-utils", optional=True, why="--fs-type erofs"),
            _T("fsck.erofs", "erofs-utils", optional=True, why="inspect: compressed files in erofs images"),
            _T("mkfs.xfs", "xfsprogs", optional=True, why="--fs-type xfs"),
            _T("unshare", "util-linux", optional=True, why="unprivileged builds (the caller becomes root)"),
            _T("veritysetup", "cryptsetup-bin", optional=True, why="checking measured images in tests"),
            _T("sfdisk", "fdisk", optional=True, why="inspecting partition tables in tests"),
        ),
    ),
    Step(
        "initrd",
        "build the cpio initrd",
        (
            _T("zstd", "zstd", optional=True, why="--compression zstd"),
            _T("lz4", "lz4", optional=True, why="--compression lz4"),
            _T("xz", "xz-utils", optional=True, why="--compression xz"),
            _T("pigz", "pigz", optional=True, why="parallel gzip"),
            _T("cpio", "cpio", optional=True, why="listing initrds in tests"),
        ),
    ),
    Step(
        "kernel",
        "build the guest kernel",
        (
            _T("make", "make"),
            _T("gcc", "gcc"),
            _T("ld", "binutils"),
            _T("bison", "bison"),
            _T("flex", "flex"),
            _T("bc", "bc"),
            _T("perl", "perl"),
            _T("xz", "xz-utils"),
            _T("dpkg-deb", "dpkg", why="unpacks Debian's linux-source package"),
            _T("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", optional=True, why="--arch aarch64"),
            _T("ccache", "ccache", optional=True, why="--ccache"),
            _T("pahole", "dwarves", optional=True, why="BTF in --debug kernels"),
            _T("patch", "patch"),
        ),
        ("libelf-dev", "libssl-dev"),
    ),
    Step(
        "agent",
        "build the reference agent",
        (
            _T("musl-gcc", "musl-tools"),
            _T("make", "make"),
            _T("strip", "binutils"),
            _T("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", optional=True,
               why="the agent for --arch aarch64 (static glibc)"),
        ),
        # the aarch64 agent links glibc statically: the cross C library (a recommendation of the
        # cross gcc, which `apt-get --no-install-recommends` leaves out)
        ("libc6-dev-arm64-cross",),
    ),
    Step(
        "boot",
        "boot-check assets under QEMU",
        (
            _T("qemu-system-x86_64", "qemu-system-x86"),
            _T("qemu-system-aarch64", "qemu-system-arm", optional=True, why="--arch aarch64"),
        ),
    ),
    Step(
        "run",
        "run a container in a VM, as the Kata runtime does",
        (
            _T("qemu-system-x86_64", "qemu-system-x86"),
            _T("qemu-system-aarch64", "qemu-system-arm", optional=True, why="--arch aarch64"),
            _T("unshare", "util-linux", why="the sandbox's private mount namespace"),
            _T("nsenter", "util-linux", why="mounts, virtiofsd and QEMU in that namespace"),
            _T("mount", "mount"),
        ),
        # QEMU's C virtiofsd (/usr/lib/qemu/virtiofsd): Debian 12 has no virtiofsd package of its own
        ("qemu-system-common",),
    ),
    Step(
        "bundle",
        "assemble the release tarball",
        (_T("zstd", "zstd"),),
    ),
    Step(
        "remote-cache",
        "share cache entries through an OCI registry (--remote-cache)",
        (_T("zstd", "zstd", why="compresses the entries' layers"),),
    ),
)

# Packages the test suite needs beyond the build steps (fixtures and independent checkers).
TEST_PACKAGES: tuple[str, ...] = ("docker.io", "runc", "gpg", "cpio", "fdisk", "e2fsprogs", "file", "util-linux", "procps",
                                  "cryptsetup-bin", "erofs-utils", "xfsprogs", "busybox-static", "passwd",
                                  # the report test renders the page in headless Chromium
                                  "chromium", "chromium-driver",
                                  # the remote cache's tests: the CNCF distribution registry, its htpasswd
                                  # file and a throwaway CA
                                  "docker-registry", "apache2-utils", "openssl")

# Libraries the Python side needs at run time, checked by doctor as well.
SHARED_LIBRARIES: tuple[tuple[str, str], ...] = (("libarchive.so.13", "libarchive13"), ("libext2fs.so.2", "libext2fs2"))


def package_for(tool: str) -> str:
    for step in STEPS:
        for candidate in step.tools:
            if candidate.name == tool:
                return candidate.package
    return ""


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin"):
        candidate = Path(directory, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def all_packages(include_optional: bool = True, include_tests: bool = False) -> list[str]:
    packages = {
        tool.package
        for step in STEPS
        for tool in step.tools
        if include_optional or not tool.optional
    }
    packages.update(package for step in STEPS for package in step.packages)
    packages.update(package for _library, package in SHARED_LIBRARIES)
    if include_tests:
        packages.update(TEST_PACKAGES)
    return sorted(packages)


if __name__ == "__main__":
    # Used by the Makefile before any virtual environment exists: prints the Debian packages.
    import sys

    print(" ".join(all_packages(include_tests="--tests" in sys.argv)))
