"""The release pipeline beyond one machine, against the real CNCF distribution registry.

Fan-out ("runner A"): each part of the x86_64 bundle in `osbuilder matrix --json` (the default
kernel, image, measured image and initrd) is built by its own process into its own cache with the
command the matrix names, pushing to one registry. The kernel's process starts from the machine's
own build of the default kernel (the session's `default_kernel`: ten minutes cold, so not built
twice), copied into its cache as if that runner had built it: a local hit is pushed when the
registry lacks it. Runner B, with an empty cache, builds the same in pull mode and downloads
every step (`cache: remote`), with the same sha256 as runner A's, then bundles with --from-cache
and boots the bundle. Fan-in: `bundle --from-cache` on a third empty cache, from the registry
alone, gives the bundle built on one machine (the user's cache, no registry) byte for byte.

SOURCE_DATE_EPOCH is left unset, as in a pipeline: the matrix's commands run with --make-variables
(the checkout's commit time), the kernel with its source's date.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from osbuilder.cache import sha256_file
from osbuilder.kernel.build import KernelBuild
from tests.conftest import run_cli
from tests.helpers.kernel import user_context
from tests.helpers.registry import Registry
from tests.helpers.runtime import make_runtime_tarball

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARCH = "x86_64"
KERNEL, IMAGE, MEASURED, INITRD = (f"kernel-{ARCH}-default", f"image-{ARCH}-default", f"image-{ARCH}-measured",
                                   f"initrd-{ARCH}-default")
NO_EPOCH = {"SOURCE_DATE_EPOCH": ""}


@dataclass(frozen=True)
class Built:
    report: dict[str, Any]  # the step's --json
    cwd: Path  # where its outputs are (the matrix's relative paths)
    cache: Path

    def output(self, variant: dict[str, Any]) -> Path:
        return self.cwd / variant["outputs"][0]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    started = Registry(tmp_path_factory.mktemp("registry")).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def matrix() -> dict[str, dict[str, Any]]:
    listed = run_cli("matrix", "--arch", ARCH, "--json", env=NO_EPOCH)
    assert listed.returncode == 0, listed.stderr
    return {variant["id"]: variant for variant in json.loads(listed.stdout)["include"]}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_runtime_tarball(tmp_path_factory.mktemp("runtime"), user_context().versions.agent_version)


def build_variant(variant: dict[str, Any], cache: Path, cwd: Path, *remote: str) -> Built:
    """The variant's own command (as a CI job runs it), with a cache and a remote cache."""
    words = shlex.split(variant["command"])
    assert words[0] == "osbuilder", words
    (cwd / variant["outputs"][0]).parent.mkdir(parents=True, exist_ok=True)  # as the workflow does
    result = run_cli("--cache-dir", cache, *remote, *words[1:], "--json", cwd=cwd, env=NO_EPOCH, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report.get("cache_key") == variant["key"], (variant["id"], report.get("cache_key"))
    return Built(report, cwd, cache)


def bundle_from_cache(cache: Path, out: Path, runtime: Path, *remote: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    result = run_cli("--cache-dir", cache, *remote, "bundle", "--from-cache", "--arch", ARCH, "--runtime", runtime,
                     "-o", out, "--json", env=NO_EPOCH, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(scope="module")
def fanned_out(tmp_path_factory: pytest.TempPathFactory, registry: Registry, matrix: dict[str, dict[str, Any]],
               default_kernel: KernelBuild) -> dict[str, Built]:
    base = tmp_path_factory.mktemp("runner-a")
    assert default_kernel.cache_key == matrix[KERNEL]["key"] and default_kernel.cache_entry is not None
    shutil.copytree(default_kernel.cache_entry, base / f"{KERNEL}.cache" / "kernel" / default_kernel.cache_key,
                    symlinks=True)
    built = {KERNEL: build_variant(matrix[KERNEL], base / f"{KERNEL}.cache", base / KERNEL, "--remote-cache",
                                   registry.url, "--remote-cache-mode", "push")}
    # The others read and write: the measured image's job finds the rootfs the default image's pushed.
    for variant in (IMAGE, MEASURED, INITRD):
        built[variant] = build_variant(matrix[variant], base / f"{variant}.cache", base / variant, "--remote-cache",
                                       registry.url)
    return built


def test_fan_out_pushes_every_part_under_its_matrix_key(fanned_out: dict[str, Built], registry: Registry,
                                                        matrix: dict[str, dict[str, Any]]) -> None:
    kernel = fanned_out[KERNEL].report
    assert kernel["cache"] == "local"
    assert [entry["key"] for entry in kernel["remote_cache"]["pushed"]] == [matrix[KERNEL]["key"]]
    image = fanned_out[IMAGE].report
    assert image["cache"] == "built"
    assert {entry["kind"] for entry in image["remote_cache"]["pushed"]} >= {"rootfs", "image"}
    measured = fanned_out[MEASURED].report
    assert measured["cache"] == "built"
    assert [entry["kind"] for entry in measured["remote_cache"]["pulled"]] == ["rootfs"]
    assert fanned_out[INITRD].report["cache"] == "built"
    assert {matrix[variant]["key"] for variant in (KERNEL, IMAGE, MEASURED, INITRD)} <= registry.tags()


def test_runner_b_downloads_every_step_and_boots_the_bundle(fanned_out: dict[str, Built], registry: Registry,
                                                            matrix: dict[str, dict[str, Any]], runtime: Path,
                                                            tmp_path: Path) -> None:
    cache, pull = tmp_path / "cache", ("--remote-cache", registry.url, "--remote-cache-mode", "pull")
    runner_b = {variant: build_variant(matrix[variant], cache, tmp_path / variant, *pull)
                for variant in (KERNEL, IMAGE, MEASURED, INITRD)}
    assert {variant: built.report["cache"] for variant, built in runner_b.items()} == dict.fromkeys(runner_b, "remote")
    assert all(built.report["remote_cache"]["bytes_down"] > 0 for built in runner_b.values())
    # The rootfs too, as `make rootfs` builds it: the entry runner A's image job pushed.
    rootfs_dir = tmp_path / "rootfs"
    result = run_cli("--cache-dir", cache, *pull, "build-rootfs", "--make-variables", "-o", rootfs_dir, "--json",
                     env=NO_EPOCH, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    rootfs = json.loads(result.stdout)
    a_rootfs = fanned_out[IMAGE].report["rootfs"]
    assert rootfs["cache"] == "remote" and rootfs["cache_key"] == a_rootfs["cache_key"]
    assert sha256_file(Path(rootfs["cache_tarball"])) == sha256_file(Path(a_rootfs["cache_tarball"]))
    assert (rootfs_dir / "var/lib/osbuilder/osbuilder.yaml").is_file()
    # Byte for byte what runner A built.
    for variant in (IMAGE, MEASURED, INITRD):
        assert sha256_file(runner_b[variant].output(matrix[variant])) == sha256_file(fanned_out[variant].output(matrix[variant]))
    kernel_a, kernel_b = fanned_out[KERNEL].output(matrix[KERNEL]), runner_b[KERNEL].output(matrix[KERNEL])
    files = sorted(path.name for path in kernel_a.iterdir() if path.is_file() and not path.is_symlink())
    assert len(files) == 5 and [sha256_file(kernel_b / name) for name in files] == [sha256_file(kernel_a / name)
                                                                                  for name in files]
    hashes = [built.cwd / "build" / ARCH / "root_hash_measured.txt" for built in (fanned_out[MEASURED],
                                                                                  runner_b[MEASURED])]
    assert hashes[0].read_text() == hashes[1].read_text() != ""
    # Then the release from runner B's cache, and its boot with its own configurations.
    bundle = bundle_from_cache(cache, tmp_path / "bundle", runtime, *pull)
    assert bundle["cache"] == "built"
    assert {part["cache"] for part in bundle["parts"].values()} == {"local"}
    booted = run_cli("boot", "--bundle", bundle["bundle"], "--accel", "tcg", "--json", timeout=1800)
    report = json.loads(booted.stdout)
    assert booted.returncode == 0, json.dumps(report, indent=1)[-3000:]
    assert {boot["config"] for boot in report["boots"] if boot["ok"]} == {
        "configuration-qemu.toml", "configuration-qemu-initrd.toml", "configuration-qemu-measured.toml"}


def test_fan_in_gives_the_bundle_of_one_machine(fanned_out: dict[str, Built], registry: Registry,
                                                matrix: dict[str, dict[str, Any]], runtime: Path,
                                                rootfs_cache: Path, tmp_path: Path) -> None:
    # One machine: every part built (or found) in the user's cache, no registry.
    for variant in (KERNEL, IMAGE, MEASURED, INITRD):
        build_variant(matrix[variant], rootfs_cache, tmp_path / "one-machine" / variant)
    one_machine = bundle_from_cache(rootfs_cache, tmp_path / "one-machine" / "bundle", runtime)
    # Each part's SBOM too: the same bytes from runner A's job and from the one machine.
    for variant in (IMAGE, MEASURED, INITRD):
        sbom_name = matrix[variant]["outputs"][0] + ".cdx.json"
        assert (tmp_path / "one-machine" / variant / sbom_name).read_bytes() == \
            (fanned_out[variant].cwd / sbom_name).read_bytes()
    # A hit delivered under another name: that copy's SBOM names it; the entry's names the entry's file.
    words = shlex.split(matrix[IMAGE]["command"])
    words[words.index("-o") + 1] = "renamed.img"
    renamed = run_cli("--cache-dir", rootfs_cache, *words[1:], "--json", cwd=tmp_path, env=NO_EPOCH, timeout=600)
    assert renamed.returncode == 0, renamed.stderr[-3000:]
    delivered = json.loads(renamed.stdout)
    assert delivered["cache"] == "local"
    assert json.loads(Path(delivered["sbom"]).read_text())["metadata"]["component"]["name"] == "renamed.img"
    entry = rootfs_cache / "image" / matrix[IMAGE]["key"] / "kata-containers.img.cdx.json"
    assert json.loads(entry.read_text())["metadata"]["component"]["name"] == "kata-containers.img"
    # Fan-in: an empty cache and the registry the fan-out jobs pushed to.
    fan_in = bundle_from_cache(tmp_path / "empty-cache", tmp_path / "fan-in", runtime, "--remote-cache",
                               registry.url, "--remote-cache-mode", "pull")
    assert {part["cache"] for part in fan_in["parts"].values()} == {"remote"}
    assert set(fan_in["parts"]) == set(matrix[f"bundle-{ARCH}"]["needs"])
    assert fan_in["cache_key"] == one_machine["cache_key"]
    assert sha256_file(Path(fan_in["bundle"])) == sha256_file(Path(one_machine["bundle"])) == one_machine["sha256"]
    # With its provenance next to it, naming the tarball as released.
    statement = json.loads(Path(fan_in["provenance"]).read_text())
    assert statement["subject"][0] == {"name": Path(fan_in["bundle"]).name, "digest": {"sha256": one_machine["sha256"]}}
    # The bundle's own entry goes through the registry as well: pushed from the one machine's cache,
    # a third, empty cache pulls it whole and needs none of the parts.
    pushed = run_cli("--cache-dir", rootfs_cache, "--remote-cache", registry.url, "cache", "push",
                     f"bundle/{one_machine['cache_key']}", "--json", env=NO_EPOCH)
    assert pushed.returncode == 0, pushed.stderr
    pulled = bundle_from_cache(tmp_path / "third-cache", tmp_path / "pulled", runtime, "--remote-cache", registry.url,
                               "--remote-cache-mode", "pull")
    assert pulled["cache"] == "remote"
    assert sha256_file(Path(pulled["bundle"])) == one_machine["sha256"]
    assert not (tmp_path / "third-cache" / "kernel").exists()
