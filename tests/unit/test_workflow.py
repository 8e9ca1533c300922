"""The example release workflow lints clean: actionlint (its syntax, expressions, job graph and
shell scripts) and zizmor's security audit with no findings, both run from the virtual environment
(their wheels ship the binaries). A workflow with the faults the example once had must not pass:
the lint is not vacuous."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
BIN = Path(sys.executable).parent


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "actionlint", "-no-color", path], capture_output=True, text=True, timeout=120)


def _zizmor(path: Path) -> list[dict[str, object]]:
    # --offline: no GitHub API (the test machines cannot reach it); every offline audit runs.
    result = subprocess.run([BIN / "zizmor", "--offline", "--format", "json", "--persona", "auditor", path],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 10, 11, 12, 13, 14), result.stderr  # 1x: findings of some severity
    findings: list[dict[str, object]] = json.loads(result.stdout)
    return findings


def test_the_release_workflow_passes_actionlint() -> None:
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_release_workflow_has_no_zizmor_findings() -> None:
    findings = _zizmor(WORKFLOW)
    assert findings == [], [(finding.get("ident"), finding.get("desc")) for finding in findings]


@pytest.mark.parametrize(("fault", "audit"), [
    ("      - uses: actions/checkout@v4\n", "unpinned-uses"),
    ("      - run: echo ${{ github.event.head_commit.message }}\n", "template-injection"),
])
def test_the_linters_catch_what_the_example_once_had(tmp_path: Path, fault: str, audit: str) -> None:
    text = WORKFLOW.read_text()
    anchor = "      - name: Publish\n"
    assert anchor in text
    bad = tmp_path / "release.yml"
    bad.write_text(text.replace(anchor, fault + anchor))
    assert audit in {finding.get("ident") for finding in _zizmor(bad)}
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace("needs: boot-check", "needs: boot-checks"))
    assert _actionlint(broken).returncode != 0
