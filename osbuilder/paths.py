"""Where osbuilder finds its own data and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

# The repository root: versions.yaml, distros/, kernel-configs/ and agent/ live there. The package is
# used from a checkout (editable install), which is how release pipelines and developers run it.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VERSIONS = REPO_ROOT / "versions.yaml"
DEFAULT_DISTROS_DIR = REPO_ROOT / "distros"
KERNEL_CONFIGS_DIR = REPO_ROOT / "kernel-configs"
AGENT_SOURCE_DIR = REPO_ROOT / "agent"


def default_cache_dir() -> Path:
    """$OSBUILDER_CACHE_DIR, else $XDG_CACHE_HOME/osbuilder, else ~/.cache/osbuilder."""
    explicit = os.environ.get("OSBUILDER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "osbuilder"
