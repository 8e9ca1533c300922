"""The mmdebstrap command line and the package cache shared between builds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from osbuilder.cache import Cache
from osbuilder.rootfs.bootstrappers import mmdebstrap as bootstrap
from osbuilder.rootfs.bootstrappers.apt_cache import PackageCache, take_packages
from osbuilder.rootfs.bootstrappers.keyring import keyring_for_apt
from osbuilder.rootfs.bootstrappers.mmdebstrap import BootstrapSpec, Paths
from osbuilder.rootfs.tree import RootfsTree
from tests.helpers.faketree import debian_like

SPEC = BootstrapSpec(suite="noble", variant="required", components=("main", "universe"), debian_arch="amd64",
                     packages=("chrony", "init"), mirror=None, trims=("usr/share/doc",), options=("--aptopt=X",),
                     keep_apt_lists=True)


def test_mmdebstrap_command_line() -> None:
    argv = bootstrap.mmdebstrap_argv(SPEC, "unshare", Paths("/out/b.tar", "/c/in", "/c/out", "/k.gpg"))
    assert argv[:6] == ["mmdebstrap", "--mode=unshare", "--format=tar", "--variant=required", "--architectures=amd64",
                        "--components=main,universe"]
    for option in ("--include=chrony,init", "--keyring=/k.gpg", "--skip=output/dev", "--skip=download/empty",
                   "--skip=essential/unlink",
                   "--setup-hook=sync-in /c/in /var/cache/apt/archives/",
                   "--customize-hook=sync-out /var/cache/apt/archives /c/out", "--aptopt=X"):
        assert option in argv, option
    assert argv.index("--setup-hook=sync-in /c/in /var/cache/apt/archives/") > argv.index(
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives')
    assert argv[-2:] == ["noble", "/out/b.tar"]
    with_mirror = bootstrap.mmdebstrap_argv(
        BootstrapSpec(**{**SPEC.__dict__, "mirror": "http://mirror.invalid/ubuntu"}), "root",
        Paths("/t", "/a b", "/o", None))
    assert with_mirror[-3:] == ["noble", "/t", "http://mirror.invalid/ubuntu"]
    assert "--setup-hook=sync-in '/a b' /var/cache/apt/archives/" in with_mirror
    assert not any(arg.startswith("--keyring") for arg in with_mirror)


def test_bootstrap_dpkg_settings_are_ours_and_temporary(tmp_path: Path) -> None:
    argv = bootstrap.mmdebstrap_argv(SPEC, "root", Paths("/t", "/i", "/o", None), "directory")
    assert "--format=directory" in argv
    config = f'"$1"/{bootstrap.DPKG_CONFIG}'
    assert f'--setup-hook=mkdir -p "$1"/etc/dpkg/dpkg.cfg.d && echo force-unsafe-io > {config}' in argv
    # trims are excluded only after the essential set (no mmtarfilter), never with --dpkgopt
    # ... except the copyright files, which the SBOM's licenses are read from before provisioning
    assert (f"--essential-hook=printf '%s\\n' 'path-exclude=/usr/share/doc/*' "
            f"'path-include=/usr/share/doc/*/copyright' >> {config}") in argv
    assert "--skip=cleanup/apt/lists" in argv  # the signed lists that give each package its origin
    container = bootstrap.mmdebstrap_argv(BootstrapSpec(**{**SPEC.__dict__, "trims": (), "keep_apt_lists": False}),
                                          "root", Paths("/t", "/i", "/o", None), "directory")
    assert "--skip=cleanup/apt/lists" not in container  # a container root: apt cleans its lists itself
    assert not any(arg.startswith("--dpkgopt") for arg in argv)
    # the hooks are shell: run them on a scratch tree as mmdebstrap would
    for hook in (arg for arg in argv if arg.startswith(("--setup-hook=mkdir -p \"$1\"/etc", "--essential-hook"))):
        subprocess.run(["sh", "-c", hook.split("=", 1)[1], "exec", str(tmp_path)], check=True)
    assert (tmp_path / bootstrap.DPKG_CONFIG).read_text() == \
        "force-unsafe-io\npath-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
    with RootfsTree(debian_like(tmp_path / "base.tar")) as tree:
        tree.put_file(bootstrap.DPKG_CONFIG, b"force-unsafe-io\n")
        bootstrap.finish_tree(tree)
        assert not tree.exists(bootstrap.DPKG_CONFIG)
        assert tree.exists("etc/dpkg/dpkg.cfg.d/99mmdebstrap")  # not ours: kept


@pytest.mark.skipif(os.geteuid() != 0, reason="the root mode is for root")
def test_native_mode_as_root() -> None:
    assert bootstrap.native_mode() == "root"


def _deb(directory: Path, name: str, content: bytes = b"deb") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(content)


def test_package_cache_snapshot_merge_and_prune(tmp_path: Path) -> None:
    packages = PackageCache(Cache(tmp_path / "cache"), "ubuntu", "noble", "amd64")
    _deb(packages.directory, "libc6_2.39-0ubuntu8_amd64.deb")
    _deb(packages.directory, "zlib1g_1%3a1.3_amd64.deb")
    snapshot = tmp_path / "in"
    assert packages.snapshot(snapshot) == 2
    known = sorted(os.listdir(snapshot))
    used = tmp_path / "out"
    _deb(used, "libc6_2.39-0ubuntu8.4_amd64.deb")  # a newer libc6 was downloaded
    _deb(used, "zlib1g_1%3a1.3_amd64.deb")  # reused
    _deb(used, "chrony_4.5_amd64.deb")  # new
    (used / "lock").write_text("")
    downloaded = packages.merge(used, known)
    assert downloaded == ["chrony_4.5_amd64.deb", "libc6_2.39-0ubuntu8.4_amd64.deb"]
    assert packages.debs() == ["chrony_4.5_amd64.deb", "libc6_2.39-0ubuntu8.4_amd64.deb",
                               "zlib1g_1%3a1.3_amd64.deb"]
    # the snapshot is hard links: removing the old libc6 from the cache did not touch it
    assert (snapshot / "libc6_2.39-0ubuntu8_amd64.deb").read_bytes() == b"deb"


def test_keyring_in_a_private_directory_is_handed_to_apt_as_a_readable_copy(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    keyring = private / "archive.gpg"
    keyring.write_bytes(b"keys")
    with keyring_for_apt(keyring) as readable:
        assert readable is not None and readable != keyring and readable.read_bytes() == b"keys"
        assert readable.stat().st_mode & 0o004
        assert all(parent.stat().st_mode & 0o001 for parent in readable.parents)
    assert not readable.exists() and not readable.parent.exists()
    public = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    if public.is_file():
        with keyring_for_apt(public) as same:
            assert same == public
    with keyring_for_apt(None) as nothing:
        assert nothing is None


def test_direct_runs_link_packages_in_and_keep_them(tmp_path: Path) -> None:
    argv = bootstrap.mmdebstrap_argv(SPEC, "root", Paths("/t", str(tmp_path / "cached"), "/o", None), "directory",
                                     direct=True)
    assert "--skip=cleanup/apt/cache" in argv
    assert not any("sync-in" in arg or "sync-out" in arg or "rm -f" in arg for arg in argv)
    hook = next(arg for arg in argv if arg.startswith("--setup-hook=cp -al"))
    _deb(tmp_path / "cached", "libc6_2.39_amd64.deb")
    chroot = tmp_path / "chroot"
    (chroot / "var/cache/apt/archives").mkdir(parents=True)
    subprocess.run(["sh", "-c", hook.split("=", 1)[1], "exec", str(chroot)], check=True)
    linked = chroot / "var/cache/apt/archives/libc6_2.39_amd64.deb"
    assert linked.stat().st_ino == (tmp_path / "cached/libc6_2.39_amd64.deb").stat().st_ino
    assert take_packages(chroot) == chroot / "var/cache/apt/archives"
