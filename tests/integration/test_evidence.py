"""The SBOM written next to a built image and initrd: exactly the packages dpkg-query lists in the
rootfs, valid CycloneDX (the library's own validator), the same bytes when built again."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from osbuilder.evidence.sbom import validate
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

EPOCH = "1764000000"


def _build(command: str, rootfs: Path, output: Path, *extra: str) -> dict[str, Any]:
    result = run_cli(command, rootfs, "-o", output, "--json", *extra, env={"SOURCE_DATE_EPOCH": EPOCH}, timeout=900)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _dpkg_query(rootfs: Path) -> set[tuple[str, str, str]]:
    listing = subprocess.run(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W",
                              "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"],
                             capture_output=True, text=True, check=True).stdout
    return {tuple(line.split("\t")[1:]) for line in listing.splitlines() if line.startswith("ii")}  # type: ignore[misc]


def _packages(sbom: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    found = {}
    for component in sbom["components"]:
        if component.get("purl", "").startswith("pkg:deb/"):
            properties = {item["name"]: item["value"] for item in component.get("properties", [])}
            found[(component["name"], component["version"], properties["osbuilder:architecture"])] = component
    return found


@pytest.mark.parametrize("asset", ["image", "initrd"])
def test_sbom_lists_exactly_the_installed_packages_validates_and_reproduces(
        asset: str, noble_rootfs: Any, bookworm_agent_rootfs: Any, tmp_path: Path) -> None:
    rootfs = noble_rootfs.path if asset == "image" else bookworm_agent_rootfs.path
    command, extra = ("build-image", ()) if asset == "image" else ("build-initrd", ("--agent-init",))
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    first = _build(command, rootfs, tmp_path / "one" / "asset.img", *extra)
    second = _build(command, rootfs, tmp_path / "two" / "asset.img", *extra)
    text = Path(first["sbom"]).read_text()
    assert Path(first["sbom"]).name == "asset.img.cdx.json"
    assert Path(second["sbom"]).read_text() == text  # same bytes with the same SOURCE_DATE_EPOCH
    assert validate(text) == []
    sbom = json.loads(text)
    packages = _packages(sbom)
    assert set(packages) == _dpkg_query(rootfs)
    # Every package carries the sha256 of its .deb from the signed index, and the suite it came from.
    assert all(component.get("hashes") for component in packages.values())
    suites = {next(item["value"] for item in component["properties"] if item["name"] == "osbuilder:suite")
              for component in packages.values()}
    assert suites <= ({"noble", "noble-updates", "noble-security"} if asset == "image" else
                      {"bookworm", "bookworm-updates", "bookworm-security"})
    # Licenses come from the copyright files kept for the purpose (the rest of /usr/share/doc is trimmed).
    licensed = [component for component in packages.values() if component.get("licenses")]
    assert len(licensed) > len(packages) * 0.6
    assert not (rootfs / "usr/share/doc").exists()
    libc = next(component for key, component in packages.items() if key[0] == "libc6")
    assert any(item["name"] == "osbuilder:source-package" and item["value"] == "glibc" for item in libc["properties"])
    agent = next(component for component in sbom["components"] if component["type"] == "application")
    assert agent["hashes"][0]["content"] == noble_rootfs.report["agent_sha256"] or asset == "initrd"
    built = Path(first.get("image") or first["initrd"])
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == hashlib.sha256(built.read_bytes()).hexdigest()


def _tight_versions(tmp_path: Path, old: str, new: str) -> Path:
    from tests.conftest import REPO

    text = (REPO / "versions.yaml").read_text()
    assert old in text
    versions = tmp_path / "versions.yaml"
    versions.write_text(text.replace(old, new, 1))
    return versions


def test_an_image_one_byte_over_its_budget_fails_with_its_largest_contributors(noble_rootfs: Any,
                                                                                tmp_path: Path) -> None:
    fits = _build("build-image", noble_rootfs.path, tmp_path / "fits.img")  # the default budgets pass
    size = Path(fits["image"]).stat().st_size
    versions = _tight_versions(tmp_path, 'size: "160 MiB"', f'size: "{size - 1}"')
    result = run_cli("--versions", versions, "build-image", noble_rootfs.path, "-o", tmp_path / "over.img",
                     env={"SOURCE_DATE_EPOCH": EPOCH}, timeout=900)
    assert result.returncode == 1, result.stderr
    assert "over its budget of" in result.stderr and f"({size - 1} bytes)" in result.stderr
    assert "budgets.architecture.x86_64.image.size" in result.stderr
    assert "largest packages: libc6" in result.stderr or "largest packages: systemd" in result.stderr
    assert "largest directories: /usr/lib" in result.stderr
    unchecked = run_cli("--versions", versions, "build-image", noble_rootfs.path, "-o", tmp_path / "over.img",
                        "--no-budgets", env={"SOURCE_DATE_EPOCH": EPOCH}, timeout=900)
    assert unchecked.returncode == 0, unchecked.stderr


def test_a_boot_slower_than_its_budget_fails(assets: Any, tmp_path: Path) -> None:
    versions = _tight_versions(tmp_path, 'tcg: "20"', 'tcg: "0.5"')
    result = run_cli("--versions", versions, "boot", "--kernel", assets.kernel, "--image", assets.systemd_image,
                     "--accel", "tcg", "--json", timeout=900)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["timings"]["agent_ready"] > 0.5
    assert "over the image budget of 0.5 s under TCG" in report["error"]
    assert [check["check"] for check in report["checks"]][-1] == "budget"
