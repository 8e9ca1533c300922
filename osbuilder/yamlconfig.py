"""YAML loading that remembers where every value came from, and a small schema language.

Configuration errors must name the file and line. PyYAML's composer gives us nodes with marks;
we validate the node tree against a schema and build plain Python values, collecting every problem
(with file:line and a suggested fix) before any work starts.

Strings must be strings in the YAML: an unquoted `3.10` is the float 3.1 and `no` is a boolean,
which silently corrupts versions and names, so a scalar that YAML resolves to anything but a string
is rejected where a string belongs, with the quoted spelling as the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import types
import typing
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


# --- frozen dataclasses as the schema -----------------------------------------------------------
#
# A configuration file is described once, by the frozen dataclasses it is read into: each field
# declared with `setting(...)` names its YAML key and, for scalars, the schema of its value. The
# closed schema (`schema_of`) and the construction of the dataclasses from the validated value
# (`construct`) are both derived from those declarations, so a field is never written three times.
# Nested dataclasses are nested mappings; a `tuple[X, ...]` of a dataclass with an `entry_name()`
# field is a mapping keyed by that name (releases by codename, pins by architecture); an Enum is
# one of its values. `location()` fields receive the dotted path of their object, for errors.

_SPEC = "osbuilder.yaml"


@dataclass(frozen=True)
class Setting:
    """How one dataclass field appears in YAML."""

    schema: Schema | None = None  # scalars and lists of scalars; None: derived from the annotation
    key: str | None = None  # the YAML key; default: the field name with '-' for '_'
    required: bool = True
    role: str = "value"  # "value", "name" (the entry's key in its mapping), "path" (its dotted path)
    key_pattern: str = r"[A-Za-z0-9][A-Za-z0-9._+-]*"  # mappings of entries: what a key looks like
    key_hint: str = "a name"
    min_items: int = 0


def setting(schema: Schema | None = None, *, key: str | None = None, required: bool | None = None,
            default: Any = dataclasses.MISSING, key_pattern: str = Setting.key_pattern,
            key_hint: str = Setting.key_hint, min_items: int = 0) -> Any:
    """A field read from YAML. Without a default it is required in the file (unless required=False)."""
    spec = Setting(schema, key, default is dataclasses.MISSING if required is None else required, "value",
                   key_pattern, key_hint, min_items)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={_SPEC: spec})
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def entry_name() -> Any:
    """The field that receives the entry's key in its mapping (a release's codename)."""
    return dataclasses.field(default="", metadata={_SPEC: Setting(required=False, role="name")})


def location() -> Any:
    """The field that receives the object's dotted path in the file (for error messages)."""
    return dataclasses.field(default="", metadata={_SPEC: Setting(required=False, role="path")})


def _settings(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Setting, Any]]:
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        spec = item.metadata.get(_SPEC)
        if isinstance(spec, Setting):
            yield item, spec, hints[item.name]


def _yaml_key(item: dataclasses.Field[Any], spec: Setting) -> str:
    return spec.key or item.name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _entry_class(annotation: Any) -> type | None:
    """X for tuple[X, ...] when X is a dataclass: a mapping of entries in YAML."""
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
            return typing.cast(type, args[0])
    return None


def _schema_for(annotation: Any, spec: Setting, owner: type) -> Schema:
    annotation = _unwrap_optional(annotation)
    if spec.schema is not None:
        return spec.schema
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return Str(choices=tuple(str(member.value) for member in annotation))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return schema_of(annotation)
    entry = _entry_class(annotation)
    if entry is not None:
        return MapOf(schema_of(entry), key_pattern=spec.key_pattern, key_hint=spec.key_hint,
                     min_items=spec.min_items)
    raise TypeError(f"{owner.__name__}: no schema for {annotation!r}; give setting(schema=...)")


@functools.cache
def schema_of(cls: type) -> Obj:
    """The closed schema of a dataclass. Its `YAML_NAME` class attribute names it in messages and
    an optional `yaml_check(value, node, path, ctx)` static method checks across fields."""
    fields = {_yaml_key(item, spec): Field(_schema_for(annotation, spec, cls), spec.required)
              for item, spec, annotation in _settings(cls) if spec.role == "value"}
    return Obj(fields, name=getattr(cls, "YAML_NAME", cls.__name__), check_fn=getattr(cls, "yaml_check", None))


T = typing.TypeVar("T")


def _convert(annotation: Any, raw: Any, path: Path_) -> Any:
    annotation = _unwrap_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation(raw)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return construct(annotation, raw, path)
    entry = _entry_class(annotation)
    if entry is not None:
        return tuple(construct(entry, value, (*path, key)) for key, value in raw.items())
    if typing.get_origin(annotation) is tuple:
        return tuple(raw)
    return raw


def construct(cls: type[T], value: Mapping[str, Any], at: Path_ = (), **extra: Any) -> T:
    """The dataclass for a value that schema_of(cls) validated; `extra` fills fields not in YAML."""
    arguments: dict[str, Any] = dict(extra)
    for item, spec, annotation in _settings(cls):
        if spec.role == "path":
            arguments[item.name] = ".".join(str(part) for part in at)
        elif spec.role == "name":
            arguments[item.name] = _convert(annotation, str(at[-1]), at) if at else ""
        else:
            raw = value.get(_yaml_key(item, spec))
            if raw is not None:  # absent: the dataclass default
                arguments[item.name] = _convert(annotation, raw, (*at, _yaml_key(item, spec)))
    return cls(**arguments)


def load_as(file: Path, cls: type[T], **extra: Any) -> tuple[T, Document]:
    """Parse and validate a YAML file against the dataclass's schema, then build the dataclass."""
    document = load(file, schema_of(typing.cast(type, cls)))
    return construct(cls, document.value, (), **extra), document


def yaml_keys(cls: type) -> dict[str, str]:
    """YAML key -> field name, for walking a loaded tree by the file's own keys."""
    return {_yaml_key(item, spec): item.name for item, spec, _annotation in _settings(cls) if spec.role == "value"}


def entry_name_field(cls: type) -> str:
    """The field that holds an entry's key in its mapping."""
    for item, spec, _annotation in _settings(cls):
        if spec.role == "name":
            return item.name
    raise TypeError(f"{cls.__name__} has no entry_name() field")
