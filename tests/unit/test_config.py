"""versions.yaml and recipe validation: every problem names the file and line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from osbuilder.errors import ConfigError
from osbuilder.modes import InitMode
from osbuilder.recipes import load_all, load_recipe
from osbuilder.versions import load_versions
from tests.conftest import REPO, run_cli


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_repository_versions_file_is_valid() -> None:
    versions = load_versions(REPO / "versions.yaml")
    assert versions.kernel_version == versions.kernel_tarball_source().version
    debian = versions.kernel_debian_source()
    assert debian.package.startswith("linux-source-")
    assert len(debian.sha256_for("x86_64")) == 64
    assert versions.distro_pin("image", "x86_64").init == "systemd"
    assert versions.distro_pin("initrd", "x86_64").init == "agent"
    assert versions.agent_version == versions.runtime_version


def test_repository_recipes_are_valid() -> None:
    recipes = {recipe.name: recipe for recipe in load_all(REPO / "distros")}
    assert {"debian", "ubuntu", "minimal"} <= set(recipes)
    assert {r.codename for r in recipes["debian"].releases} >= {"bookworm", "trixie"}
    assert {r.codename for r in recipes["ubuntu"].releases} >= {"noble", "resolute"}
    ubuntu = recipes["ubuntu"]
    # Kata's package set for systemd images, and the agent-init set without init, chrony and dbus.
    assert {"chrony", "iptables", "dbus", "init", "cryptsetup-bin", "e2fsprogs", "libseccomp2"} == set(
        ubuntu.init("systemd").packages)
    assert "init" not in ubuntu.init("agent").packages


@pytest.fixture
def versions_copy(tmp_path: Path) -> Path:
    target = tmp_path / "versions.yaml"
    shutil.copyfile(REPO / "versions.yaml", target)
    return target


def test_unquoted_version_is_an_error_with_file_and_line(versions_copy: Path) -> None:
    text = versions_copy.read_text().replace('minimum: "1.3.0"', "minimum: 3.10", 1)
    versions_copy.write_text(text)
    line = _line_of(versions_copy, "minimum: 3.10")
    with pytest.raises(ConfigError) as caught:
        load_versions(versions_copy)
    message = str(caught.value)
    assert f"{versions_copy}:{line}" in message
    assert "not a string" in message
    assert 'minimum: "3.10"' in message


def test_unquoted_version_via_cli_exits_2(versions_copy: Path) -> None:
    versions_copy.write_text(versions_copy.read_text().replace('version: "6.12.107"\n', "version: 6.12\n", 1))
    line = _line_of(versions_copy, "version: 6.12")
    result = run_cli("--versions", versions_copy, "versions")
    assert result.returncode == 2
    assert f"{versions_copy}:{line}" in result.stderr


def test_unknown_and_missing_keys_are_reported_together(versions_copy: Path) -> None:
    text = versions_copy.read_text()
    text = text.replace('    default-source: "debian"\n', '    default-sauce: "debian"\n', 1)
    text = text.replace('    description: "Reference guest agent', '    notes: "Reference guest agent', 1)
    versions_copy.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_versions(versions_copy)
    message = str(caught.value)
    assert "unknown key 'default-sauce'" in message
    assert "did you mean 'default-source'" in message
    assert "missing required key 'description'" in message
    assert f"{versions_copy}:{_line_of(versions_copy, 'default-sauce')}" in message


def test_bad_sha256_and_url_are_rejected(versions_copy: Path) -> None:
    text = versions_copy.read_text().replace(
        'sha256: "a5f8c5be3fde2d6d9ca14e9631642cf1f44487143f11059da730dcd5892e307a"', 'sha256: "abc"')
    text = text.replace('url: "https://cdn.kernel.org', 'url: "ftp://cdn.kernel.org')
    versions_copy.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_versions(versions_copy)
    assert "sha256 (64 lowercase hex digits)" in str(caught.value)
    assert "URL" in str(caught.value)


def test_pool_path_must_stay_in_the_pool(versions_copy: Path) -> None:
    good = 'pool: "pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1-0.2_all.deb"'
    versions_copy.write_text(versions_copy.read_text().replace(good, 'pool: "pool/../../etc/passwd.deb"', 1))
    line = _line_of(versions_copy, "pool/../../etc/passwd.deb")
    with pytest.raises(ConfigError) as caught:
        load_versions(versions_copy)
    message = str(caught.value)
    assert f"{versions_copy}:{line}" in message and "externals.ubuntu-keyring.pool" in message
    assert "a quoted pool path" in message
    assert load_versions(REPO / "versions.yaml").archive_package("externals.busybox").pool_path("arm64") == \
        "pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_arm64.deb"


def test_kernel_versions_must_agree(versions_copy: Path) -> None:
    versions_copy.write_text(versions_copy.read_text().replace(
        'version: "6.12.107"\n        sha256', 'version: "6.12.108"\n        sha256', 1))
    with pytest.raises(ConfigError, match="tarball is version 6.12.108"):
        load_versions(versions_copy)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "versions.yaml"
    path.write_text("assets:\n  kernel: [\n")
    result = run_cli("--versions", path, "versions")
    assert result.returncode == 2
    assert f"{path}:" in result.stderr and "invalid YAML" in result.stderr


@pytest.fixture
def distros_copy(tmp_path: Path) -> Path:
    target = tmp_path / "distros"
    shutil.copytree(REPO / "distros", target)
    return target


def test_misspelt_recipe_key_exits_2_with_file_and_line(distros_copy: Path) -> None:
    recipe = distros_copy / "debian" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("default-release:", "default-relase:", 1))
    line = _line_of(recipe, "default-relase")
    result = run_cli("--distros-dir", distros_copy, "distros")
    assert result.returncode == 2, result.stderr
    assert f"{recipe}:{line}" in result.stderr
    assert "unknown key 'default-relase'" in result.stderr
    assert "did you mean 'default-release'" in result.stderr


def test_recipe_cross_checks(distros_copy: Path) -> None:
    recipe = distros_copy / "ubuntu" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace('default-release: "noble"', 'default-release: "jammy"'))
    with pytest.raises(ConfigError, match="default release 'jammy' is not among the releases"):
        load_recipe(recipe)


def test_recipe_boolean_where_string_belongs(distros_copy: Path) -> None:
    recipe = distros_copy / "ubuntu" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace('tool: "mmdebstrap"', "tool: no"))
    with pytest.raises(ConfigError) as caught:
        load_recipe(recipe)
    assert "read by YAML as a boolean" in str(caught.value)
    assert f"{recipe}:{_line_of(recipe, 'tool: no')}" in str(caught.value)


def test_versions_command_json_has_kernel_and_checksums() -> None:
    result = run_cli("versions", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    kernel = data["value"]["assets"]["kernel"]
    assert kernel["version"] == "6.12.107"
    assert len(kernel["sources"]["tarball"]["sha256"]) == 64
    assert len(kernel["sources"]["debian"]["sha256"]) == 64


def test_versions_key_lookup_and_suggestion() -> None:
    result = run_cli("versions", "assets.kernel.version", "--json")
    assert json.loads(result.stdout)["value"] == "6.12.107"
    wrong = run_cli("versions", "assets.kernal")
    assert wrong.returncode == 2
    assert "did you mean 'assets.kernel'" in wrong.stderr


def test_distros_command_lists_releases() -> None:
    result = run_cli("distros", "--json")
    assert result.returncode == 0, result.stderr
    distros = {entry["name"]: entry for entry in json.loads(result.stdout)["distros"]}
    assert [r["codename"] for r in distros["debian"]["releases"]] == ["bookworm", "trixie"]
    assert [r["codename"] for r in distros["ubuntu"]["releases"]] == ["noble", "resolute"]
    assert distros["ubuntu"]["init_modes"] == ["systemd", "agent"]
    assert "x86_64" in distros["debian"]["architectures"]


def test_versions_table_has_one_row_per_pinned_input() -> None:
    text = run_cli("versions").stdout.splitlines()
    assert text[0].split() == ["KEY", "VERSION", "SOURCE", "PIN"]
    by_key = {line.split()[0]: line for line in text[1:]}
    assert {"assets.kernel.sources.debian", "assets.kernel.sources.tarball", "assets.image.x86_64",
            "assets.initrd.aarch64", "assets.agent", "assets.runtime.x86_64", "externals.ubuntu-keyring",
            "externals.busybox.x86_64", "externals.busybox.aarch64", "tools.mmdebstrap"} <= set(by_key)
    assert "linux-source-6.12" in by_key["assets.kernel.sources.debian"]
    assert "(agent init)" in by_key["assets.initrd.x86_64"] and "minimum 1.3.0" in by_key["tools.mmdebstrap"]
    # The pins are the file's: every sha256 of versions.yaml appears in --json's entries, and only those.
    entries = json.loads(run_cli("versions", "--json").stdout)["entries"]
    file_digests = set(re.findall(r'sha256: "([0-9a-f]{64})"', (REPO / "versions.yaml").read_text()))
    assert {entry["pin"].removeprefix("sha256:") for entry in entries if entry["pin"].startswith("sha256:")} == \
        file_digests
    selected = json.loads(run_cli("versions", "externals.busybox", "--json").stdout)["entries"]
    assert [entry["key"] for entry in selected] == ["externals.busybox.x86_64", "externals.busybox.aarch64"]


def test_the_schema_is_derived_from_the_dataclasses(versions_copy: Path, distros_copy: Path) -> None:
    # A value outside an enum is reported with its file:line and the allowed values, as before.
    versions_copy.write_text(versions_copy.read_text().replace('init: "agent"', 'init: "runit"', 1))
    line = _line_of(versions_copy, 'init: "runit"')
    with pytest.raises(ConfigError) as caught:
        load_versions(versions_copy)
    assert f"{versions_copy}:{line}" in str(caught.value) and '"systemd", "agent"' in str(caught.value)
    # Every YAML key of a loaded tree is a field of its dataclass, typed (enums, tuples), not a dict.
    versions = load_versions(REPO / "versions.yaml")
    assert versions.distro_pin("initrd", "x86_64").init is InitMode.AGENT
    assert versions.external("busybox").sha256_for("aarch64") == versions.lookup(
        "externals.busybox.architecture.aarch64.sha256")
    recipe = load_recipe(distros_copy / "ubuntu" / "recipe.yaml")
    assert recipe.default_init is InitMode.SYSTEMD and recipe.release("noble").suite == "noble"
    assert isinstance(recipe.init("agent").packages, tuple)
