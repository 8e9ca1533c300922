"""Subcommands. Each module here defines COMMAND; the CLI discovers them, so adding a command
means adding a module and nothing else."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from osbuilder.context import Context


@dataclass
class Outcome:
    """A command's result: `data` is printed as JSON with --json, `text` otherwise."""

    data: dict[str, Any]
    text: str
    exit_code: int = 0


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Context, argparse.Namespace], Outcome]
    order: int = 50
    description: str = ""
    epilog: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


def discover() -> list[Command]:
    commands = []
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        command = getattr(module, "COMMAND", None)
        if isinstance(command, Command):
            commands.append(command)
    return sorted(commands, key=lambda command: (command.order, command.name))
