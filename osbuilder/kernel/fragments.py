"""Kernel config fragments: selection, parsing, conflicts, the whitelist, and the value check.

Everything here is pure (files in, data out) so the rules of kernel-configs/README.md are tested in
milliseconds; running kconfig is osbuilder.kernel.build's job.

Problems in the fragments themselves (syntax, =m, unknown tags, one symbol asked for twice) are bad
input: ConfigError, exit 2, all of them reported at once before anything runs. A requested value
that the kernel tree's kconfig does not produce (a misspelt symbol, unmet dependencies, a value out
of range) is found only by running the tree's kconfig: KconfigMismatchError, exit 1.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from osbuilder.errors import BuildError, ConfigError, UsageError, combine
from osbuilder.kernel.naming import kernel_suffix

ARCH_TAGS = ("x86_64", "arm64")  # the kernel-arch directory names, also usable as !tags
KNOWN_TAGS = (*ARCH_TAGS, "confidential")

# kconfig reads exactly these forms (scripts/kconfig/confdata.c); anything else is silently ignored
# by kconfig, so it is an error here rather than a request that vanishes.
_SET = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")
_UNSET = re.compile(r"# CONFIG_([A-Za-z0-9_]+) is not set")
_LOOKS_LIKE_KCONFIG = re.compile(r"#\s*CONFIG_[A-Za-z0-9_]+(\s*=|\s+is\s+not\s+set)")
_TAG_LINE = re.compile(r"#(\s*![A-Za-z0-9_-]+)+\s*")
_VALUE = re.compile(r'y|"(?:[^"\\]|\\.)*"|-?[0-9]+|0x[0-9a-fA-F]+')
_SYMBOL = re.compile(r"(?:CONFIG_)?([A-Za-z0-9_]+)")
_PATCH_NAME = re.compile(r"([0-9]+)-.+\.patch")


@dataclass(frozen=True)
class Request:
    """One line of a fragment: a symbol and the value it must end with (None: '# ... is not set')."""

    symbol: str  # without the CONFIG_ prefix
    value: str | None
    label: str  # the fragment as shown in messages (relative to the configs directory)
    line: int

    @property
    def where(self) -> str:
        return f"{self.label}:{self.line}"

    @property
    def shown(self) -> str:
        return "is not set" if self.value is None else self.value

    def text(self) -> str:
        return f"# CONFIG_{self.symbol} is not set" if self.value is None else f"CONFIG_{self.symbol}={self.value}"


@dataclass(frozen=True)
class Fragment:
    path: Path
    label: str
    tags: frozenset[str]
    requests: tuple[Request, ...]
    sha256: str


@dataclass(frozen=True)
class Variant:
    """What selects fragments and names the outputs (Kata: -a, -x, -m, KERNEL_DEBUG_ENABLED, -b)."""

    arch: str  # kernel-configs directory name: x86_64 or arm64
    confidential: bool = False
    measured: bool = True
    debug: bool = False
    build_type: str | None = None

    @property
    def suffix(self) -> str:
        """Kata's output-name suffix: -debug, then -<build type>; confidential/measured add none."""
        return kernel_suffix(self.debug, self.build_type)

    def to_json(self) -> dict[str, object]:
        return {"arch": self.arch, "confidential": self.confidential, "measured": self.measured,
                "debug": self.debug, "build_type": self.build_type, "suffix": self.suffix}


@dataclass(frozen=True)
class Selection:
    fragments: tuple[Fragment, ...]
    skipped: tuple[Fragment, ...]  # excluded by a !tag
    requests: tuple[Request, ...]  # in merge order, each symbol once

    def requested(self) -> dict[str, Request]:
        return {request.symbol: request for request in self.requests}

    def merged_text(self) -> str:
        """The KCONFIG_ALLCONFIG input: every request, in merge order, with its origin."""
        lines = []
        for fragment in self.fragments:
            lines.append(f"# {fragment.label}")
            lines.extend(request.text() for request in fragment.requests)
        return "\n".join(lines) + "\n"


@dataclass
class Whitelist:
    symbols: frozenset[str] = field(default_factory=frozenset)
    sha256: str = ""

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.symbols


# --- parsing --------------------------------------------------------------------------------------


