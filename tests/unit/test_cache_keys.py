"""Cache keys follow the code a step really runs: the transitive closure of its imports inside
osbuilder/ (osbuilder.codegraph), plus its templates, as `osbuilder matrix` reports them from the
same planners the builds use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from osbuilder import codegraph
from tests.conftest import REPO, run_cli

STEPS = ("kernel", "image", "initrd")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what osbuilder reads from its checkout, to edit."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "osbuilder", copy / "osbuilder", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("distros", "kernel-configs", "agent"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("build", "__pycache__"))
    shutil.copyfile(REPO / "versions.yaml", copy / "versions.yaml")
    return copy


def _keys(checkout: Path, cache: Path) -> dict[str, str]:
    result = run_cli("--cache-dir", cache, "matrix", "--arch", "x86_64", "--json", cwd=checkout,
                     env={"PYTHONPATH": str(checkout)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["repository"] == str(checkout)  # the copy's code, not the repository's
    return {variant["id"]: variant["key"] for variant in json.loads(result.stdout)["include"]}


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {variant for variant in before if before[variant] != after[variant]}


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line)


def test_an_indirectly_imported_module_changes_its_steps_keys_only(checkout: Path, tmp_path: Path) -> None:
    builder = codegraph.Graph(checkout / "osbuilder")["osbuilder.rootfs.build"]
    # rootfs/check.py: run by the rootfs builder through provisioning, never imported by it directly.
    assert "osbuilder.rootfs.check" not in builder.imports
    assert "osbuilder.rootfs.check" in codegraph.closure(["osbuilder.rootfs.build"],
                                                       codegraph.Graph(checkout / "osbuilder"))
    before = _keys(checkout, tmp_path / "cache")
    _append(checkout / "osbuilder/rootfs/check.py", "# an edit\n")
    after = _keys(checkout, tmp_path / "cache")
    # Every variant built from a rootfs changed (and the bundles made of them); no kernel did.
    assert _changed(before, after) == {"image-x86_64-default", "image-x86_64-measured", "initrd-x86_64-default",
                                       "bundle-x86_64"}
    # A template is code too: the unit the agent runs under.
    _append(checkout / "osbuilder/rootfs/templates/kata-agent.service.j2", "# an edit\n")
    assert _changed(after, _keys(checkout, tmp_path / "cache")) >= {"image-x86_64-default", "initrd-x86_64-default"}


def test_a_module_only_the_kernel_reaches_changes_only_kernel_keys(checkout: Path, tmp_path: Path) -> None:
    # A helper that kernel/naming.py imports: the kernel builder reaches it only through other modules.
    package = checkout / "osbuilder"
    (package / "kernel/_probe.py").write_text('"""A module of the test."""\nVALUE = 1\n')
    _append(package / "kernel/naming.py", "\nfrom osbuilder.kernel import _probe  # noqa: E402,F401\n")
    graph = codegraph.Graph(package)
    assert "osbuilder.kernel._probe" not in graph["osbuilder.kernel.build"].imports
    assert "osbuilder.kernel._probe" in codegraph.closure(["osbuilder.kernel.build"], graph)
    before = _keys(checkout, tmp_path / "cache")
    (package / "kernel/_probe.py").write_text('"""A module of the test."""\nVALUE = 2\n')
    after = _keys(checkout, tmp_path / "cache")
    assert _changed(before, after) == {"kernel-x86_64-default", "kernel-x86_64-debug", "kernel-x86_64-confidential",
                                       "bundle-x86_64"}


def test_code_inputs_cover_the_closure_and_its_templates() -> None:
    inputs = codegraph.code_inputs("osbuilder.rootfs.build")
    assert "rootfs/check.py" in inputs and "rootfs/templates/kata-agent.service.j2" in inputs
    assert "rootfs/templates/Dockerfile.j2" in inputs  # the docker bootstrapper's builder image
    assert not any(path.startswith(("kernel/", "image/", "initrd/", "bundle/", "commands/")) for path in inputs)
    assert "kernel/source.py" in codegraph.code_inputs("osbuilder.kernel.build")
    assert not any(path.startswith("rootfs/") for path in codegraph.code_inputs("osbuilder.kernel.build"))


def test_the_memo_gives_the_same_digest_and_notices_edits(checkout: Path, tmp_path: Path) -> None:
    package = checkout / "osbuilder"
    memo = tmp_path / "code-graph.json"

    def digest(use_memo: bool) -> str:
        graph = codegraph.Graph(package, memo if use_memo else None)
        value = codegraph.content_key(codegraph.code_inputs("osbuilder.rootfs.build", modules=graph,
                                                            package_dir=package))
        graph.save()
        return value

    plain = digest(False)
    assert digest(True) == plain and memo.is_file()  # written
    assert digest(True) == plain  # read
    _append(package / "rootfs/check.py", "# an edit\n")
    assert digest(True) == digest(False) != plain
