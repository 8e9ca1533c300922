"""Small rootfs tarballs shaped like mmdebstrap's output of a merged-/usr Debian, for fast tests of
provisioning without bootstrapping anything."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

MTIME = 1_600_000_000

CHRONY_CONF = """\
# Welcome to the chrony configuration file.
confdir /etc/chrony/conf.d
pool ntp.example.invalid iburst maxsources 4
server 192.0.2.1 iburst
peer 192.0.2.2
keyfile /etc/chrony/chrony.keys
makestep 1 3
"""

CHRONY_SERVICE = """\
[Unit]
Description=chrony, an NTP client/server
After=network.target

[Service]
Type=forking
ExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -u _chrony
ReadWritePaths=/run /var/lib/chrony /var/spool
StateDirectory=chrony
StateDirectoryMode=0750
LogsDirectory=chrony

[Install]
WantedBy=multi-user.target
"""

DPKG_STATUS = """\
Package: init
Status: install ok installed
Architecture: amd64
Version: 1.66

Package: chrony
Status: install ok installed
Architecture: amd64
Version: 4.5-1

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


class TarBuilder:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed in save)

    def _info(self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(f"./{name}" if name else "./")
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, MTIME
        return info

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> TarBuilder:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))
        return self

    def file(self, name: str, content: str | bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
             xattrs: dict[str, str] | None = None) -> TarBuilder:
        data = content.encode() if isinstance(content, str) else content
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{key}": value for key, value in xattrs.items()}
        self.tar.addfile(info, io.BytesIO(data))
        return self

    def symlink(self, name: str, target: str) -> TarBuilder:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)
        return self

    def hardlink(self, name: str, target: str) -> TarBuilder:
        info = self._info(name, tarfile.LNKTYPE, 0o755)
        info.linkname = f"./{target}"
        self.tar.addfile(info)
        return self

    def save(self, path: Path) -> Path:
        self.tar.close()
        path.write_bytes(self.buffer.getvalue())
        return path


def debian_like(path: Path, *, systemd: bool = True, chrony: bool = True) -> Path:
    """A merged-/usr tree with what provisioning touches (and a hard link into a trimmed dir)."""
    tar = TarBuilder().dir("")
    tar.symlink("bin", "usr/bin").symlink("lib", "usr/lib").symlink("sbin", "usr/sbin")
    tar.dir("etc").file("etc/resolv.conf", "nameserver 192.0.2.53\n").file("etc/hostname", "buildhost\n")
    tar.file("etc/machine-id", "0123456789abcdef\n")
    tar.dir("etc/dpkg").dir("etc/dpkg/dpkg.cfg.d")
    tar.file("etc/dpkg/dpkg.cfg.d/99mmdebstrap", "force-unsafe-io\npath-exclude=/usr/share/doc/*\n")
    tar.dir("etc/systemd").dir("etc/systemd/system")
    if chrony:
        tar.dir("etc/chrony").file("etc/chrony/chrony.conf", CHRONY_CONF)
    tar.dir("usr").dir("usr/bin").dir("usr/sbin").dir("usr/lib").dir("usr/lib/systemd")
    tar.dir("usr/lib/systemd/system").dir("usr/lib/systemd/system-generators")
    tar.dir("usr/share").dir("usr/share/doc").dir("usr/share/doc/tool")
    tar.file("usr/share/doc/tool/README", "the tool's content\n", mode=0o755)
    tar.file("usr/share/doc/tool/copyright", "free\n")
    tar.hardlink("usr/bin/tool", "usr/share/doc/tool/README")  # the link outlives the trimmed target
    tar.file("usr/bin/perl", "#!perl\n", mode=0o755).hardlink("usr/bin/perl5", "usr/bin/perl")
    tar.file("usr/bin/ping", b"\x7fELF ping", mode=0o755, xattrs={"security.capability": "cap"})
    tar.dir("usr/share/systemd").file("usr/share/systemd/tmp.mount", "[Mount]\nWhat=tmpfs\nWhere=/tmp\n")
    if systemd:
        tar.file("usr/lib/systemd/systemd", b"\x7fELF systemd", mode=0o755)
        tar.symlink("usr/sbin/init", "../lib/systemd/systemd")
        tar.file("usr/lib/systemd/system/dbus.socket", "[Socket]\n")
        tar.file("usr/lib/systemd/system/systemd-journald.service", "[Service]\n")
        tar.file("usr/lib/systemd/system/systemd-udevd-control.socket", "[Socket]\n")
        tar.file("usr/lib/systemd/system-generators/systemd-fstab-generator", b"\x7fELF", mode=0o755)
        tar.symlink("etc/systemd/system/syslog.service", "/usr/lib/systemd/system/systemd-journald.service")
    if chrony:
        tar.file("usr/lib/systemd/system/chrony.service", CHRONY_SERVICE)
    tar.dir("var").dir("var/cache").dir("var/cache/apt").file("var/cache/apt/pkgcache.bin", b"cache")
    tar.dir("var/log").file("var/log/dpkg.log", "log\n").dir("var/tmp", mode=0o1777)
    tar.dir("var/lib").dir("var/lib/dpkg").file("var/lib/dpkg/status", DPKG_STATUS)
    tar.dir("var/lib/chrony", mode=0o750, uid=100, gid=101).dir("var/lib/systemd")
    tar.dir("tmp", mode=0o1777).dir("proc", mode=0o555).dir("sys", mode=0o555).dir("run")
    return tar.save(path)
