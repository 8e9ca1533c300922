"""Progress bars: tqdm on an interactive terminal, nothing in CI, pipes or --json runs."""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any, Protocol

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


class Bar(Protocol):
    """What osbuilder uses of a tqdm bar."""

    def update(self, n: float = 1) -> bool | None: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...
    def write(self, s: str, file: Any = None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Bar: ...
    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None: ...


class _Quiet:
    """The bar of a non-interactive run: counts nothing, and saves importing tqdm."""

    def update(self, n: float = 1) -> bool | None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def write(self, s: str, file: Any = None) -> None:
        print(s, file=file or sys.stderr)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        pass


def bar(total: float | None, description: str, unit: str = "it", **kwargs: Any) -> Bar:
    if not enabled():
        return _Quiet()
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        leave=False,
        file=sys.stderr,
        **kwargs,
    )
