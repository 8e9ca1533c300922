"""Running the Makefile's targets from tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The tests run inside the environment `make test` set up: make must not redo it (-o: assume old).
NO_SETUP = ("-o", ".venv/.deps-installed", "-o", ".venv/.osbuilder-installed")


def make(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-C", str(REPO), *NO_SETUP, *args], capture_output=True, text=True,
                          timeout=timeout)
