"""Command-line options declared once: flag, Make variable, type, default and help in one table.

A step's table generates its argparse group, its request (the frozen dataclass the step plans
from) and the Makefile's pass-through: `osbuilder <command> --make-variables` reads each option's
Make variable from the environment (make exports the variables of its command line, and the
user's environment, to the commands it runs) whenever the command line leaves the option at its
default. The parsed arguments are never changed: the request is made from them and the variables. So the Makefile names no option of its own and interprets no value: `make image
FS_TYPE=erofs` reaches osbuilder as FS_TYPE=erofs and means --fs-type erofs. The Make spellings are
Kata's (AGENT_INIT=yes, EXTRA_PKGS="a b", USE_DOCKER=true).
"""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from osbuilder.errors import UsageError
from osbuilder.metadata import commit_epoch

MAKE_VARIABLES_FLAG = "--make-variables"
TRUE_WORDS = ("yes", "true", "1", "y", "on")
FALSE_WORDS = ("no", "false", "0", "n", "off", "")


class Kind(enum.Enum):
    TEXT = "text"
    PATH = "path"
    INT = "int"
    FLOAT = "float"
    FLAG = "flag"  # store_true; Make: yes/no
    LIST = "list"  # one or more words; Make: "a b" (commas work too, as in Kata's EXTRA_PKGS)
    COMMAND = "command"  # a positional: the rest of the command line, after an optional --


def split_words(values: Sequence[str]) -> tuple[str, ...]:
    """--extra-pkgs a,b c and EXTRA_PKGS="a b" both mean (a, b, c)."""
    return tuple(word for value in values for word in value.replace(",", " ").split())


def make_flag(variable: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UsageError(problem=f"'{value}' is not yes or no", where=f"{variable}={value}",
                     fix=f"use {variable}=yes or {variable}=no")


@dataclass(frozen=True)
class Option:
    dest: str  # the request's field and the argparse attribute
    flags: tuple[str, ...]  # e.g. ("-o", "--output"); empty for a positional argument
    help: str
    make: str | None = None  # the Make variable (Kata's name where Kata has one)
    kind: Kind = Kind.TEXT
    default: Any = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    exclusive: str | None = None  # options with the same name exclude each other
    required: bool = False
    enum: type[enum.Enum] | None = None  # the values are an enum's (choices derived from it)
    # A Make value -> the option's value, where the Make variable is not simply the option's value
    # (USE_DOCKER=true means --backend docker).
    from_make: Callable[[str], Any] | None = None

    @property
    def display(self) -> str:
        return self.flags[-1] if self.flags else self.metavar or self.dest.upper()

    @property
    def allowed(self) -> tuple[str, ...] | None:
        if self.enum is not None:
            return tuple(str(member.value) for member in self.enum)
        return self.choices

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"help": self.help}
        if self.kind is Kind.FLAG:
            kwargs.update(action="store_true", default=self.default)
            return kwargs
        if self.kind is Kind.COMMAND:
            kwargs.update(nargs=argparse.REMAINDER, default=[])
        elif self.kind is Kind.LIST:
            kwargs.update(nargs="+", default=list(self.default or ()))
        elif self.flags:
            kwargs["default"] = self.default
        else:  # an optional positional
            kwargs.update(nargs="?", default=self.default)
        if self.kind is Kind.PATH:
            kwargs["type"] = Path
        elif self.kind is Kind.INT:
            kwargs["type"] = int
        elif self.kind is Kind.FLOAT:
            kwargs["type"] = float
        if self.metavar:
            kwargs["metavar"] = self.metavar
        if self.allowed:
            kwargs["choices"] = list(self.allowed)
        if self.required:
            kwargs["required"] = True
        return kwargs

    def parse_make(self, value: str) -> Any:
        """The option's value for a Make variable's value (bad values are bad input, exit 2)."""
        assert self.make is not None
        if self.from_make is not None:
            return self.from_make(value)
        if self.kind is Kind.FLAG:
            return make_flag(self.make, value)
        if self.kind is Kind.LIST:
            return list(split_words([value]))
        if self.kind is Kind.PATH:
            return Path(value)
        if self.kind in (Kind.INT, Kind.FLOAT):
            try:
                return int(value) if self.kind is Kind.INT else float(value)
            except ValueError:
                raise UsageError(problem=f"'{value}' is not a number", where=f"{self.make}={value}",
                                 fix=f"e.g. {self.make}={self.default if self.default is not None else 0}") from None
        allowed = self.allowed
        if allowed and value not in allowed:
            raise UsageError(problem=f"'{value}' is not one of {', '.join(allowed)}",
                             where=f"{self.make}={value}", fix=f"use one of {', '.join(allowed)}")
        return value

    def request_value(self, value: Any) -> Any:
        """The request's form of a parsed value: tuples for lists (requests are frozen)."""
        if self.kind is Kind.LIST:
            return split_words(value or [])
        if self.kind is Kind.COMMAND:
            words = list(value or [])
            return tuple(words[1:] if words[:1] == ["--"] else words)
        if self.enum is not None and value is not None:
            return self.enum(value)
        return value


