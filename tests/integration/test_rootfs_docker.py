"""The docker backend: the same recipe in a builder container gives the same packages as native,
and the container never outlives the build (SIGTERM included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, ROOTFS_SDE, BuiltRootfs, build_rootfs
from tests.helpers.rootfsinspect import dpkg_packages

pytestmark = pytest.mark.integration

LABEL = "org.osbuilder.role=rootfs-build"


def _our_containers(engine: object) -> list[object]:
    return list(engine.containers.list(all=True, filters={"label": LABEL}))  # type: ignore[attr-defined]


def test_docker_backend_gives_the_same_packages(noble_rootfs: BuiltRootfs, base_image: str, engine: object,
                                                tmp_path: Path) -> None:
    output = tmp_path / "rootfs"
    # Built, not found in the cache an earlier run filled: the container is what is tested.
    result = build_rootfs(noble_rootfs.cache, output, *noble_rootfs.args, "--backend", "docker",
                          "--docker-base", base_image, "--no-cache")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["backend"], report["mode"], report["cache_hit"]) == ("docker", "docker", False)
    assert dpkg_packages(output) == dpkg_packages(noble_rootfs.path)
    assert os.path.realpath(output / "sbin/init") == str(output / "usr/lib/systemd/systemd")
    entry = noble_rootfs.cache / "rootfs" / report["cache_key"]
    assert {(path.stat().st_uid, path.stat().st_gid) for path in entry.iterdir()} == {(os.getuid(), os.getgid())}
    assert _our_containers(engine) == []


def test_sigterm_removes_the_container(noble_rootfs: BuiltRootfs, base_image: str, engine: object,
                                       tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    output = tmp_path / "rootfs"
    build = subprocess.Popen(
        [sys.executable, "-m", "osbuilder", "--cache-dir", str(cache), "build-rootfs", *noble_rootfs.args,
         "--backend", "docker", "--docker-base", base_image, "-o", str(output)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": ROOTFS_SDE, "OSBUILDER_NO_PROGRESS": "1"})
    try:
        deadline = time.monotonic() + 300
        while not _our_containers(engine):
            assert build.poll() is None, build.communicate()[1]
            assert time.monotonic() < deadline, "the build container never appeared"
            time.sleep(0.2)
        time.sleep(2)  # let mmdebstrap get going inside
        build.send_signal(signal.SIGTERM)
        _out, err = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            build.kill()
    assert build.returncode == 143, err
    assert "partial outputs were removed" in err
    assert _our_containers(engine) == []
    assert not output.exists()
    assert [path.name for path in tmp_path.iterdir() if path.name != "cache"] == []
    assert list((cache / "tmp").iterdir()) == []
    assert not (cache / "rootfs").exists() or list((cache / "rootfs").iterdir()) == []
