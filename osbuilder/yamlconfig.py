"""YAML loading that remembers where every value came from, and a small schema language.

Configuration errors must name the file and line. PyYAML's composer gives us nodes with marks;
we validate the node tree against a schema and build plain Python values, collecting every problem
(with file:line and a suggested fix) before any work starts.

Strings must be strings in the YAML: an unquoted `3.10` is the float 3.1 and `no` is a boolean,
which silently corrupts versions and names, so a scalar that YAML resolves to anything but a string
is rejected where a string belongs, with the quoted spelling as the fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from osbuilder.errors import ConfigError, combine

STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Document:
    """A validated YAML file: its plain value plus the location of every node by path."""

    file: str
    value: Any
    locations: dict[Path_, Where] = field(default_factory=dict)

    def where(self, *path: str | int) -> Where:
        """Location of the value at path, or of its nearest parent that exists."""
        probe: Path_ = tuple(path)
        while probe not in self.locations and probe:
            probe = probe[:-1]
        return self.locations.get(probe, Where(self.file, 1))

    def error(self, path: Sequence[str | int], problem: str, fix: str = "") -> ConfigError:
        field_name = ".".join(str(part) for part in path)
        location = self.where(*path)
        where = f"{location} ({field_name})" if field_name else str(location)
        return ConfigError(problem=problem, where=where, fix=fix)


# --- schema -------------------------------------------------------------------------------------


class Schema:
    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Context:
    file: str
    errors: list[ConfigError] = field(default_factory=list)
    locations: dict[Path_, Where] = field(default_factory=dict)

    def where(self, node: yaml.Node, path: Path_) -> str:
        name = ".".join(str(part) for part in path)
        line = node.start_mark.line + 1
        return f"{self.file}:{line} ({name})" if name else f"{self.file}:{line}"

    def fail(self, node: yaml.Node, path: Path_, problem: str, fix: str = "") -> None:
        self.errors.append(ConfigError(problem=problem, where=self.where(node, path), fix=fix))


def _scalar_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else ""


@dataclass(frozen=True)
class Str(Schema):
    """A string. `pattern` is a full-match regex; `choices` a closed set."""

    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    hint: str = ""
    allow_empty: bool = False

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(f'"{choice}"' for choice in self.choices)
        return self.hint or "a quoted string"

    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            ctx.fail(node, path, f"expected {self.describe()}, found a {_kind(node)}")
            return None
        if node.tag != STR_TAG:
            text = node.value
            ctx.fail(
                node,
                path,
                f"'{text}' is read by YAML as {_yaml_type(node)}, not a string",
                fix=f'quote it: {path[-1] if path else "value"}: "{text}"',
            )
            return None
        value = str(node.value)
        if not value and not self.allow_empty:
            ctx.fail(node, path, f"must not be empty; expected {self.describe()}")
            return None
        if self.choices is not None and value not in self.choices:
            suggestion = difflib.get_close_matches(value, self.choices, n=1)
            fix = f'did you mean "{suggestion[0]}"?' if suggestion else f"use {self.describe()}"
            ctx.fail(node, path, f'"{value}" is not allowed; expected {self.describe()}', fix=fix)
            return None
        if self.pattern is not None and value and not re.fullmatch(self.pattern, value):
            ctx.fail(node, path, f'"{value}" is not {self.describe()}')
            return None
        return value


def Version() -> Str:
    return Str(pattern=r"[0-9A-Za-z][0-9A-Za-z.+~:_-]*", hint="a quoted version string")


def Sha256() -> Str:
    return Str(pattern=r"[0-9a-f]{64}", hint="a quoted sha256 (64 lowercase hex digits)")


def Url() -> Str:
    return Str(pattern=r"(https?|file)://\S+", hint="a quoted http(s):// or file:// URL")


def Name() -> Str:
    return Str(pattern=r"[a-z0-9][a-z0-9.+_-]*", hint="a quoted lowercase name")


@dataclass(frozen=True)
class Text(Schema):
    """Free text (descriptions): any string scalar, including block scalars."""

    def describe(self) -> str:
        return "text"

    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag != STR_TAG:
            ctx.fail(node, path, "expected text (a quoted string or a | block)")
            return None
        return str(node.value)


@dataclass(frozen=True)
class Int(Schema):
    minimum: int | None = None
    maximum: int | None = None

    def describe(self) -> str:
        return "an integer"

    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag != INT_TAG:
            ctx.fail(node, path, f"expected an integer, found {_yaml_type(node)} '{_scalar_text(node)}'")
            return None
        value = int(yaml.safe_load(node.value))
        if self.minimum is not None and value < self.minimum:
            ctx.fail(node, path, f"{value} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            ctx.fail(node, path, f"{value} is above the maximum {self.maximum}")
        return value


@dataclass(frozen=True)
class Bool(Schema):
    def describe(self) -> str:
        return "true or false"

    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag != BOOL_TAG:
            ctx.fail(node, path, f"expected true or false, found '{_scalar_text(node)}'")
            return None
        return str(node.value).lower() in ("true", "yes", "on")


@dataclass(frozen=True)
class ListOf(Schema):
    item: Schema
    min_items: int = 0
    unique: bool = False

    def describe(self) -> str:
        return f"a list of {self.item.describe()}"

    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            ctx.fail(node, path, f"expected {self.describe()}, found a {_kind(node)}")
            return None
        values = []
        for index, child in enumerate(node.value):
            child_path = (*path, index)
            ctx.locations[child_path] = Where(ctx.file, child.start_mark.line + 1)
            values.append(self.item.check(child, child_path, ctx))
        if len(values) < self.min_items:
            ctx.fail(node, path, f"needs at least {self.min_items} item(s)")
        if self.unique:
            seen: set[Any] = set()
            for index, value in enumerate(values):
                if value in seen:
                    ctx.fail(node.value[index], (*path, index), f"'{value}' is listed twice")
                seen.add(value)
        return values


@dataclass(frozen=True)
class MapOf(Schema):
    """A mapping with free keys (names matching key_pattern) and uniform values."""

    value: Schema
    key_pattern: str = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
    key_hint: str = "a name"
    min_items: int = 0

    def describe(self) -> str:
        return f"a mapping of {self.key_hint} to {self.value.describe()}"

    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:
        if not isinstance(node, yaml.MappingNode):
            ctx.fail(node, path, f"expected {self.describe()}, found a {_kind(node)}")
            return None
        result: dict[str, Any] = {}
        for key, key_node, value_node, child_path in _entries(node, path, ctx):
            if not re.fullmatch(self.key_pattern, key):
                ctx.fail(key_node, child_path, f"'{key}' is not {self.key_hint}")
                continue
            result[key] = self.value.check(value_node, child_path, ctx)
        if len(result) < self.min_items:
            ctx.fail(node, path, f"needs at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}")
        return result


@dataclass(frozen=True)
class Field:
    schema: Schema
    required: bool = False
    default: Any = None


@dataclass(frozen=True)
class Obj(Schema):
    """A closed mapping: known keys only (a misspelt key is an error with a suggestion)."""

    fields: Mapping[str, Field]
    name: str = "mapping"
    check_fn: Callable[[dict[str, Any], yaml.MappingNode, Path_, Context], None] | None = None

    def describe(self) -> str:
        return f"a {self.name}"

    def check(self, node: yaml.Node, path: Path_, ctx: Context) -> Any:
        if not isinstance(node, yaml.MappingNode):
            ctx.fail(node, path, f"expected {self.describe()} with keys {', '.join(self.fields)}, found a {_kind(node)}")
            return None
        result: dict[str, Any] = {}
        for key, key_node, value_node, child_path in _entries(node, path, ctx):
            if key not in self.fields:
                close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.6)
                fix = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(self.fields)}"
                ctx.fail(key_node, child_path, f"unknown key '{key}'", fix=fix)
                continue
            result[key] = self.fields[key].schema.check(value_node, child_path, ctx)
        for key, spec in self.fields.items():
            if key in result:
                continue
            if spec.required:
                ctx.fail(node, (*path, key), f"missing required key '{key}' ({spec.schema.describe()})",
                         fix=f"add '{key}:' to this {self.name}")
            elif spec.default is not None:
                result[key] = spec.default
        if self.check_fn is not None:
            self.check_fn(result, node, path, ctx)
        return result


def _entries(node: yaml.MappingNode, path: Path_, ctx: Context
             ) -> Iterator[tuple[str, yaml.Node, yaml.Node, Path_]]:
    """(key, key node, value node, child path) of a mapping; records locations, rejects duplicates."""
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            ctx.fail(key_node, path, "mapping keys must be plain names")
            continue
        key = str(key_node.value)
        child_path = (*path, key)
        if key in seen:
            ctx.fail(key_node, child_path, f"'{key}' is defined twice")
            continue
        seen.add(key)
        ctx.locations[child_path] = Where(ctx.file, key_node.start_mark.line + 1)
        yield key, key_node, value_node, child_path


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    if node.tag == NULL_TAG:
        return "empty value"
    return f"{_yaml_type(node)} '{node.value}'"


def _yaml_type(node: yaml.Node) -> str:
    return {
        STR_TAG: "a string",
        INT_TAG: "a number",
        "tag:yaml.org,2002:float": "a number",
        BOOL_TAG: "a boolean",
        NULL_TAG: "null",
    }.get(node.tag, node.tag)


# --- loading ------------------------------------------------------------------------------------


def compose(path: Path) -> yaml.Node | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(problem="file not found", where=str(path), fix="check the path") from exc
    except OSError as exc:
        raise ConfigError(problem=f"cannot read: {exc.strerror}", where=str(path)) from exc
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(
            problem=f"invalid YAML: {exc.problem or exc.context}",
            where=f"{path}:{line}",
            fix="fix the YAML syntax at that line",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(problem=f"invalid YAML: {exc}", where=str(path)) from exc


def load(path: Path, schema: Schema) -> Document:
    """Parse and validate a YAML file; raise one ConfigError listing every problem found."""
    node = compose(path)
    if node is None:
        raise ConfigError(problem="the file is empty", where=f"{path}:1", fix=f"write {schema.describe()}")
    ctx = Context(file=str(path))
    value = schema.check(node, (), ctx)
    if ctx.errors:
        raise combine(ctx.errors)
    return Document(file=str(path), value=value, locations=ctx.locations)
