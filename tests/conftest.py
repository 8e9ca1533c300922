"""Shared fixtures. Integration tests (real tools) carry @pytest.mark.integration."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.httpserver import FixtureServer

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
    """A static ELF to install as the agent (built once per session)."""
    from tests.helpers.testagent import build_test_agent

    return build_test_agent(tmp_path_factory.mktemp("agent"))
