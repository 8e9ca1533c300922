"""The minimal recipe's debug shell: Debian's static busybox (pinned in versions.yaml) and its applet
links, added to a tree without a distribution."""

from __future__ import annotations

import logging
from pathlib import Path

from osbuilder import metadata, runner
from osbuilder.arch import Arch, host_arch
from osbuilder.debarchive import ArchiveClient, extract_member
from osbuilder.fetch import Fetcher
from osbuilder.rootfs.tree import RootfsTree
from osbuilder.versions import Versions

log = logging.getLogger(__name__)

BUSYBOX_MEMBER = "bin/busybox"
EXTERNAL = "busybox"  # versions.yaml externals.busybox


def lists_applets(arch: Arch) -> bool:
    """Whether every applet is linked: only a busybox this host runs natively can list them."""
    return arch.name == host_arch().name


def key_inputs(versions: Versions, arch: Arch) -> dict[str, object]:
    """What the busybox a rootfs gets depends on: the pin, and whether its applets are listed here."""
    pin = versions.external(EXTERNAL)
    return {"package": pin.package, "version": pin.version, "sha256": pin.sha256_for(arch.name),
            "applets": "all" if lists_applets(arch) else "sh"}


def add_busybox(tree: RootfsTree, arch: Arch, staging: Path, versions: Versions, fetcher: Fetcher,
                mirror: str | None) -> metadata.Package:
    pin = versions.external(EXTERNAL)
    deb = ArchiveClient(fetcher, mirror=mirror).resolve(pin, arch.name, arch.debian)
    binary = staging / "busybox"
    binary.write_bytes(extract_member(deb.path, BUSYBOX_MEMBER))
    binary.chmod(0o755)
    tree.put_file(BUSYBOX_MEMBER, binary.read_bytes(), mode=0o755)
    if lists_applets(arch):
        applets = runner.run([binary, "--list-full"], what="busybox --list-full").stdout.split()
    else:
        applets = ["bin/sh"]  # a foreign busybox cannot list its applets here
        log.warning("busybox for %s: only /bin/sh is linked (applets are listed by running busybox)", arch.name)
    for applet in sorted(applets):
        path = applet.strip("/")
        if path in ("sbin/init", "linuxrc", BUSYBOX_MEMBER) or tree.exists(path):
            continue  # the agent is init
        tree.put_symlink(path, f"/{BUSYBOX_MEMBER}")
    binary.unlink()
    return metadata.Package(pin.package, pin.version, arch.debian)
