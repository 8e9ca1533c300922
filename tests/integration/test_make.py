"""The README's first command: `make` builds the default assets and boot-checks them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers.make import make

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_make_builds_the_default_assets_and_boots_them(tmp_path: Path, default_kernel: object) -> None:
    # default_kernel first: the kernel is then a cache hit for make as well.
    build = tmp_path / "build"
    result = make(f"BUILD_DIR={build}", "BOOT_FLAGS=--accel tcg", timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (build / "kernel" / "vmlinux.container").is_symlink()
    assert result.stdout.count("ok   check: Health/Check returned SERVING") == 2
    assert "mounted with DAX" in result.stdout
    image = json.loads(run_cli("inspect", build / "kata-containers.img", "--json").stdout)
    assert image["ok"] and image["osbuilder"]["content"]["agent"]["agent-is-init-daemon"] == "no"
    initrd = json.loads(run_cli("inspect", build / "kata-containers-initrd.img", "--json").stdout)
    assert initrd["ok"] and initrd["init"]["mode"] == "agent"
    assert initrd["osbuilder"]["content"]["base-distro"]["name"] == "ubuntu"
