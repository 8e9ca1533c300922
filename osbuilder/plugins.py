"""Packages whose modules each define one object of a kind (commands, inspectors): adding a module
adds the object, nothing else to register."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def collect(package: str, path: Iterable[str], attribute: str, kind: type[T]) -> list[T]:
    """The `attribute` of every public module in `package` that has one of type `kind`."""
    found = []
    for module_info in pkgutil.iter_modules(path):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{module_info.name}")
        value = getattr(module, attribute, None)
        if isinstance(value, kind):
            found.append(value)
    return found


def module_names(path: Iterable[str]) -> list[str]:
    """The public module names, without importing them."""
    return sorted(info.name for info in pkgutil.iter_modules(path) if not info.name.startswith("_"))
