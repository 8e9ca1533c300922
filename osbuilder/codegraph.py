"""osbuilder's own import graph, read from the sources: what each module imports inside the package,
the transitive closure of a step's modules, and the digest of that code for cache keys.

A build step's cache key must change when any code it runs changes, and only then. Lists of
modules kept by hand drift as code moves; the imports do not. So the code part of a key is the
digest of every module the step's entry module imports, directly or indirectly (function-level
imports included, `if TYPE_CHECKING:` imports excluded: they never run), with the package
`__init__` modules Python executes on the way, plus the data files those modules declare in a
module-level `DATA_FILES` tuple (paths relative to the package: templates and the like).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.cache import content_key, sha256_file, sha256_tree
from osbuilder.outputs import write_atomically

PACKAGE = "osbuilder"
PACKAGE_DIR = Path(__file__).resolve().parent
DATA_FILES_NAME = "DATA_FILES"
MEMO = "code-graph.json"  # the memo of code_digest in a cache directory


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. osbuilder.rootfs.plan
    path: Path
    imports: frozenset[str]  # osbuilder modules run when this one runs (packages' __init__ included)
    type_imports: frozenset[str]  # imported only for type checking
    data_files: tuple[str, ...]  # declared DATA_FILES, relative to the package directory
    sha256: str  # of the source

    def to_json(self) -> dict[str, Any]:
        return {"imports": sorted(self.imports), "type_imports": sorted(self.type_imports),
                "data_files": list(self.data_files), "sha256": self.sha256}


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(statements: list[ast.stmt], runs: bool = True
                  ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs (False: under `if TYPE_CHECKING:`). Imports are
    statements, so only statement bodies are walked, never expressions."""
    for statement in statements:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement, runs
            continue
        if isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from _import_nodes(statement.body, False)
            yield from _import_nodes(statement.orelse, runs)
            continue
        for name in ("body", "orelse", "finalbody"):
            block = getattr(statement, name, None)
            if isinstance(block, list):
                yield from _import_nodes(block, runs)
        for handler in getattr(statement, "handlers", ()):
            yield from _import_nodes(handler.body, runs)
        for case in getattr(statement, "cases", ()):
            yield from _import_nodes(case.body, runs)


def _with_parents(name: str, known: set[str]) -> set[str]:
    """A module and the packages Python initialises to import it."""
    parts = name.split(".")
    return {".".join(parts[:depth]) for depth in range(1, len(parts) + 1)} & known


