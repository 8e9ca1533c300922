"""A build killed outright (SIGKILL: an OOM kill, a CI timeout, `docker kill`) leaves nothing mounted on
the host and nothing large behind: the steps that mount run in a mount namespace of their own and
their process trees die with osbuilder (runner.run(contained=True)), and the next run sweeps the
staging entries of dead processes (osbuilder.staging).

For each of a root-mode and a rootless rootfs build, an image build and a boot: one full run
measures how long it takes, ten runs are SIGKILLed at random points of that time, and a last run
must succeed and leave no staging entry. After every kill, no mount of the host lists a staging
path, and no process of the killed run is left. The kill points are random but seeded (printed on
failure) so a failing run can be replayed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from osbuilder import staging
from tests.conftest import REPO, ROOTFS_SDE
from tests.helpers import rootless

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 10
SEED = int(os.environ.get("OSBUILDER_KILL_SEED", "20261130"))
NOBLE_AGENT = ("--distro", "ubuntu", "--os-version", "noble", "--agent-init")


@dataclass
class Killed:
    pids: list[int]  # osbuilder processes that were SIGKILLed


def _mount_points() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _staging_mounts(*places: Path) -> list[str]:
    """Mounts in the places of this test (other builds on the machine are not ours to judge)."""
    return [point for point in _mount_points() if any(point.startswith(f"{place}/") for place in places)]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, pending = set(), [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def _wait_until_gone(marker: str, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = _processes_mentioning(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _osbuilder_pid(process: subprocess.Popen[bytes]) -> int:
    """The osbuilder process itself (under runuser it is a child, not the process we started)."""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        for pid in sorted({process.pid} | _descendants(process.pid)):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if Path(argv[0].decode()).name.startswith("python") and argv[1:3] == [b"-m", b"osbuilder"]:
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no osbuilder process under {process.args}")


def _run_and_kill(argv: list[str], after: float, marker: str, places: list[Path],
                  env: dict[str, str] | None = None) -> int:
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OSBUILDER_NO_PROGRESS": "1", **(env or {})})
    target = _osbuilder_pid(process)  # the kill point counts from its start
    time.sleep(after)
    killed = process.poll() is None
    if killed:
        os.kill(target, signal.SIGKILL)
    process.wait(timeout=120)
    left = _wait_until_gone(marker)
    assert left == [], (f"processes of the killed run are left ({after:.2f} s in, osbuilder {target} "
                        f"{'killed' if killed else 'had finished'}, exit {process.returncode}): {left}")
    assert _staging_mounts(*places) == [], f"mounts left after a kill {after:.2f} s in"
    return target


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=3600,
                            env={**os.environ, "OSBUILDER_NO_PROGRESS": "1", **(env or {})})
    return time.monotonic() - started, result


def _entries_of(pids: list[int], *directories: Path) -> list[Path]:
    """Staging entries in the directories that belong to the killed processes."""
    return [child for directory in directories if directory.is_dir() for child in directory.iterdir()
            if staging.owner(child.name) in pids]


def _exercise(name: str, argv: Callable[[int], list[str]], marker: str, places: list[Path],
              directories: list[Path], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One full run to time it, RUNS runs killed at random points, then a run that must succeed and
    leave no staging entry of any killed run."""
    duration, first = _timed(argv(0), env)
    assert first.returncode == 0, f"{name}: the untouched run failed:\n{first.stderr[-3000:]}"
    generator = random.Random(f"{SEED}-{name}")
    killed = []
    for run in range(1, RUNS + 1):
        after = generator.uniform(0.05, 0.95) * duration
        killed.append(_run_and_kill(argv(run), after, marker, places, env))
    _, last = _timed(argv(RUNS + 1), env)
    assert last.returncode == 0, f"{name} after {RUNS} kills (seed {SEED}):\n{last.stderr[-3000:]}"
    assert _entries_of(killed, *directories) == [], f"{name}: staging entries of killed runs are left"
    assert _staging_mounts(*places) == []
    return last


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    # Not under pytest's tmp_path: the rootless user must reach it.
    path = Path(tempfile.mkdtemp(prefix="osbuilder-killed-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _osbuilder(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "osbuilder", *map(str, args)]


@pytest.mark.skipif(os.geteuid() != 0, reason="root mode is for root")
def test_killed_root_mode_rootfs_builds(place: Path, rootfs_cache: Path, test_agent: Path) -> None:
    out, temporary = place / "root", place / "root-tmp"
    out.mkdir()
    temporary.mkdir()
    # --no-cache: every run bootstraps (the package cache keeps them from downloading).
    args = [*NOBLE_AGENT, "--agent", str(test_agent), "--no-cache", "--force"]
    _exercise("root-mode rootfs", lambda run: _osbuilder("--cache-dir", rootfs_cache, "build-rootfs", *args,
                                                         "-o", out / "rootfs"),
              str(out), [out, rootfs_cache / "tmp"], [out, rootfs_cache / "tmp"],
              {"SOURCE_DATE_EPOCH": ROOTFS_SDE, "TMPDIR": str(temporary)})
    assert (out / "rootfs/sbin/init").is_file()
    # Nothing of the killed runs in the temporary directory either (mmdebstrap's own directory
    # included: it works in a staging entry there, which the next run sweeps).
    assert list(temporary.iterdir()) == []


def test_killed_rootless_rootfs_builds(place: Path, rootfs_cache: Path, test_agent: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test creates an unprivileged user: run it as root (CI does)")
    (place / "user").mkdir()
    try:
        user = rootless.prepare(place / "user")
    except LookupError as error:
        pytest.skip(str(error))
    cache, out, temporary = place / "user-cache", place / "rootless", place / "user-tmp"
    shutil.copytree(rootfs_cache / "apt-archives", cache / "apt-archives")  # start from the packages root has
    out.mkdir()
    agent = place / "kata-agent"
    shutil.copyfile(test_agent, agent)
    agent.chmod(0o755)
    rootless.give(cache, user)
    rootless.give(out, user)
    temporary.mkdir()
    rootless.give(temporary, user)
    args = [*NOBLE_AGENT, "--agent", str(agent), "--no-cache", "--force"]

    def argv(run: int) -> list[str]:
        variables = {"HOME": str(user.home), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                     "PYTHONPATH": user.pythonpath, "OSBUILDER_NO_PROGRESS": "1", "SOURCE_DATE_EPOCH": ROOTFS_SDE,
                     "TMPDIR": str(temporary)}
        return ["runuser", "-u", user.name, "--", "env", "-i", *(f"{k}={v}" for k, v in variables.items()),
                user.python, "-m", "osbuilder", "--cache-dir", str(cache), "build-rootfs", *args,
                "-o", str(out / "rootfs")]

    # The marker is the test's whole place: the killed run's supervisor and mmdebstrap (whose command
    # line names the cache, not the output) must be gone before the next run, or its sweep may race
    # with their teardown (the sweep then reports the entry and leaves it to a later run).
    last = _exercise("rootless rootfs", argv, str(place), [out, cache / "tmp"], [out, cache / "tmp"])
    listing = subprocess.run(["runuser", "-u", user.name, "--", "ls", "-A", str(out)], capture_output=True, text=True)
    assert listing.stdout.split() == ["rootfs"]
    # mmdebstrap's own directory of a killed unshare-mode run (a whole tree of subordinate ids)
    # is not left in the temporary directory: the next build sweeps it.
    swept = [line for line in last.stderr.splitlines() if "remove" in line]
    assert list(temporary.iterdir()) == [], swept


@pytest.fixture(scope="module")
def agent_rootfs(place: Path, rootfs_cache: Path, test_agent: Path) -> Path:
    output = place / "tree"
    result = subprocess.run(_osbuilder("--cache-dir", rootfs_cache, "build-rootfs", *NOBLE_AGENT, "--agent",
                                       test_agent, "-o", output), cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "SOURCE_DATE_EPOCH": ROOTFS_SDE, "OSBUILDER_NO_PROGRESS": "1"})
    assert result.returncode == 0, result.stderr
    return output


def test_killed_image_builds(place: Path, agent_rootfs: Path) -> None:
    out = place / "image"
    out.mkdir()
    _exercise("image", lambda run: _osbuilder("build-image", agent_rootfs, "--agent-init", "-o", out / "agent.img"),
              str(out), [out], [out])
    assert sorted(os.listdir(out)) == ["agent.img", "agent.img.cdx.json"]  # the image and its SBOM


def test_killed_boots(place: Path, agent_rootfs: Path, default_kernel: object) -> None:
    image = place / "boot.img"
    built = subprocess.run(_osbuilder("build-image", agent_rootfs, "--agent-init", "-o", image), cwd=REPO,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    kernel = default_kernel.vmlinux
    temporary = Path(tempfile.gettempdir())
    # The image's path marks this test's QEMU; the boot's socket directory is a staging entry in /tmp.
    _exercise("boot", lambda run: _osbuilder("boot", "--kernel", kernel, "--image", image, "--accel", "tcg",
                                             "--transport", "serial", "--timeout", "600"),
              str(image), [], [temporary])
    assert not [line for line in _processes_mentioning("qemu-system") if re.search(re.escape(str(image)), line)]