T = TypeVar("T")


@dataclass(frozen=True)
class Table:
    """A group of options, as one argparse group and one request dataclass."""

    title: str
    options: tuple[Option, ...]
    description: str = field(default="", compare=False)

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options)

    def __getitem__(self, dest: str) -> Option:
        for option in self.options:
            if option.dest == dest:
                return option
        raise KeyError(dest)

    def without(self, *dests: str) -> Table:
        return Table(self.title, tuple(option for option in self.options if option.dest not in dests),
                     self.description)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(self.title, self.description or None)
        exclusive: dict[str, Any] = {}
        for option in self.options:
            target: Any = group
            if option.exclusive is not None:
                if option.exclusive not in exclusive:  # setdefault would make an empty group each time
                    exclusive[option.exclusive] = group.add_mutually_exclusive_group()
                target = exclusive[option.exclusive]
            if option.flags:
                target.add_argument(*option.flags, dest=option.dest, **option.argparse_kwargs())
            else:
                target.add_argument(option.dest, **option.argparse_kwargs())

    def from_make(self, args: argparse.Namespace, environment: Mapping[str, str] | None) -> dict[str, Any]:
        """The options the command line left at their defaults whose Make variable is set (empty is
        unset, as in make), with their values; nothing without an environment to read."""
        found: dict[str, Any] = {}
        for option in self.options:
            value = (environment or {}).get(option.make or "")
            if option.make is None or not value:
                continue
            default = list(option.default or ()) if option.kind is Kind.LIST else option.default
            if getattr(args, option.dest) == default:  # else given on the command line, which wins
                found[option.dest] = option.parse_make(value)
        return found

    def values(self, args: argparse.Namespace, environment: Mapping[str, str] | None = None) -> dict[str, Any]:
        """dest -> the request's value: the command line's, else (with an environment) the Make
        variable's, else the default."""
        made = self.from_make(args, environment)
        return {option.dest: option.request_value(made.get(option.dest, getattr(args, option.dest)))
                for option in self.options}


def make_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The environment a step started by make (--make-variables) works in: SOURCE_DATE_EPOCH defaults
    to the checkout's commit time (the kernel is not started that way: its date is its source's)."""
    result = dict(environment)
    if not result.get("SOURCE_DATE_EPOCH"):
        epoch = commit_epoch()
        if epoch is not None:
            result["SOURCE_DATE_EPOCH"] = str(epoch)
    return result


def make_variables(args: argparse.Namespace) -> Mapping[str, str] | None:
    """The environment to read Make variables from: ours with --make-variables, else none."""
    return os.environ if getattr(args, "make_variables", False) else None


def values(args: argparse.Namespace, *tables: Table) -> dict[str, Any]:
    """dest -> value of every option of the tables (Make variables read with --make-variables)."""
    environment = make_variables(args)
    return {dest: value for table in tables for dest, value in table.values(args, environment).items()}


def set_by_make(args: argparse.Namespace, *tables: Table) -> frozenset[str]:
    """The options whose value came from a Make variable."""
    environment = make_variables(args)
    return frozenset(dest for table in tables for dest in table.from_make(args, environment))


def request(cls: type[T], args: argparse.Namespace, *tables: Table, **extra: Any) -> T:
    """A request dataclass from the options of several tables (its fields, by name)."""
    assert is_dataclass(cls)
    names = {item.name for item in fields(cls)}
    given = {dest: value for dest, value in values(args, *tables).items() if dest in names}
    return cls(**given, **extra)


def tables_of(*tables: Table) -> tuple[Table, ...]:
    """Tables sharing a parser must not declare a flag twice."""
    seen: dict[str, str] = {}
    for table in tables:
        for option in table:
            for flag in option.flags or (option.dest,):
                if flag in seen:
                    raise ValueError(f"{flag} is declared in both '{seen[flag]}' and '{table.title}'")
                seen[flag] = table.title
    return tables
