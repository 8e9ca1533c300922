"""Progress bars: tqdm on an interactive terminal, nothing in CI, pipes or --json runs."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

_enabled: bool | None = None


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    if os.environ.get("CI") or os.environ.get("OSBUILDER_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def bar(total: float | None, description: str, unit: str = "it", **kwargs: Any) -> tqdm[Any]:
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=not enabled(),
        leave=False,
        file=sys.stderr,
        **kwargs,
    )
