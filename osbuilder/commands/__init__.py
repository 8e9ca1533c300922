"""Subcommands. Each module here defines COMMAND; the CLI discovers them, so adding a command
means adding a module and nothing else."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from osbuilder.context import Context
from osbuilder.options import Table
from osbuilder.plugins import collect


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
    # Option tables (osbuilder.options): added to the parser after configure()'s own arguments,
    # and read from their Make variables with --make-variables.
    options: tuple[Table, ...] = field(default_factory=tuple)


def discover() -> list[Command]:
    commands = collect(__name__, __path__, "COMMAND", Command)
    return sorted(commands, key=lambda command: (command.order, command.name))
