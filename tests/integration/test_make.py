"""The README's first command: `make` builds the default assets, boot-checks them, and runs the
architecture's example in an Ubuntu noble container inside the VM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers.make import make

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_make_builds_the_default_assets_boots_them_and_runs_the_example(tmp_path: Path,
                                                                        default_kernel: object) -> None:
    # default_kernel first: the kernel is then a cache hit for make as well.
    build = tmp_path / "build"
    result = make(f"BUILD_DIR={build}", "BOOT_FLAGS=--accel tcg", "RUN_FLAGS=--accel tcg", timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (build / "kernel" / "vmlinux.container").is_symlink()
    assert result.stdout.count("ok   check: Health/Check returned SERVING") == 2
    assert "mounted with DAX" in result.stdout
    image = json.loads(run_cli("inspect", build / "kata-containers.img", "--json").stdout)
    assert image["ok"] and image["osbuilder"]["content"]["agent"]["agent-is-init-daemon"] == "no"
    initrd = json.loads(run_cli("inspect", build / "kata-containers-initrd.img", "--json").stdout)
    assert initrd["ok"] and initrd["init"]["mode"] == "agent"
    assert initrd["osbuilder"]["content"]["base-distro"]["name"] == "ubuntu"
    # The example: sh in the Ubuntu noble container root make built, inside the VM; its output is make's.
    os_release = (build / "container-rootfs" / "etc" / "os-release").read_text()
    assert "VERSION_CODENAME=noble" in os_release.splitlines()
    assert not (build / "container-rootfs" / "usr" / "bin" / "kata-agent").exists()  # a plain container root
    assert "hello from the container\n" + os_release in result.stdout


def test_matrix_keys_are_the_keys_of_the_builds_make_runs(tmp_path: Path, default_kernel: object) -> None:
    """What CI restores and saves its caches by (osbuilder matrix) is what the builds themselves key by."""
    listed = run_cli("matrix", "--arch", "x86_64", "--json")
    assert listed.returncode == 0, listed.stderr
    matrix = {variant["id"]: variant for variant in json.loads(listed.stdout)["include"]}
    reported = {}
    for variant, target, output in (("kernel-x86_64-default", "kernel", f"KERNEL_DIR={tmp_path / 'kernel'}"),
                                    ("image-x86_64-default", "image", f"IMAGE={tmp_path / 'image.img'}"),
                                    ("initrd-x86_64-default", "initrd", f"INITRD={tmp_path / 'initrd.img'}")):
        # The variant's own make command, as the CI job runs it, with its report on stdout.
        words = matrix[variant]["make"].split()
        assert words[:2] == ["make", target], words
        result = make(*[word for word in words[1:] if not word.startswith(("IMAGE=", "INITRD=", "KERNEL_DIR="))],
                      output, "OSB_FLAGS=--json", timeout=3600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        report = json.loads(result.stdout)
        reported[variant] = report["cache_key"] if target == "kernel" else report["content_key"]
    assert reported == {variant: matrix[variant]["key"] for variant in reported}
