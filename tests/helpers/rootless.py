"""Running osbuilder as an unprivileged user from a root test: the user (with subordinate ids), and a
copy of the code and its dependencies that the user can read (the test's checkout and virtual
environment may live under a directory only root can enter)."""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO
from tests.helpers.machine_state import ROOTLESS_TEST_USER

USER = ROOTLESS_TEST_USER
SUBID_COUNT = 65536
DEPENDENCIES = ("yaml", "jinja2", "markupsafe", "requests", "urllib3", "idna", "charset_normalizer", "certifi",
                "libarchive", "tqdm", "docker")


@dataclass(frozen=True)
class Rootless:
    name: str
    uid: int
    gid: int
    python: str
    pythonpath: str
    home: Path

    def run(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 3600
            ) -> subprocess.CompletedProcess[str]:
        variables = {"HOME": str(self.home), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                     "PYTHONPATH": self.pythonpath, "OSBUILDER_NO_PROGRESS": "1", **(env or {})}
        command = ["runuser", "-u", self.name, "--", "env", "-i", *(f"{k}={v}" for k, v in variables.items()),
                   *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd="/")

    def osbuilder(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([self.python, "-m", "osbuilder", *args], env=env)


def _ranges(path: Path) -> list[tuple[str, int, int]]:
    entries = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            entries.append((parts[0], int(parts[1]), int(parts[2])))
    return entries


def ensure_user() -> pwd.struct_passwd:
    """The test user, created once, with its own /etc/subuid and /etc/subgid ranges."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True, capture_output=True)
        entry = pwd.getpwnam(USER)
    for kind, path in (("uids", Path("/etc/subuid")), ("gids", Path("/etc/subgid"))):
        ranges = _ranges(path)
        if any(name in (USER, str(entry.pw_uid)) for name, _start, _count in ranges):
            continue
        start = max([100000, *(begin + count for _name, begin, count in ranges)])
        start = -(-start // SUBID_COUNT) * SUBID_COUNT
        subprocess.run(["usermod", f"--add-sub{kind}", f"{start}-{start + SUBID_COUNT - 1}", USER], check=True,
                       capture_output=True)
    return entry


def _accessible(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        mode = path.lstat().st_mode
        if not path.is_symlink():
            path.chmod(mode | 0o444 | (0o111 if path.is_dir() or mode & 0o100 else 0))


def prepare(workdir: Path) -> Rootless:
    """The user, plus a readable copy of osbuilder (with versions.yaml and distros/) and its
    dependencies under workdir, and an interpreter of this Python version the user may run."""
    entry = ensure_user()
    workdir.chmod(0o755)
    checkout = workdir / "checkout"
    shutil.copytree(REPO / "osbuilder", checkout / "osbuilder", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "distros", checkout / "distros")
    shutil.copyfile(REPO / "versions.yaml", checkout / "versions.yaml")
    site = workdir / "site"
    site.mkdir()
    for name in DEPENDENCIES:
        module = importlib.import_module(name)
        location = Path(module.__file__ or "").parent
        shutil.copytree(location, site / location.name, ignore=shutil.ignore_patterns("__pycache__"))
    _accessible(workdir)
    home = Path(entry.pw_dir)
    wanted = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [sys.executable, shutil.which("python3") or "", f"/usr/bin/python{wanted}"]
    for python in dict.fromkeys(candidate for candidate in candidates if candidate):
        user = Rootless(USER, entry.pw_uid, entry.pw_gid, python, f"{checkout}:{site}", home)
        probe = user.run([python, "-c", "import sys, osbuilder.cli, osbuilder.rootfs.build, docker; "
                          "print('%d.%d' % sys.version_info[:2])"])
        if probe.returncode == 0 and probe.stdout.strip() == wanted:
            return user
    raise LookupError(f"no Python {wanted} that user {USER} can run with the copied dependencies")


def give(path: Path, user: Rootless) -> None:
    os.chown(path, user.uid, user.gid)
    for child in path.rglob("*"):
        os.lchown(child, user.uid, user.gid)
