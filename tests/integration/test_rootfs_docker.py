"""The docker backend: the same recipe in a builder container gives the same packages as native,
and the container never outlives the build (SIGTERM included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbuilder.arch import host_arch
from osbuilder.context import Context
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS
from osbuilder.rootfs.bootstrappers.keyring import keyring_for_apt, resolve_keyring
from tests.conftest import REPO, ROOTFS_SDE, BuiltRootfs, build_rootfs
from tests.helpers.machine_state import TEST_BASE_REPOSITORY
from tests.helpers.rootfsinspect import dpkg_packages

pytestmark = pytest.mark.integration

BASE_IMAGE = f"{TEST_BASE_REPOSITORY}:ubuntu-noble"
LABEL = "org.osbuilder.role=rootfs-build"
COMPLETE_LABEL = "org.osbuilder.test-base-complete"


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    docker = pytest.importorskip("docker")
    started = subprocess.run([str(REPO / "scripts" / "start-dockerd")], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"no Docker engine can be started here: {started.stderr.strip()}")
    client = docker.from_env(timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="module")
def base_image(engine: object, rootfs_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """No registry is reachable: an Ubuntu noble image with mmdebstrap, made with mmdebstrap. It is
    labelled complete only when the bootstrap succeeded: an earlier run that failed halfway (a
    keyring apt could not read) imported an empty image under this name, which must not be reused."""
    import docker.errors

    try:
        found = engine.images.get(BASE_IMAGE)  # type: ignore[attr-defined]
        if (found.labels or {}).get(COMPLETE_LABEL) == "yes":
            return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=rootfs_cache)
    keyring = resolve_keyring(context.recipe("ubuntu"), host_arch(), context.versions, context.cache,
                              context.fetcher)
    assert keyring is not None
    tarball = tmp_path_factory.mktemp("base-image") / "noble.tar"
    # As the product does: apt verifies as _apt, which cannot read a keyring in a private cache.
    with keyring_for_apt(keyring) as readable:
        bootstrap = subprocess.run(
            ["mmdebstrap", "--variant=apt", "--components=main,universe",
             "--include=mmdebstrap,mount,distro-info-data", f"--keyring={readable}", "noble", str(tarball)],
            capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": ROOTFS_SDE})
    assert bootstrap.returncode == 0, bootstrap.stderr[-3000:]
    imported = subprocess.run(["docker", "import", "--change", f"LABEL {COMPLETE_LABEL}=yes", str(tarball),
                               BASE_IMAGE], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    tarball.unlink()
    return BASE_IMAGE


def _our_containers(engine: object) -> list[object]:
    return list(engine.containers.list(all=True, filters={"label": LABEL}))  # type: ignore[attr-defined]


def test_docker_backend_gives_the_same_packages(noble_rootfs: BuiltRootfs, base_image: str, engine: object,
                                                tmp_path: Path) -> None:
    output = tmp_path / "rootfs"
    result = build_rootfs(noble_rootfs.cache, output, *noble_rootfs.args, "--backend", "docker",
                          "--docker-base", base_image)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["backend"], report["mode"]) == ("docker", "docker")
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