def parse_fragment(path: Path, label: str, text: str | None = None) -> tuple[Fragment, list[ConfigError]]:
    """Parse one fragment; problems are returned (with file:line), not raised, so all are reported."""
    data = path.read_bytes() if text is None else text.encode()
    tags: set[str] = set()
    requests: list[Request] = []
    errors: list[ConfigError] = []

    def fail(line: int, problem: str, fix: str) -> None:
        errors.append(ConfigError(problem=problem, where=f"{label}:{line}", fix=fix))

    for number, raw in enumerate(data.decode(errors="replace").splitlines(), 1):
        line = raw.rstrip()
        if not line:
            continue
        if line != line.lstrip():
            fail(number, "line starts with whitespace (kconfig would ignore it)", "remove the leading whitespace")
            continue
        if match := _UNSET.fullmatch(line):
            requests.append(Request(match.group(1), None, label, number))
            continue
        if _TAG_LINE.fullmatch(line):
            for word in line.lstrip("#").split():
                tag = word[1:]
                if tag not in KNOWN_TAGS:
                    fail(number, f"unknown exclusion tag !{tag}",
                         f"known tags: {' '.join('!' + known for known in KNOWN_TAGS)}")
                tags.add(tag)
            continue
        if line.startswith("#"):
            if _LOOKS_LIKE_KCONFIG.match(line):
                fail(number, f"'{line}' looks like a kconfig line but kconfig reads it as a comment",
                     "write '# CONFIG_X is not set' exactly, or CONFIG_X=value; reword a prose comment")
            continue
        match = _SET.fullmatch(line)
        if match is None:
            fail(number, f"'{line}' is not a kconfig line", "use CONFIG_X=value or '# CONFIG_X is not set'")
            continue
        symbol, value = match.groups()
        if value == "m":
            fail(number, f"CONFIG_{symbol}=m: the guest kernel has no loadable modules",
                 f"use CONFIG_{symbol}=y, or drop the line")
        elif value == "n":
            fail(number, f"CONFIG_{symbol}=n is not how kconfig spells 'off'",
                 f"write '# CONFIG_{symbol} is not set'")
        elif not _VALUE.fullmatch(value):
            fail(number, f"CONFIG_{symbol} has the value {value!r}, which is not y, a number or a quoted string",
                 'quote strings: CONFIG_X="text"')
        else:
            requests.append(Request(symbol, value, label, number))
    fragment = Fragment(path, label, frozenset(tags), tuple(requests), hashlib.sha256(data).hexdigest())
    return fragment, errors