def _targets(node: ast.Import | ast.ImportFrom, this: str, is_package: bool, known: set[str]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                found |= _with_parents(alias.name, known)
        return found
    base = node.module or ""
    if node.level:  # relative: from . import x / from .y import z
        anchor = this.split(".") if is_package else this.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    if base != PACKAGE and not base.startswith(PACKAGE + "."):
        return found
    found |= _with_parents(base, known)
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        if candidate in known:  # `from osbuilder import runner` imports the module osbuilder.runner
            found |= _with_parents(candidate, known)
    return found


def _data_files(tree: ast.Module) -> tuple[str, ...]:
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        if not any(isinstance(target, ast.Name) and target.id == DATA_FILES_NAME for target in targets):
            continue
        if isinstance(value, ast.Tuple | ast.List) and all(
                isinstance(item, ast.Constant) and isinstance(item.value, str) for item in value.elts):
            return tuple(str(item.value) for item in value.elts if isinstance(item, ast.Constant))
        raise ValueError(f"{DATA_FILES_NAME} must be a literal tuple of strings")
    return ()


class Graph:
    """The package's modules, each parsed when first asked for: a cache key needs only its step's
    closure, and parsing the whole package (generated protobuf modules included) costs more than
    a cache hit may take."""

    def __init__(self, package_dir: Path = PACKAGE_DIR, memo: Path | None = None) -> None:
        self.package_dir = package_dir
        paths = sorted(path for path in package_dir.rglob("*.py") if "__pycache__" not in path.parts)
        self.paths = {module_name(path, package_dir): path for path in paths}
        self.known = set(self.paths)
        self._parsed: dict[str, Module] = {}
        # What earlier runs read, by file identity; valid only for the same set of modules (an
        # import resolves to a module or to a package's attribute depending on what exists).
        self.memo = memo
        self._remembered: dict[str, Any] = {}
        self._changed = False
        if memo is not None:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(memo.read_text())
                if isinstance(data, dict) and data.get("modules") == sorted(self.known) and \
                        data.get("package") == str(package_dir):
                    self._remembered = dict(data.get("files") or {})

    def __contains__(self, name: str) -> bool:
        return name in self.paths

    def __getitem__(self, name: str) -> Module:
        if name not in self._parsed:
            self._parsed[name] = self._parse(name, self.paths[name])
        return self._parsed[name]

    def names(self) -> list[str]:
        return sorted(self.paths)

    def _parse(self, name: str, path: Path) -> Module:
        info = path.stat()
        identity = f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
        remembered = self._remembered.get(name)
        if isinstance(remembered, dict) and remembered.get("identity") == identity:
            with contextlib.suppress(KeyError, TypeError):
                return Module(name, path, frozenset(remembered["imports"]), frozenset(remembered["type_imports"]),
                              tuple(remembered["data_files"]), remembered["sha256"])
        module = self._read(name, path)
        self._remembered[name] = {"identity": identity, **module.to_json()}
        self._changed = True
        return module

    def save(self) -> None:
        """Keep what was read for the next run (the memo), if anything new was read."""
        if self.memo is None or not self._changed:
            return
        data = {"package": str(self.package_dir), "modules": sorted(self.known), "files": self._remembered}
        with contextlib.suppress(OSError):
            write_atomically(self.memo, (json.dumps(data, sort_keys=True) + "\n").encode())
        self._changed = False

    def _read(self, name: str, path: Path) -> Module:
        source = path.read_bytes()
        tree = ast.parse(source, filename=str(path))
        runtime: set[str] = set()
        typing_only: set[str] = set()
        for node, runs in _import_nodes(tree.body):
            (runtime if runs else typing_only).update(_targets(node, name, path.name == "__init__.py", self.known))
        runtime.discard(name)
        # A module's own packages run before it does.
        runtime |= _with_parents(name, self.known) - {name}
        return Module(name, path, frozenset(runtime), frozenset(typing_only - runtime - {name}), _data_files(tree),
                      hashlib.sha256(source).hexdigest())


@functools.cache
def _installed() -> Graph:
    return Graph(PACKAGE_DIR)


def closure(roots: Iterable[str], modules: Graph | None = None) -> list[str]:
    """The modules that run when the roots are imported (the roots included), sorted."""
    graph = modules if modules is not None else _installed()
    pending = list(roots)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name not in graph:
            raise KeyError(f"{name} is not a module of {PACKAGE}")
        seen.add(name)
        pending.extend(graph[name].imports - seen)
    return sorted(seen)


def code_inputs(*roots: str, modules: Graph | None = None,
                package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """path relative to the package -> sha256, for the closure of roots and its declared data files."""
    graph = modules if modules is not None else _installed()
    digests: dict[str, str] = {}
    for name in closure(roots, graph):
        module = graph[name]
        digests[module.path.relative_to(package_dir).as_posix()] = module.sha256
        for data in module.data_files:
            path = package_dir / data
            digests[data] = sha256_tree(path) if path.is_dir() else sha256_file(path)
    return digests


@functools.cache
def code_digest(*roots: str, memo: Path | None = None) -> str:
    """The code part of a cache key: one digest over code_inputs(roots). `memo` (in the cache
    directory) keeps what was read from each file by its identity, so a cache hit parses nothing."""
    if memo is None:
        return content_key(code_inputs(*roots))
    graph = Graph(PACKAGE_DIR, memo)
    try:
        return content_key(code_inputs(*roots, modules=graph))
    finally:
        graph.save()


def cycles(modules: Graph | None = None, include_type_imports: bool = True) -> list[list[str]]:
    """Import cycles (strongly connected components of more than one module, or a self-import)."""
    graph = modules if modules is not None else _installed()
    edges = {name: set(graph[name].imports | (graph[name].type_imports if include_type_imports else frozenset()))
             for name in graph.names()}
    # A package's __init__ runs before its modules: that edge is Python's, not a design choice.
    for name in edges:
        edges[name] = {target for target in edges[name] if not name.startswith(target + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:  # Tarjan's algorithm
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            connect(name)
    return found
