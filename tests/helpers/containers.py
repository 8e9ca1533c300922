"""Containers for the run tests: a container root from the pipeline, OCI bundles made by the host's
`runc spec`, the same bundle run by the host's `runc run` (the reference environment), and the check
that a sandbox left nothing behind.

The container root is the architecture's example, an Ubuntu noble container root made by
`osbuilder build-rootfs --container` (cached like every rootfs): the distribution's minimal base, no
agent, no init.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import build_rootfs

CONTAINER_ROOTFS: tuple[str, ...] = ("--distro", "ubuntu", "--os-version", "noble", "--container")

EXAMPLE = ("sh", "-c", "echo hello from the container; cat /etc/os-release")


@pytest.fixture(scope="session")
def container_rootfs(tmp_path_factory: pytest.TempPathFactory, rootfs_cache: Path) -> Path:
    output = tmp_path_factory.mktemp("container") / "rootfs"
    result = build_rootfs(rootfs_cache, output, *CONTAINER_ROOTFS)
    assert result.returncode == 0, result.stderr
    assert (output / "bin" / "sh").exists(), "the container root has no shell"
    return output


def runc() -> str:
    found = shutil.which("runc")
    if found is None:
        pytest.fail("runc is missing: make deps installs docker.io, which brings it (the reference environment)")
    return found


def oci_bundle(directory: Path, root: Path, args: tuple[str, ...] | list[str],
               edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A bundle made the way a user makes one: `runc spec`, then no terminal, the command, the root."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").unlink(missing_ok=True)
    subprocess.run([runc(), "spec"], cwd=directory, check=True)
    spec = json.loads((directory / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["root"]["path"] = str(root)
    if edit is not None:
        edit(spec)
    (directory / "config.json").write_text(json.dumps(spec, indent=1))
    return directory


def runc_run(bundle: Path, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """The same bundle in a host container: what the guest's container environment must equal."""
    container_id = f"osb-ref-{uuid.uuid4().hex[:12]}"
    try:
        return subprocess.run([runc(), "run", "--bundle", str(bundle), container_id], input=stdin,
                              capture_output=True, timeout=timeout)
    finally:
        subprocess.run([runc(), "delete", "--force", container_id], capture_output=True)


# --- nothing left behind -------------------------------------------------------------------------------------


def _namespace_members(run_dir: Path) -> list[str]:
    """Processes whose mount namespace has a sandbox tmpfs at run_dir (the holder, QEMU, virtiofsd)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            mountinfo = (entry / "mountinfo").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(line.split()[4] == str(run_dir) for line in mountinfo.splitlines()):
            found.append(f"{entry.name}: {command}")
    return found


def leftovers(run_dir: Path) -> list[str]:
    """What a finished sandbox must not leave: processes in its namespace, QEMU or virtiofsd of it,
    host mounts under the run directory, files in it."""
    problems = [f"process in a sandbox namespace: {member}" for member in _namespace_members(run_dir)]
    problems += [f"host mount: {line}" for line in Path("/proc/mounts").read_text().splitlines()
                 if str(run_dir) in line]
    listing = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True)
    problems += [f"process: {line}" for line in listing.stdout.splitlines() if "pgrep" not in line]
    if run_dir.exists():
        problems += [f"left in {run_dir}: {path}" for path in sorted(run_dir.rglob("*"))]
    return problems


@pytest.fixture(name="run_dir")
def run_dir_fixture() -> Iterator[Path]:
    """A run directory of the test's own (OSBUILDER_RUN_DIR): the leftover check sees only its
    sandboxes; after the test, nothing of them may remain."""
    path = Path("/run") / f"osbuilder-test-{uuid.uuid4().hex[:8]}"
    yield path
    remaining = leftovers(path)
    if path.exists():
        os.rmdir(path)
    assert not remaining, "the sandbox left things behind:\n" + "\n".join(remaining)
