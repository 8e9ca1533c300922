"""The release bundle from the default assets: layout, checksums, reproducibility, runtime matching,
and booting what ships with its own configuration."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from osbuilder.boot.runtimeconfig import read_runtime_config
from osbuilder.kernelcmdline import RootSpec, root_params
from tests.conftest import REPO, run_cli
from tests.helpers.assets import BootAssets
from tests.helpers.bundle import EPOCH, Built, make_bundle
from tests.helpers.httpserver import FixtureServer
from tests.helpers.runtime import make_runtime_tarball

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULTS = "opt/kata/share/defaults/kata-containers"
SHARE = "opt/kata/share/kata-containers"


def test_layout_as_tar_shows_it(release_bundle: Built, assets: BootAssets) -> None:
    assert release_bundle.tarball.name == f"kata-static-{assets.agent_version}-amd64.tar.zst"
    listing = subprocess.run(["tar", "--zstd", "-tvf", release_bundle.tarball], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    names = {line.split()[5].removeprefix("./"): line for line in listing}
    for link in ("vmlinux.container", "vmlinuz.container", "kata-containers.img", "kata-containers-initrd.img",
                 "kata-containers-measured.img"):
        assert names[f"{SHARE}/{link}"].startswith("l"), link
    assert f"{SHARE}/kata-ubuntu-noble.image" in names
    assert f"{SHARE}/kata-debian-bookworm.initrd" in names
    assert f"{SHARE}/root_hash_measured.txt" in names
    for config in ("qemu", "qemu-initrd", "qemu-measured", "clh", "fc"):
        assert f"{DEFAULTS}/configuration-{config}.toml" in names
    assert "opt/kata/runtime-rs/bin/containerd-shim-kata-v2" in names
    for meta in ("VERSION", "versions.yaml", "SHA256SUMS", "osbuilder-manifest.json"):
        assert f"opt/kata/{meta}" in names
    # Owner 0 and clamped times on every entry.
    assert all(" root/root " in line for line in listing)
    assert all(line.split()[3] == "2025-11-24" for line in listing)
    assert (release_bundle.extracted / "opt/kata/VERSION").read_text().strip() == assets.agent_version


def test_sha256sums_pass_inside(release_bundle: Built) -> None:
    result = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=release_bundle.extracted / "opt/kata",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = [line for line in result.stdout.splitlines() if line.endswith(": OK")]
    assert len(checked) >= 12


def test_manifest_records_files_and_inputs(release_bundle: Built, assets: BootAssets, runtime_tarball: Path) -> None:
    manifest = json.loads((release_bundle.extracted / "opt/kata/osbuilder-manifest.json").read_text())
    files = {entry["path"]: entry for entry in manifest["files"]}
    image = release_bundle.extracted / SHARE / "kata-ubuntu-noble.image"
    assert files[f"{SHARE}/kata-ubuntu-noble.image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    inputs = manifest["inputs"]
    assert inputs["kernel"]["source"]["sha256"] and inputs["kernel"]["config"]["sha256"]
    assert inputs["runtime"]["sha256"] == hashlib.sha256(runtime_tarball.read_bytes()).hexdigest()
    image_rootfs = inputs["guests"]["image"]["rootfs"]
    assert image_rootfs["recipe"]["name"] == "ubuntu"
    assert any(package["name"] == "systemd" for package in image_rootfs["packages"])
    assert inputs["agent"]["sha256"] and inputs["agent"]["version"] == assets.agent_version


def test_rebuild_gives_the_same_bytes(release_bundle: Built, assets: BootAssets, runtime_tarball: Path,
                                      tmp_path: Path) -> None:
    code, stdout, stderr = make_bundle(assets, tmp_path, runtime_tarball)
    assert code == 0, stderr
    again = Path(json.loads(stdout)["bundle"])
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(release_bundle.tarball.read_bytes()).hexdigest()


def test_configurations_parse_and_point_at_the_assets(release_bundle: Built) -> None:
    defaults = release_bundle.extracted / DEFAULTS
    for path in defaults.glob("*.toml"):
        data = tomllib.loads(path.read_text())
        section = next(iter(data["hypervisor"].values()))
        assert ("image" in section) != ("initrd" in section), path.name
        assert section["kernel"] == "/opt/kata/share/kata-containers/vmlinux.container"
    image = read_runtime_config(defaults / "configuration-qemu.toml", root=release_bundle.extracted)
    assert image.image is not None and image.image.resolve().name == "kata-ubuntu-noble.image"
    assert image.nvdimm and image.verity is None
    assert root_params(RootSpec("image", image.rootfs_type, image.nvdimm, image.verity))[:2] == [
        "root=/dev/pmem0p1", "rootflags=dax,data=ordered,errors=remount-ro"]
    initrd = read_runtime_config(defaults / "configuration-qemu-initrd.toml", root=release_bundle.extracted)
    assert initrd.initrd is not None and initrd.initrd.resolve().name == "kata-debian-bookworm.initrd"
    assert root_params(RootSpec("initrd")) == []
    measured = read_runtime_config(defaults / "configuration-qemu-measured.toml", root=release_bundle.extracted)
    recorded = (release_bundle.extracted / SHARE / "root_hash_measured.txt").read_text().strip()
    assert measured.verity is not None and measured.verity.format() == recorded
    params = root_params(RootSpec("image", measured.rootfs_type, measured.nvdimm, measured.verity))
    assert params[0].startswith('dm-mod.create="dm-verity,,,ro,0 ') and params[1] == "root=/dev/dm-0"
    clh = tomllib.loads((defaults / "configuration-clh.toml").read_text())["hypervisor"]["clh"]
    assert clh["disable_image_nvdimm"] is True and clh["image"].endswith("kata-containers.img")


def test_boot_the_bundle_with_its_own_configuration(release_bundle: Built) -> None:
    result = run_cli("boot", "--bundle", release_bundle.tarball, "--accel", "tcg", "--json", timeout=1200)
    report = json.loads(result.stdout)
    assert result.returncode == 0, json.dumps(report, indent=1)[-3000:]
    boots = {boot["config"]: boot for boot in report["boots"]}
    assert set(boots) == {"configuration-qemu.toml", "configuration-qemu-initrd.toml",
                          "configuration-qemu-measured.toml"}
    assert all(boot["ok"] and boot["agent"]["status"] == "SERVING" for boot in boots.values())
    assert boots["configuration-qemu.toml"]["dax"] is True
    assert boots["configuration-qemu-initrd.toml"]["kind"] == "initrd"


def test_a_runtime_of_another_version_is_refused(assets: BootAssets, tmp_path: Path) -> None:
    other = make_runtime_tarball(tmp_path / "runtime", "9.9.9")
    out = tmp_path / "out"
    out.mkdir()
    code, _stdout, stderr = make_bundle(assets, out, other)
    assert code == 2
    assert "9.9.9" in stderr and assets.agent_version in stderr
    assert list(out.iterdir()) == []


def test_a_runtime_download_with_a_wrong_sha256_is_refused(assets: BootAssets, tmp_path: Path,
                                                           http_server: FixtureServer) -> None:
    tarball = make_runtime_tarball(tmp_path / "runtime", assets.agent_version)
    url = http_server.add("kata-static.tar.zst", tarball.read_bytes())
    versions = tmp_path / "versions.yaml"
    text = (REPO / "versions.yaml").read_text()
    start = text.index("  runtime:")
    section = text[start:text.index("\nexternals:")]
    patched = section
    for line in section.splitlines():
        if line.strip().startswith("url:"):
            patched = patched.replace(line, f'        url: "{url}"')
        if line.strip().startswith("sha256:"):
            patched = patched.replace(line, f'        sha256: "{"0" * 64}"')
    versions.write_text(text.replace(section, patched))
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("--versions", versions, "--cache-dir", cache, *_bundle_args(assets, out), timeout=600)
    assert result.returncode == 1, result.stderr
    assert "sha256 mismatch" in result.stderr
    assert list(out.iterdir()) == []
    assert not [path for path in (cache / "downloads").rglob("*") if path.is_file()]
    assert http_server.files["kata-static.tar.zst"].served_full == 1


def _bundle_args(assets: BootAssets, out: Path) -> list[str | Path]:
    return ["bundle", "--kernel-dir", assets.kernel.parent, "--image", assets.systemd_image, "--initrd",
            assets.agent_initrd, "--source-date-epoch", EPOCH, "-o", out]
