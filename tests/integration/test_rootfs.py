"""Real rootfs builds with mmdebstrap: Ubuntu noble (systemd) and Debian bookworm (agent as init),
checked with dpkg-query and the file system; the rootfs cache and the package cache."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from osbuilder.recipes import load_recipe
from tests.conftest import REPO, BuiltRootfs, build_rootfs
from tests.helpers.rootfsinspect import dpkg_packages, sha256, tree_listing

pytestmark = pytest.mark.integration

KATA_KEYS = [
    "---", "osbuilder:", "  url:", "  version:", "rootfs-creation-time:", "description:", "file-format-version:",
    "architecture:", "base-distro:", "  name:", "  version:", "  packages:", "    default:", "    extra:", "agent:",
    "  url:", "  name:", "  version:", "  agent-is-init-daemon:",
]


def _recipe_packages(distro: str, init: str) -> tuple[str, ...]:
    return load_recipe(REPO / "distros" / distro / "recipe.yaml").init(init).packages


def _osbuilder_yaml(rootfs: Path) -> tuple[list[str], dict[str, Any]]:
    """The key lines in file order (indentation kept, values dropped), and the parsed document."""
    text = (rootfs / "var/lib/osbuilder/osbuilder.yaml").read_text()
    keys = [line.split(":", 1)[0] + ":" if ":" in line else line for line in text.splitlines()
            if not line.lstrip().startswith("- ")]
    for line in text.splitlines():  # every scalar is double-quoted, as Kata writes them
        value = line.split(":", 1)[1].strip() if ":" in line and not line.lstrip().startswith("- ") else ""
        item = line.split("- ", 1)[1] if line.lstrip().startswith("- ") else ""
        assert all(part == "" or (part.startswith('"') and part.endswith('"')) for part in (value, item)), line
    return keys, yaml.safe_load(text)


def test_noble_systemd(noble_rootfs: BuiltRootfs) -> None:
    rootfs, report = noble_rootfs.path, noble_rootfs.report
    assert (report["distro"], report["release"], report["init"], report["mode"]) == ("ubuntu", "noble", "systemd",
                                                                                      "root")
    installed = dpkg_packages(rootfs)
    assert set(_recipe_packages("ubuntu", "systemd")) <= set(installed)
    assert report["packages"] == len(installed)
    manifest = json.loads((rootfs / "var/lib/osbuilder/manifest.json").read_text())
    assert {package["name"]: package["version"] for package in manifest["packages"]} == installed
    keys, meta = _osbuilder_yaml(rootfs)
    assert keys == KATA_KEYS
    assert meta["file-format-version"] == "0.0.2"
    assert meta["agent"] == {"url": "https://github.com/kata-containers/kata-containers", "name": "kata-agent",
                             "version": "4.1.0", "agent-is-init-daemon": "no"}
    assert meta["base-distro"]["packages"]["default"] == sorted(_recipe_packages("ubuntu", "systemd"))
    # init is systemd, the agent is a service of kata-containers.target
    assert os.path.realpath(rootfs / "sbin/init") == str(rootfs / "usr/lib/systemd/systemd")
    agent = rootfs / "usr/bin/kata-agent"
    assert os.access(agent, os.X_OK) and sha256(agent) == report["agent_sha256"]
    units = rootfs / "usr/lib/systemd/system"
    assert "ExecStart=/usr/bin/kata-agent" in (units / "kata-agent.service").read_text()
    assert "Requires=kata-agent.service" in (units / "kata-containers.target").read_text()
    assert os.readlink(rootfs / "etc/systemd/system/basic.target.wants/kata-containers.target") == \
        "/usr/lib/systemd/system/kata-containers.target"
    assert os.readlink(rootfs / "etc/systemd/system/kata-containers.target.wants/dbus.socket") == \
        "/usr/lib/systemd/system/dbus.socket"
    assert (units / "dbus.socket").is_file()
    assert "Where=/tmp" in (rootfs / "etc/systemd/system/tmp.mount").read_text()
    chrony = (rootfs / "etc/chrony/chrony.conf").read_text().splitlines()
    assert "refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0" in chrony
    assert not [line for line in chrony if line.startswith(("pool ", "server ", "peer "))]
    assert "ConditionPathExists=/dev/ptp0" in (units / "chrony.service").read_text()
    # what Kata normalises, and what we keep out of the image
    resolv = rootfs / "etc/resolv.conf"
    assert resolv.is_file() and not resolv.is_symlink() and resolv.stat().st_size == 0
    assert (rootfs / "etc/machine-id").read_bytes() == b""
    assert os.readlink(rootfs / "var/tmp") == "../tmp"
    for gone in ("var/cache", "var/log", "usr/share/doc", "usr/share/man", "var/lib/apt"):
        assert not (rootfs / gone).exists(), gone
    assert not (rootfs / "etc/dpkg/dpkg.cfg.d/90osbuilder-bootstrap").exists()  # bootstrap-only settings
    assert not [path for path in (rootfs / "dev").iterdir()]  # devtmpfs provides the nodes


def test_bookworm_agent_as_init(bookworm_agent_rootfs: BuiltRootfs) -> None:
    rootfs, report = bookworm_agent_rootfs.path, bookworm_agent_rootfs.report
    assert (report["distro"], report["release"], report["init"]) == ("debian", "bookworm", "agent")
    installed = dpkg_packages(rootfs)
    assert set(_recipe_packages("debian", "agent")) <= set(installed)
    assert "init" not in installed and "systemd-sysv" not in installed
    init = rootfs / "sbin/init"
    assert init.is_file() and not (rootfs / "usr/sbin/init").is_symlink()
    assert sha256(init) == report["agent_sha256"]
    assert not (rootfs / "usr/bin/kata-agent").exists()
    assert not (rootfs / "usr/lib/systemd/system/kata-agent.service").exists()
    assert not (rootfs / "etc/systemd/system/tmp.mount").exists()
    keys, meta = _osbuilder_yaml(rootfs)
    assert keys == KATA_KEYS
    assert meta["agent"]["agent-is-init-daemon"] == "yes"
    assert meta["base-distro"] == {"name": "debian", "version": "bookworm", "packages": {
        "default": sorted(_recipe_packages("debian", "agent")), "extra": None}}


def test_unchanged_rebuild_is_a_cache_hit_without_bootstrap(noble_rootfs: BuiltRootfs, tmp_path: Path) -> None:
    # An mmdebstrap that only answers --version: any bootstrap would leave a mark and fail.
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "bootstrapped"
    (fake / "mmdebstrap").write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec /usr/bin/mmdebstrap --version\n'
                                     f'touch {marker}; exit 99\n')
    (fake / "mmdebstrap").chmod(0o755)
    output = tmp_path / "again"
    result = build_rootfs(noble_rootfs.cache, output, *noble_rootfs.args, "-v",
                          env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cache_hit"] is True and report["cache_key"] == noble_rootfs.report["cache_key"]
    assert "cache hit" in result.stderr
    assert not marker.exists()
    assert tree_listing(output) == tree_listing(noble_rootfs.path)
    assert sha256(output / "usr/bin/kata-agent") == noble_rootfs.report["agent_sha256"]


def test_second_build_downloads_no_package(bookworm_agent_rootfs: BuiltRootfs, archive_proxy: object,
                                          tmp_path: Path) -> None:
    from tests.helpers.httpproxy import RecordingProxy

    assert isinstance(archive_proxy, RecordingProxy)
    first = bookworm_agent_rootfs.report
    assert len(first["proxied_debs"]) >= first["packages"] > 0  # the cold build fetched every package
    entry = bookworm_agent_rootfs.cache / "rootfs" / first["cache_key"] / "rootfs.tar"
    before = sha256(entry)
    archive_proxy.clear()
    result = build_rootfs(bookworm_agent_rootfs.cache, tmp_path / "again", *bookworm_agent_rootfs.args,
                          "--no-cache", env={"http_proxy": archive_proxy.url})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cache_hit"] is False
    assert archive_proxy.requests, "the rebuild did not go through the proxy at all"
    assert archive_proxy.debs() == []  # only the signed indexes were fetched
    assert report["packages_downloaded"] == 0
    # mmdebstrap with SOURCE_DATE_EPOCH plus our deterministic provisioning: bit for bit the same
    assert sha256(entry) == before


def test_minimal_with_busybox(rootfs_cache: Path, test_agent: Path, tmp_path: Path) -> None:
    output = tmp_path / "minimal"
    result = build_rootfs(rootfs_cache, output, "--distro", "minimal", "--busybox", "--agent", test_agent)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    busybox = output / "bin/busybox"
    assert os.access(busybox, os.X_OK)
    echoed = subprocess.run([str(busybox), "echo", "from the pinned busybox"], capture_output=True, text=True)
    assert echoed.stdout == "from the pinned busybox\n"  # the real static busybox, runnable
    assert os.readlink(output / "bin/sh") == "/bin/busybox"
    assert sha256(output / "sbin/init") == report["agent_sha256"]  # no applet took init's place
    manifest = json.loads((output / "var/lib/osbuilder/manifest.json").read_text())
    pin = yaml.safe_load((REPO / "versions.yaml").read_text())["externals"]["busybox"]
    assert [(p["name"], p["version"]) for p in manifest["packages"]] == [("busybox-static", pin["version"])]
    assert report["packages"] == 1


def test_make_rootfs(rootfs_cache: Path, test_agent: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "-C", str(REPO), "rootfs", "DISTRO=minimal", f"AGENT={test_agent}", f"BUILD_DIR={tmp_path}",
         f"OSB_FLAGS=--cache-dir {rootfs_cache}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rootfs = tmp_path / "rootfs-minimal-bookworm-agent"
    assert (rootfs / "sbin/init").is_file() and (rootfs / "var/lib/osbuilder/osbuilder.yaml").is_file()
    again = subprocess.run(["make", "-C", str(REPO), "rootfs", "DISTRO=minimal", f"AGENT={test_agent}",
                            f"BUILD_DIR={tmp_path}", f"OSB_FLAGS=--cache-dir {rootfs_cache} --json"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert '"cache_hit": true' in again.stdout  # the same rootfs, replaced in place


def test_container_root(rootfs_cache: Path, tmp_path: Path) -> None:
    """A plain container root (the workload root of `osbuilder run`): the distribution's minimal base,
    no agent, no init, no osbuilder.yaml, but a manifest; cached like the others."""
    output = tmp_path / "noble"
    result = build_rootfs(rootfs_cache, output, "--distro", "ubuntu", "--os-version", "noble", "--container")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["container"], report["init"], report["agent_sha256"]) == (True, None, None)
    sh = output / "bin/sh"
    assert sh.exists() and os.access(sh, os.X_OK)
    os_release = dict(line.split("=", 1) for line in (output / "etc/os-release").read_text().splitlines() if "=" in line)
    assert os_release["VERSION_CODENAME"] == "noble" and os_release["ID"] == "ubuntu"
    assert not list(output.glob("usr/bin/kata-agent*")) and not (output / "usr/lib/systemd/system/kata-agent.service").exists()
    assert not (output / "var/lib/osbuilder/osbuilder.yaml").exists()
    assert (output / "etc/resolv.conf").read_bytes() == b""  # not the build host's
    # The manifest lists what dpkg says is installed: the minimal base, nothing of a guest's.
    manifest = json.loads((output / "var/lib/osbuilder/manifest.json").read_text())
    assert manifest["container"] is True and manifest["init"] is None and manifest["agent"] is None
    assert manifest["cache_key"] == report["cache_key"]
    installed = dpkg_packages(output)
    assert {package["name"] for package in manifest["packages"]} == set(installed)
    assert "coreutils" in installed and "systemd" not in installed and "chrony" not in installed
    # The same request again is a cache hit with the same tree; a guest rootfs is another entry.
    again = build_rootfs(rootfs_cache, tmp_path / "again", "--distro", "ubuntu", "--os-version", "noble", "--container")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cache_hit"] is True
    assert tree_listing(tmp_path / "again") == tree_listing(output)
    refused = build_rootfs(rootfs_cache, tmp_path / "refused", "--distro", "ubuntu", "--container", "--agent-init")
    assert refused.returncode == 2 and "--agent-init" in refused.stderr and "container" in refused.stderr


def test_an_unreachable_archive_is_named_with_its_suite(test_agent: Path, tmp_path: Path) -> None:
    """apt cannot read the archive (nothing listens on the mirror's port): the error names the archive
    and the suite apt reported, not only mmdebstrap's exit status, and nothing is left behind."""
    cache = tmp_path / "cache"
    output = tmp_path / "rootfs"
    mirror = "http://127.0.0.1:9/debian"  # the discard port: nothing serves HTTP there
    result = build_rootfs(cache, output, "--distro", "debian", "--os-version", "bookworm", "--agent-init",
                          "--agent", test_agent, "--mirror", mirror, "--no-cache")
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "CommandError" and error["where"] == f"mirror {mirror}"
    assert error["problem"].startswith(f"no amd64 index is reachable: {mirror} suite bookworm ("), error
    assert "--mirror" in error["fix"]
    assert f"Failed to fetch {mirror}/dists/bookworm/" in error["stderr_tail"]  # mmdebstrap's lines kept
    assert not output.exists()
    assert not (cache / "rootfs").exists() or list((cache / "rootfs").iterdir()) == []
