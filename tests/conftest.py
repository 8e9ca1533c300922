"""Shared fixtures. Integration tests (real tools) carry @pytest.mark.integration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from osbuilder.paths import default_cache_dir
from tests.helpers.assets import assets  # noqa: F401  (session fixture: kernel, images, initrd for boots)
from tests.helpers.docker_engine import base_image, engine  # noqa: F401  (session fixtures: the docker backend's)
from tests.helpers.httpproxy import RecordingProxy
from tests.helpers.httpserver import FixtureServer
from tests.helpers.kernel import default_kernel  # noqa: F401  (session fixture: the default guest kernel)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def http_server() -> Iterator[FixtureServer]:
    server = FixtureServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path


def run_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600, check_json: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `python -m osbuilder` as a user would, in a subprocess."""
    full_env = dict(os.environ)
    full_env.setdefault("OSBUILDER_NO_PROGRESS", "1")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "osbuilder", *map(os.fspath, args)],
        capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout,
    )


@pytest.fixture
def cli() -> object:
    return run_cli


@pytest.fixture(scope="session")
def test_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference agent (agent/), built once (cached) so the rootfs trees the tests build boot and
    answer; a copy, so tests may hand it to other users."""
    from osbuilder.agent_build import reference_agent
    from tests.helpers.kernel import user_context

    context = user_context()
    copy = tmp_path_factory.mktemp("agent") / "kata-agent"
    shutil.copyfile(reference_agent(context.versions.agent_version, context.cache), copy)
    copy.chmod(0o755)
    return copy


# --- built rootfs trees, shared by the integration tests ------------------------------------------

ROOTFS_SDE = "1700000000"


@dataclass
class BuiltRootfs:
    path: Path  # the rootfs directory (-o)
    report: dict[str, Any]  # build-rootfs --json
    cache: Path  # the osbuilder cache it was built with
    args: tuple[str, ...]  # build-rootfs arguments without -o, to rebuild it


def build_rootfs(cache: Path, output: Path, *args: str | os.PathLike[str],
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("--cache-dir", cache, "build-rootfs", *args, "-o", output, "--json",
                   env={"SOURCE_DATE_EPOCH": ROOTFS_SDE, **(env or {})}, timeout=3600)


def _built(cache: Path, output: Path, args: tuple[str, ...], env: dict[str, str] | None = None) -> BuiltRootfs:
    result = build_rootfs(cache, output, *args, env=env)
    assert result.returncode == 0, result.stderr
    return BuiltRootfs(output, json.loads(result.stdout), cache, args)


@pytest.fixture(scope="session")
def rootfs_cache() -> Path:
    """The user's cache (or $OSBUILDER_TEST_CACHE_DIR), kept between runs and shared with the kernel:
    reruns reuse the rootfs and package caches. Tests that need a cold cache make their own."""
    path = Path(os.environ.get("OSBUILDER_TEST_CACHE_DIR") or default_cache_dir())
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def noble_rootfs(tmp_path_factory: pytest.TempPathFactory, rootfs_cache: Path, test_agent: Path) -> BuiltRootfs:
    """Ubuntu noble, systemd init, native backend."""
    args = ("--distro", "ubuntu", "--os-version", "noble", "--agent", str(test_agent))
    return _built(rootfs_cache, tmp_path_factory.mktemp("noble") / "rootfs", args)


@pytest.fixture(scope="session")
def archive_proxy() -> Iterator[RecordingProxy]:
    proxy = RecordingProxy().start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def bookworm_agent_rootfs(tmp_path_factory: pytest.TempPathFactory, test_agent: Path,
                          archive_proxy: RecordingProxy) -> BuiltRootfs:
    """Debian bookworm, the agent as init, native backend; built with a cold cache through a recording
    proxy, so tests can see what was downloaded."""
    cache = tmp_path_factory.mktemp("bookworm-cache")
    args = ("--distro", "debian", "--os-version", "bookworm", "--agent-init", "--agent", str(test_agent))
    archive_proxy.clear()
    built = _built(cache, tmp_path_factory.mktemp("bookworm") / "rootfs", args, env={"http_proxy": archive_proxy.url})
    built.report["proxied_debs"] = archive_proxy.debs()
    return built


# Session fixtures of helpers that use run_cli and build_rootfs above: imported last, so that the
# helpers find them defined when they import this module.
from tests.helpers.bundle import release_bundle, runtime_tarball, signing_key  # noqa: E402, F401  (the release bundle)
from tests.helpers.containers import container_rootfs  # noqa: E402, F401  (the workload's root)
