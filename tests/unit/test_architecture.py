"""The shape of the package: no import cycle, each build step a package of one-job modules, every
data file hashed with the code that reads it, and DEVELOPERS.md's module table matching the tree."""

from __future__ import annotations

import re
from pathlib import Path

from osbuilder import codegraph
from osbuilder.recipes import BOOTSTRAP_TOOLS
from osbuilder.rootfs import bootstrappers
from tests.conftest import REPO

PACKAGE = REPO / "osbuilder"
STEPS = ("rootfs", "image", "initrd", "kernel", "boot", "bundle")
GENERATED = re.compile(r".*_pb2\.pyi?$")


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def test_the_import_graph_has_no_cycle() -> None:
    assert codegraph.cycles() == []  # type-checking imports included
    # The kernel command line is below both image and boot: neither imports the other for it.
    graph = codegraph.Graph(PACKAGE)
    assert not any(name.startswith("osbuilder.boot") for name in graph["osbuilder.image.layout"].imports)
    assert not any(name.startswith("osbuilder.image") for name in codegraph.closure(["osbuilder.kernelcmdline"]))


def test_the_graph_sees_imports_where_they_are() -> None:
    graph = codegraph.Graph(PACKAGE)
    image = graph["osbuilder.commands.build_image"]
    assert "osbuilder.image.builder" in image.imports  # imported inside run(): it runs
    boot = graph["osbuilder.commands.boot"]
    assert "osbuilder.boot.check" in boot.type_imports and "osbuilder.boot.check" not in boot.imports
    assert {"osbuilder", "osbuilder.rootfs", "osbuilder.rootfs.bootstrappers"} <= graph[
        "osbuilder.rootfs.bootstrappers.mmdebstrap"].imports  # the packages Python initialises first


def test_each_step_is_a_package_and_no_step_module_is_left_at_the_top() -> None:
    for step in STEPS:
        assert (PACKAGE / step / "__init__.py").is_file(), step
    for old in ("rootfs.py", "rootfs_tree.py", "provision.py", "bootstrap.py", "docker_backend.py", "rootfscheck.py",
                "rootfs_source.py", "agent_input.py"):
        assert not (PACKAGE / old).exists(), old
    # The rootfs package's __init__ imports nothing: the image builder's checks load only themselves.
    assert codegraph.closure(["osbuilder.rootfs.check"]) == sorted(
        {"osbuilder", "osbuilder.errors", "osbuilder.idmap", "osbuilder.rootfs", "osbuilder.rootfs.check",
         "osbuilder.tree", "osbuilder.userns", "osbuilder.runner", "osbuilder.hosttools"})


def test_every_bootstrap_tool_of_the_recipes_has_a_bootstrapper() -> None:
    assert sorted(BOOTSTRAP_TOOLS) == bootstrappers.tools()


def test_every_data_file_is_declared_by_the_module_that_reads_it() -> None:
    graph = codegraph.Graph(PACKAGE)
    declared = [data for name in graph.names() for data in graph[name].data_files]
    for data in declared:
        assert (PACKAGE / data).exists(), data
    data_files = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*")
                  if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
                  and path.name != "py.typed" and not GENERATED.match(path.name)]
    assert data_files
    for data in data_files:
        assert any(data == entry or data.startswith(entry.rstrip("/") + "/") for entry in declared), data


def _table_paths() -> list[str]:
    """The module paths named in DEVELOPERS.md's module table (a bare name continues the cell's
    previous directory: `osbuilder/image/mbr.py`, `pfn.py`)."""
    text = (REPO / "DEVELOPERS.md").read_text()
    section = text.split("## Pipeline and modules", 1)[1].split("\n## ", 1)[0]
    paths = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        directory = ""
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "/" in token:
                directory = token.rsplit("/", 1)[0]
                paths.append(token)
            else:
                paths.append(f"{directory}/{token}")
    return paths


def test_the_module_table_matches_the_tree() -> None:
    listed = _table_paths()
    patterns = []
    for entry in listed:
        if "<" in entry:
            directory = REPO / entry.split("<", 1)[0]
            assert directory.is_dir(), entry
            patterns.append(re.compile(re.escape(entry.split("<", 1)[0]) + r"[^/]+\.py$"))
        else:
            assert (REPO / entry).exists(), f"DEVELOPERS.md names {entry}, which does not exist"
    for module in _modules():
        relative = module.relative_to(REPO).as_posix()
        if module.name in ("__init__.py", "__main__.py") or GENERATED.match(module.name):
            continue
        assert relative in listed or any(pattern.match(relative) for pattern in patterns), \
            f"{relative} is not in DEVELOPERS.md's module table"
