"""What a test run leaves on the machine outside its temporary directories, and how to forget it.

A fresh machine (CI) has none of it: the test users, the docker images the tests make and the
builder images osbuilder makes, containers a killed build left. Tests name these through this
module, and `make test-fresh` removes them first (`python -m tests.helpers.machine_state`) so the
suite runs as it would on a fresh machine. The osbuilder cache is the other piece of state; the
target points the suite at an empty cache directory instead of deleting the user's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Unprivileged users the tests create (tests/integration/test_unprivileged.py, tests/helpers/rootless.py).
SYSTEM_TEST_USER = "osbuilder-test"
ROOTLESS_TEST_USER = "osbuilder-rootless"
TEST_USERS = (SYSTEM_TEST_USER, ROOTLESS_TEST_USER)
# The base image tests/integration/test_rootfs_docker.py imports, and osbuilder's builder images.
TEST_BASE_REPOSITORY = "osbuilder-test-base"
IMAGE_REPOSITORIES = (TEST_BASE_REPOSITORY, "osbuilder-rootfs-builder")
CONTAINER_LABEL = "org.osbuilder.role"


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def forget_docker_state() -> list[str]:
    """Remove osbuilder's containers and the project's images; return what was removed."""
    if shutil.which("docker") is None or _docker("info").returncode != 0:
        return []
    removed = []
    containers = _docker("ps", "-aq", "--filter", f"label={CONTAINER_LABEL}").stdout.split()
    if containers:
        _docker("rm", "-f", *containers)
        removed += [f"container {container}" for container in containers]
    for repository in IMAGE_REPOSITORIES:
        images = _docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                         f"reference={repository}").stdout.split()
        for image in images:
            if _docker("rmi", "-f", image).returncode == 0:
                removed.append(f"image {image}")
    return removed


def forget_users() -> list[str]:
    """Delete the test users with their homes (and so their caches) and subordinate ids."""
    removed = []
    for user in TEST_USERS:
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            continue
        result = subprocess.run(["userdel", "--remove", user], capture_output=True, text=True)
        # userdel exits 12 when the home or mail spool was already missing: the user is gone anyway.
        if subprocess.run(["id", user], capture_output=True).returncode == 0:
            # A process of the user is still running (a test elsewhere): it is not ours to kill.
            raise SystemExit(f"cannot delete the test user {user}: {result.stderr.strip()}")
        removed.append(f"user {user}")
    return removed


def main() -> int:
    if os.geteuid() != 0:
        sys.stderr.write("machine_state: run as root (it deletes the test users and docker images)\n")
        return 2
    removed = forget_docker_state() + forget_users()
    sys.stdout.write("forgot: " + (", ".join(removed) if removed else "nothing (a fresh machine already)") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
