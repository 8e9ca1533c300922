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
