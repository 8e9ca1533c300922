"""A Docker engine for the docker backend's tests, and the builder base image they use.

No registry with distribution images is reachable here, so the base is an Ubuntu noble image with
mmdebstrap, made with mmdebstrap and imported; the x86_64 and the arm64 (cross) tiers share it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbuilder.arch import host_arch
from osbuilder.context import Context
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS
from osbuilder.rootfs.bootstrappers.docker import BUILDER_PACKAGES
from osbuilder.rootfs.bootstrappers.keyring import keyring_for_apt, resolve_keyring
from tests.helpers.machine_state import TEST_BASE_REPOSITORY

BASE_IMAGE = f"{TEST_BASE_REPOSITORY}:ubuntu-noble"
COMPLETE_LABEL = "org.osbuilder.test-base-complete"


@pytest.fixture(scope="session")
def engine() -> Iterator[object]:
    from tests.conftest import REPO

    docker = pytest.importorskip("docker")
    started = subprocess.run([str(REPO / "scripts" / "start-dockerd")], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"no Docker engine can be started here: {started.stderr.strip()}")
    client = docker.from_env(timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(engine: object, rootfs_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """No registry is reachable: an Ubuntu noble image with mmdebstrap, made with mmdebstrap. It is
    labelled complete only when the bootstrap succeeded: an earlier run that failed halfway (a
    keyring apt could not read) imported an empty image under this name, which must not be reused."""
    import docker.errors

    from tests.conftest import ROOTFS_SDE

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
             f"--include={','.join(BUILDER_PACKAGES)}", f"--keyring={readable}", "noble", str(tarball)],
            capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": ROOTFS_SDE})
    assert bootstrap.returncode == 0, bootstrap.stderr[-3000:]
    imported = subprocess.run(["docker", "import", "--change", f"LABEL {COMPLETE_LABEL}=yes", str(tarball),
                               BASE_IMAGE], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    tarball.unlink()
    return BASE_IMAGE
