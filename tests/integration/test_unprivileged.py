"""Image and initrd builds by an unprivileged user who owns the tree (the caller becomes root).

The test runs as root: it creates an unprivileged user if needed, gives it a copy of a test tree
it owns, and runs osbuilder as that user with runuser. The results must equal what root builds
from a root-owned tree: the user's files appear as 0:0 in the guest.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.initrd.builder import InitrdOptions, build_initrd
from tests.helpers.machine_state import SYSTEM_TEST_USER
from tests.helpers.trees import EPOCH, make_rootfs

pytestmark = pytest.mark.integration

USER = SYSTEM_TEST_USER
REPO = Path(__file__).resolve().parents[2]


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


def _as_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *argv]


def _python_for_user() -> tuple[list[str], dict[str, str]]:
    """An interpreter the user may execute, with osbuilder importable: the venv's own when its
    base interpreter is readable (CI: /usr/bin/python3), else the system python3 with the venv's
    site-packages (a developer's pyenv under /root is not)."""
    environment = {"PYTHONPATH": str(REPO)}
    if subprocess.run(_as_user([sys.executable, "-c", "import osbuilder"]), capture_output=True,
                      env={**os.environ, **environment}).returncode == 0:
        return [sys.executable], environment
    system = shutil.which("python3", path="/usr/bin:/bin")
    site = sysconfig.get_paths()["purelib"]
    environment["PYTHONPATH"] = f"{REPO}:{site}"
    if system and subprocess.run(_as_user([system, "-c", "import osbuilder, libarchive, yaml"]), capture_output=True,
                                 env={**os.environ, **environment}).returncode == 0:
        return [system], environment
    pytest.fail(f"no Python interpreter that {USER} can run with osbuilder importable "
                f"(tried {sys.executable} and {system} with {site})")


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the test creates a user and drops privileges: run it as root (CI does)")
    user = _ensure_user()
    # Outside pytest's private tmp directory, which other users cannot enter.
    base = Path(tempfile.mkdtemp(prefix="osbuilder-unpriv-"))
    os.chmod(base, 0o755)
    try:
        reference = make_rootfs(base / "root-owned" / "rootfs")
        (reference / "etc/gshadow").write_bytes(b"root:*::\n")
        os.chmod(reference / "etc/gshadow", 0)  # unreadable even by its owner without privileges
        os.utime(reference / "etc/gshadow", (1_600_000_000, 1_600_000_000))
        os.utime(reference / "etc", (1_600_000_000, 1_600_000_000))
        owned = base / "user" / "rootfs"
        owned.parent.mkdir()
        subprocess.run(["cp", "-a", reference, owned], check=True)
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", owned.parent], check=True)
        for path in reference.rglob("*"):  # chown dropped the setuid bits: the user's tree keeps them
            if not path.is_symlink():
                os.chmod(owned / path.relative_to(reference), path.stat().st_mode & 0o7777)
        (base / "out").mkdir()
        (base / "cache").mkdir()
        subprocess.run(["chown", f"{user.pw_uid}:{user.pw_gid}", base / "out", base / "cache"], check=True)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_as_user(workspace: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    python, environment = _python_for_user()
    env = {**os.environ, **environment, "OSBUILDER_CACHE_DIR": str(workspace / "cache"), "HOME": str(workspace),
           "OSBUILDER_NO_PROGRESS": "1", "SOURCE_DATE_EPOCH": str(EPOCH)}
    return subprocess.run(_as_user([*python, "-m", "osbuilder", *map(str, args)]), capture_output=True, text=True,
                          env=env, cwd=workspace, timeout=600)


@pytest.mark.parametrize("fs_type", ["ext4", "erofs"])
def test_unprivileged_image_equals_the_root_build(workspace: Path, fs_type: str) -> None:
    output = workspace / "out" / f"user-{fs_type}.img"
    result = _run_as_user(workspace, "build-image", workspace / "user" / "rootfs", "-o", output, "--fs-type", fs_type,
                          "--measured")
    assert result.returncode == 0, result.stderr
    assert output.stat().st_uid == pwd.getpwnam(USER).pw_uid
    reference = workspace / f"root-{fs_type}.img"
    build_image(workspace / "root-owned" / "rootfs", ImageOptions(output=reference, fs_type=fs_type, measured=True,
                                                                   source_date_epoch=EPOCH,
                                                                   root_hash_file=workspace / f"root-{fs_type}.txt"))
    assert output.read_bytes() == reference.read_bytes()
    if fs_type == "ext4":
        device = f"{output}?offset={3 << 20}"
        stat = subprocess.run(["debugfs", "-R", "stat /etc/hostname", device], capture_output=True, text=True).stdout
        assert "User:     0   Group:     0" in stat
        content = subprocess.run(["debugfs", "-R", "cat /etc/gshadow", device], capture_output=True, text=True).stdout
        assert content == "root:*::\n"


def test_unprivileged_initrd_equals_the_root_build(workspace: Path) -> None:
    output = workspace / "out" / "user-initrd.img"
    result = _run_as_user(workspace, "build-initrd", workspace / "user" / "rootfs", "-o", output)
    assert result.returncode == 0, result.stderr
    reference = workspace / "root-initrd.img"
    build_initrd(workspace / "root-owned" / "rootfs", InitrdOptions(output=reference, source_date_epoch=EPOCH))
    assert output.read_bytes() == reference.read_bytes()
    raw = subprocess.run(["zstd", "-dc", output], capture_output=True, check=True).stdout
    listing = subprocess.run(["cpio", "-tv", "--numeric-uid-gid", "--quiet"], input=raw, capture_output=True,
                             check=True).stdout.decode().splitlines()
    owners = {tuple(line.split()[2:4]) for line in listing}
    assert owners == {("0", "0")}


def test_unprivileged_build_of_a_tree_it_cannot_read_is_bad_input(workspace: Path) -> None:
    output = workspace / "out" / "other.img"
    result = _run_as_user(workspace, "build-image", workspace / "root-owned" / "rootfs", "-o", output)
    assert result.returncode == 2, result.stderr
    assert "give a tree you own" in result.stderr
    assert not output.exists()
