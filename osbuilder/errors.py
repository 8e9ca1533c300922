"""Typed errors and the exit codes they map to.

Every error a user can meet says where the problem is (a file and line, a field, or a command-line
argument), what is wrong, and how to fix it. The CLI turns them into a message and an exit code:
2 for bad input or configuration, 1 for a build or run that failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


@dataclass
class OsbuilderError(Exception):
    """Base class. `where` names the file:line, field or argument; `fix` tells the user what to do."""

    problem: str
    where: str = ""
    fix: str = ""
    exit_code: int = EXIT_FAILED

    def __post_init__(self) -> None:
        super().__init__(self.message())

    def message(self) -> str:
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": type(self).__name__, "problem": self.problem}
        if self.where:
            data["where"] = self.where
        if self.fix:
            data["fix"] = self.fix
        return data

    def __str__(self) -> str:
        return self.message()


@dataclass
class ConfigError(OsbuilderError):
    """A configuration file (versions.yaml, a recipe, a runtime configuration) is invalid."""

    exit_code: int = EXIT_BAD_INPUT


@dataclass
class UsageError(OsbuilderError):
    """A command-line argument or an input path is invalid."""

    exit_code: int = EXIT_BAD_INPUT


@dataclass
class ConfigErrors(ConfigError):
    """Several configuration problems found in one validation pass, reported together."""

    errors: Sequence[ConfigError] = field(default_factory=list)

    def message(self) -> str:
        return "\n".join(error.message() for error in self.errors)

    def to_json(self) -> dict[str, Any]:
        return {"type": "ConfigErrors", "errors": [error.to_json() for error in self.errors]}


@dataclass
class BuildError(OsbuilderError):
    """A build or run step failed."""

    exit_code: int = EXIT_FAILED


@dataclass
class FetchError(BuildError):
    """A download failed or did not verify."""


@dataclass
class CommandError(BuildError):
    """An external command exited non-zero (or could not be started)."""

    argv: Sequence[str] = ()
    returncode: int | None = None
    stderr_tail: str = ""

    def message(self) -> str:
        text = super().message()
        if self.stderr_tail:
            indented = "\n".join("    " + line for line in self.stderr_tail.splitlines())
            text += f"\n  last lines of its output:\n{indented}"
        return text

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(argv=list(self.argv), returncode=self.returncode, stderr_tail=self.stderr_tail)
        return data


def combine(errors: Sequence[ConfigError]) -> ConfigError:
    """One error stays itself; several become a ConfigErrors so all are reported at once."""
    if len(errors) == 1:
        return errors[0]
    return ConfigErrors(problem=f"{len(errors)} problems", errors=list(errors))
