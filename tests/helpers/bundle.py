"""The release bundle of the default assets, built once per session and shared: tests/integration/
test_bundle.py checks what it holds, tests/integration/test_run.py runs a container with its own
configuration (`osbuilder run --bundle`). A bundle takes minutes to build on two cores."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers.assets import BootAssets
from tests.helpers.runtime import make_runtime_tarball

EPOCH = "1764000000"


@dataclass(frozen=True)
class Built:
    tarball: Path
    report: dict[str, object]
    extracted: Path


def make_bundle(assets: BootAssets, output: Path, runtime: Path, *extra: str | Path,
                versions: Path | None = None) -> tuple[int, str, str]:
    """`osbuilder bundle` of the session's assets (runtime "-": none given); exit status, stdout, stderr."""
    kernel_dir = assets.kernel.parent
    args: list[str | Path] = ["bundle", "--kernel-dir", kernel_dir, "--image", assets.systemd_image, "--initrd",
                              assets.agent_initrd, "--measured-image", assets.measured_image.image,
                              "--measured-root-hash", assets.measured_image.root_hash_file,
                              "--source-date-epoch", EPOCH, "-o", output, "--json", *extra]
    if runtime.name != "-":
        args += ["--runtime", runtime]
    prefix: list[str | Path] = ["--versions", versions] if versions else []
    result = run_cli(*prefix, *args, timeout=900)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="session")
def runtime_tarball(tmp_path_factory: pytest.TempPathFactory, assets: BootAssets) -> Path:
    return make_runtime_tarball(tmp_path_factory.mktemp("runtime"), assets.agent_version)


@pytest.fixture(scope="session")
def release_bundle(tmp_path_factory: pytest.TempPathFactory, assets: BootAssets, runtime_tarball: Path) -> Built:
    out = tmp_path_factory.mktemp("bundle")
    code, stdout, stderr = make_bundle(assets, out, runtime_tarball)
    assert code == 0, stderr
    report = json.loads(stdout)
    extracted = out / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", report["bundle"], "-C", extracted], check=True)
    return Built(Path(report["bundle"]), report, extracted)