def parse_whitelist(path: Path, label: str = "whitelist.conf") -> Whitelist:
    """Whole symbol names, one per line, with or without CONFIG_; blank and '#' lines ignored."""
    if not path.is_file():
        return Whitelist()
    data = path.read_bytes()
    symbols: set[str] = set()
    errors: list[ConfigError] = []
    for number, raw in enumerate(data.decode(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _SYMBOL.fullmatch(line)
        if match is None:
            errors.append(ConfigError(problem=f"'{line}' is not a kconfig symbol name", where=f"{label}:{number}",
                                      fix="one whole symbol per line, e.g. CONFIG_FOO or FOO (no patterns)"))
            continue
        symbols.add(match.group(1))
    if errors:
        raise combine(errors)
    return Whitelist(frozenset(symbols), hashlib.sha256(data).hexdigest())


def read_config_version(configs_dir: Path) -> str:
    path = configs_dir / "config_version"
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(problem=f"cannot read config_version: {exc.strerror}", where=str(path),
                          fix="the configs directory needs a config_version file holding one integer") from exc
    if not text.isdigit():
        raise ConfigError(problem=f"config_version must be one integer, not {text!r}", where=f"{path}:1",
                          fix="write a single integer and bump it for every change to the fragments or patches")
    return str(int(text))


# --- selection ------------------------------------------------------------------------------------


def fragment_dirs(configs_dir: Path, variant: Variant) -> list[str]:
    """The directories merged for a variant, in merge order (kernel-configs/README.md)."""
    if variant.arch not in ARCH_TAGS:
        raise UsageError(problem=f"no kernel fragments for architecture {variant.arch}", where="--arch",
                         fix=f"kernel-configs supports {', '.join(ARCH_TAGS)}")
    dirs = ["common", variant.arch]
    if variant.build_type:
        if not (configs_dir / "build-type" / variant.build_type).is_dir():
            known = sorted(p.name for p in (configs_dir / "build-type").glob("*") if p.is_dir())
            raise UsageError(problem=f"unknown build type '{variant.build_type}'",
                             where=f"--build-type {variant.build_type}",
                             fix=f"use one of: {', '.join(known)}" if known else
                             f"create {configs_dir / 'build-type' / variant.build_type}/ with its fragments")
        dirs.append(f"build-type/{variant.build_type}")
    if variant.confidential and not variant.measured:
        raise UsageError(problem="a confidential guest always has a measured rootfs", where="--no-measured",
                         fix="drop --no-measured (confidential implies the measured fragments)")
    if variant.measured:
        dirs.append("measured")
    if variant.confidential:
        if not (configs_dir / "confidential" / variant.arch).is_dir():
            raise UsageError(
                problem=f"no confidential guest support for {variant.arch} in {configs_dir}",
                where="--confidential",
                fix=f"confidential/{variant.arch}/ does not exist: this kernel has no confidential guest "
                    f"fragments for {variant.arch} (arm64 CCA guests need Linux 6.13 or later); build without "
                    "--confidential",
            )
        dirs += ["confidential/common", f"confidential/{variant.arch}"]
    if variant.debug:
        dirs.append("debug")
    return dirs


def _dir_fragments(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if p.name.endswith(".conf") and p.is_file()),
                  key=lambda p: p.name)


def excluded(fragment: Fragment, variant: Variant) -> bool:
    return variant.arch in fragment.tags or (variant.confidential and "confidential" in fragment.tags)


def select(configs_dir: Path, variant: Variant, extra: Sequence[Path] = ()) -> Selection:
    """Fragments for a variant plus the user's extra fragments; raises ConfigError with every problem
    (syntax, tags, =m, a symbol requested twice) before anything runs."""
    paths: list[tuple[Path, str]] = []
    for directory in fragment_dirs(configs_dir, variant):
        paths.extend((path, f"{directory}/{path.name}") for path in _dir_fragments(configs_dir / directory))
    for path in extra:
        if not path.is_file():
            raise UsageError(problem="no such fragment file", where=f"--extra-fragment {path}",
                             fix="give the path of a kconfig fragment")
        paths.append((path, os.path.relpath(path) if not path.is_absolute() else str(path)))
    errors: list[ConfigError] = []
    chosen: list[Fragment] = []
    skipped: list[Fragment] = []
    for path, label in paths:
        fragment, problems = parse_fragment(path, label)
        errors.extend(problems)
        (skipped if excluded(fragment, variant) else chosen).append(fragment)
    requests: list[Request] = []
    errors.extend(find_conflicts(chosen, requests))
    if errors:
        raise combine(errors)
    return Selection(tuple(chosen), tuple(skipped), tuple(requests))


def find_conflicts(fragments: Iterable[Fragment], requests_out: list[Request] | None = None) -> list[ConfigError]:
    """A symbol may be requested once per variant: a second request is an error naming both places
    (a different value is a conflict, the same value a duplicate that hides which one matters)."""
    first: dict[str, Request] = {}
    errors: list[ConfigError] = []
    for fragment in fragments:
        for request in fragment.requests:
            earlier = first.get(request.symbol)
            if earlier is None:
                first[request.symbol] = request
                if requests_out is not None:
                    requests_out.append(request)
                continue
            kind = "requested twice" if earlier.value == request.value else "set to different values"
            errors.append(ConfigError(
                problem=f"CONFIG_{request.symbol} is {kind}: {earlier.shown} at {earlier.where} and "
                        f"{request.shown} at {request.where}",
                where=request.where,
                fix="keep the symbol in one fragment only (or exclude one file with a !tag)",
            ))
    return errors


# --- the resulting .config ------------------------------------------------------------------------

ABSENT = "absent"


def parse_config(text: str) -> dict[str, str | None]:
    """symbol (no CONFIG_ prefix) -> value, None for '# CONFIG_X is not set'; absent symbols missing."""
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        if match := _SET.fullmatch(line):
            values[match.group(1)] = match.group(2)
        elif match := _UNSET.fullmatch(line):
            values[match.group(1)] = None
    return values


@dataclass(frozen=True)
class Mismatch:
    request: Request
    actual: str | None  # ABSENT when the symbol is not in .config at all
    whitelisted: bool
    explanation: str = ""

    @property
    def shown_actual(self) -> str:
        if self.actual == ABSENT:
            return "absent from .config"
        return "is not set" if self.actual is None else self.actual

    def describe(self) -> str:
        text = (f"{self.request.where}: CONFIG_{self.request.symbol}: requested {self.request.shown}, "
                f"got {self.shown_actual}")
        return text + (f" ({self.explanation})" if self.explanation else "")

    def to_json(self) -> dict[str, object]:
        return {"symbol": f"CONFIG_{self.request.symbol}", "requested": self.request.shown,
                "actual": self.shown_actual, "where": self.request.where, "whitelisted": self.whitelisted,
                "explanation": self.explanation}


def check_values(requests: Iterable[Request], values: Mapping[str, str | None],
                 whitelist: Whitelist) -> list[Mismatch]:
    """Every request must end with exactly its value; '# is not set' must appear as such (a symbol
    that kconfig did not write at all is unknown or invisible, which we do not take for 'off')."""
    found = []
    for request in requests:
        if request.symbol in values and values[request.symbol] == request.value:
            continue
        actual = values.get(request.symbol, ABSENT)
        found.append(Mismatch(request, actual, request.symbol in whitelist))
    return found


@dataclass
class KconfigMismatchError(BuildError):
    """The kernel tree's kconfig did not produce every requested value (exit 1)."""

    mismatches: Sequence[Mismatch] = ()

    def message(self) -> str:
        lines = [f"{self.where}: {self.problem}" if self.where else self.problem]
        lines.extend("  " + mismatch.describe() for mismatch in self.mismatches)
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = dict(super().to_json())
        data["mismatches"] = [mismatch.to_json() for mismatch in self.mismatches]
        return data


def mismatch_error(mismatches: Sequence[Mismatch], kernel: str, tree: Path | None) -> KconfigMismatchError:
    # One walk of the kernel tree for every symbol: it reads thousands of Kconfig files.
    definitions = kconfig_definitions(tree, {m.request.symbol for m in mismatches}) if tree else {}
    explained = [Mismatch(m.request, m.actual, m.whitelisted,
                          explain(definitions.get(m.request.symbol, [])) if tree else "") for m in mismatches]
    return KconfigMismatchError(
        problem=f"{len(explained)} requested option(s) did not end with the requested value in {kernel}",
        where="kernel config",
        fix="correct the fragment (the symbol's spelling, its 'depends on', its range), or list the symbol "
            "in whitelist.conf with a comment saying why it may be missing",
        mismatches=explained,
    )


# --- explaining a mismatch from the tree's Kconfig files ------------------------------------------

_DEFINITION = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")


def kconfig_definitions(tree: Path, symbols: Iterable[str]) -> dict[str, list[tuple[str, int, list[str]]]]:
    """Where each symbol is defined: (file, line, its 'depends on'/'range' lines)."""
    wanted = set(symbols)
    found: dict[str, list[tuple[str, int, list[str]]]] = {symbol: [] for symbol in wanted}
    if not wanted:
        return found
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("Kconfig"):
                continue
            path = Path(root, name)
            lines = path.read_text(errors="replace").splitlines()
            for index, line in enumerate(lines):
                match = _DEFINITION.match(line)
                if match is None or match.group(1) not in wanted:
                    continue
                details = []
                for following in lines[index + 1:index + 40]:
                    if _DEFINITION.match(following) or following.startswith(("endmenu", "menu ", "endif", "if ")):
                        break
                    stripped = following.strip()
                    if stripped.startswith(("depends on", "range")):
                        details.append(stripped)
                found[match.group(1)].append((path.relative_to(tree).as_posix(), index + 1, details))
    return found


def explain(definitions: list[tuple[str, int, list[str]]]) -> str:
    """Why a symbol may not have its value, from its definitions (kconfig_definitions)."""
    if not definitions:
        return "no such option in this kernel: misspelt, renamed or removed"
    file, line, details = definitions[0]
    condition = "; ".join(details)
    return f"defined at {file}:{line}" + (f"; {condition}" if condition else "")


# --- patches --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    path: Path
    label: str
    sha256: str


def find_patches(configs_dir: Path, kernel_version: str, build_type: str | None) -> list[Patch]:
    """patches/<major.minor>.x/NNNN-*.patch in numeric order, then the build type's subdirectory.
    A missing directory means no patches."""
    major_minor = ".".join(kernel_version.split(".")[:2])
    base = configs_dir / "patches" / f"{major_minor}.x"
    patches: list[Patch] = []
    for directory in [base, *([base / build_type] if build_type else [])]:
        if not directory.is_dir():
            continue
        numbered: list[tuple[int, str, Path]] = []
        errors: list[ConfigError] = []
        for path in directory.iterdir():
            if not path.is_file() or not path.name.endswith(".patch"):
                continue
            match = _PATCH_NAME.fullmatch(path.name)
            if match is None:
                errors.append(ConfigError(problem="patch file name has no NNNN- number",
                                          where=str(path), fix="name patches NNNN-description.patch"))
                continue
            numbered.append((int(match.group(1)), path.name, path))
        if errors:
            raise combine(errors)
        for _number, _name, path in sorted(numbered):
            label = path.relative_to(configs_dir).as_posix()
            patches.append(Patch(path, label, hashlib.sha256(path.read_bytes()).hexdigest()))
    return patches
