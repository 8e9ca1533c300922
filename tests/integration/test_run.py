"""`osbuilder run` end to end under QEMU (TCG, virtio-serial): the architecture's example on every kind
of asset, the container environment against the host's `runc run` of the same bundle, exit statuses,
streams and stdin, the timeout and the signals, and after every case nothing left behind.

Most cases boot the agent-as-init DAX image (the fastest); the example also runs on the systemd DAX
image and on the initrd, and once over 9p.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli
from tests.helpers.assets import BootAssets
from tests.helpers.bundle import Built
from tests.helpers.containers import (  # noqa: F401  (run_dir_fixture: a fixture)
    EXAMPLE,
    leftovers,
    oci_bundle,
    run_dir_fixture,
    runc_run,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = ("--transport", "serial", "--accel", "tcg", "--boot-timeout", "240")
TIMINGS = ("agent_ready", "container_created", "container_started", "exited", "powered_off")


def _run(run_dir: Path, *args: str | os.PathLike[str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return run_cli("run", *BASE, *args, env={"OSBUILDER_RUN_DIR": str(run_dir)}, timeout=timeout)


def _run_json(run_dir: Path, *args: str | os.PathLike[str]) -> tuple[int, dict[str, Any]]:
    result = _run(run_dir, "--json", *args)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _assert_complete(report: dict[str, Any], shared_fs: str = "virtio-fs") -> None:
    assert report["ok"] is True, report.get("error")
    assert report["error"] is None
    assert report["shared_fs"] == shared_fs and report["transport"] == "serial"
    assert report["agent"]["version"]
    timings = report["timings"]
    assert all(isinstance(timings[key], float) for key in TIMINGS), timings
    assert [timings[key] for key in TIMINGS] == sorted(timings[key] for key in TIMINGS)


def _reference(tmp_path: Path, root: Path, args: tuple[str, ...] | list[str]) -> subprocess.CompletedProcess[bytes]:
    reference = runc_run(oci_bundle(tmp_path / "reference", root, args))
    assert reference.returncode in (0, 1), reference.stderr  # the command's own status, not runc's failure
    return reference


# --- the example ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["agent-image", "systemd-image", "initrd"])
def test_the_example_runs_on_every_kind_of_asset(kind: str, assets: BootAssets, container_rootfs: Path,
                                                  run_dir: Path, tmp_path: Path) -> None:
    asset = {"agent-image": ("--image", assets.agent_image), "systemd-image": ("--image", assets.systemd_image),
             "initrd": ("--initrd", assets.agent_initrd)}[kind]
    code, report = _run_json(run_dir, "--kernel", assets.kernel, *asset, "--rootfs", container_rootfs, "--", *EXAMPLE)
    _assert_complete(report)
    assert report["stdout"].startswith("hello from the container\n")
    reference = _reference(tmp_path, container_rootfs, EXAMPLE)
    assert (code, report["exit_status"]) == (reference.returncode, reference.returncode)
    assert report["stdout"] == reference.stdout.decode() and report["stderr"] == reference.stderr.decode()
    # The architecture's example: an Ubuntu noble container, its os-release printed whole.
    os_release = (container_rootfs / "etc" / "os-release").read_text()
    assert report["stdout"] == "hello from the container\n" + os_release
    assert "VERSION_CODENAME=noble" in os_release.splitlines()
    if kind == "initrd":
        assert report["kind"] == "initrd" and report["dax"] is None
    else:
        assert report["root"]["device"] == "/dev/pmem0p1" and report["dax"] is True


def test_the_example_runs_over_9p(assets: BootAssets, container_rootfs: Path, run_dir: Path) -> None:
    _code, report = _run_json(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--shared-fs",
                             "virtio-9p", "--rootfs", container_rootfs, "--", *EXAMPLE)
    _assert_complete(report, "virtio-9p")
    assert report["virtiofsd"] is None
    assert report["stdout"].startswith("hello from the container\n")


# --- the container environment equals runc's ---------------------------------------------------------------------

ENVIRONMENT = ("hostname; echo ==; echo $$; echo ==; ls /dev; echo ==; grep -E '^(Cap|NoNewPrivs)' /proc/self/status;"
               " echo ==; cat /proc/self/mountinfo")


def _mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount but /sys/fs/cgroup and below (cgroup v1 on the host, v2 in
    the guest); the root's line is normalised (its source and type are the host's disk or the share)."""
    mounts = []
    for line in mountinfo.splitlines():
        fields = line.split()
        mount_point, fstype = fields[4], fields[fields.index("-") + 1]
        if mount_point == "/sys/fs/cgroup" or mount_point.startswith("/sys/fs/cgroup/"):
            continue
        mounts.append((mount_point, "(root)" if mount_point == "/" else fstype))
    return sorted(mounts)


def _sections(output: str) -> list[str]:
    return output.split("==\n")


def test_the_environment_equals_runc_run_of_the_same_bundle(assets: BootAssets, container_rootfs: Path,
                                                            run_dir: Path, tmp_path: Path) -> None:
    bundle = oci_bundle(tmp_path / "bundle", container_rootfs, ["sh", "-c", ENVIRONMENT])
    reference = runc_run(bundle)
    assert reference.returncode == 0, reference.stderr
    code, report = _run_json(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--oci-bundle", bundle)
    _assert_complete(report)
    assert code == 0 and report["stderr"] == ""
    guest, host = _sections(report["stdout"]), _sections(reference.stdout.decode())
    assert len(guest) == len(host) == 5, report["stdout"]
    assert guest[0] == host[0] == "runc\n"  # the spec's hostname
    assert guest[1] == host[1] == "1\n"  # the workload is PID 1 of its namespace
    assert guest[2] == host[2]  # /dev: the default devices and links
    assert guest[3] == host[3]  # the capability sets and NoNewPrivs
    assert _mounts(guest[4]) == _mounts(host[4])


# --- exit statuses, streams, stdin --------------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "status"), [
    ("exit 42", 42),
    # A process killed by SIGTERM (143), its status passed on by the container's init.
    ("sh -c 'kill -TERM $$'; exit $?", 143),
    # The workload is PID 1 of its namespace: the kernel drops a SIGTERM it sends itself without a
    # handler, as under runc (where this exits 0 too).
    ("kill -TERM $$", 0),
])
def test_the_exit_status_is_the_workloads(command: str, status: int, assets: BootAssets, container_rootfs: Path,
                                          run_dir: Path) -> None:
    code, report = _run_json(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image,
                             "--rootfs", container_rootfs, "--", "sh", "-c", command)
    _assert_complete(report)
    assert code == status and report["exit_status"] == status


def test_stdout_and_stderr_arrive_apart_and_a_mebibyte_intact(assets: BootAssets, container_rootfs: Path,
                                                               run_dir: Path) -> None:
    script = "echo to-out; echo to-err >&2; yes 0123456789abcdef | head -c 1048576; echo done >&2"
    result = subprocess.run([sys.executable, "-m", "osbuilder", "run", *BASE, "--kernel", str(assets.kernel),
                             "--image", str(assets.agent_image), "--rootfs", str(container_rootfs), "--",
                             "sh", "-c", script], cwd=REPO, capture_output=True, timeout=400,
                            env={**os.environ, "OSBUILDER_RUN_DIR": str(run_dir)})
    assert result.returncode == 0, result.stderr
    payload = (b"0123456789abcdef\n" * (1048576 // 17 + 1))[:1048576]
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(b"to-out\n" + payload).hexdigest()
    assert result.stderr == b"to-err\ndone\n"  # osbuilder itself says nothing on a success


def test_stdin_reaches_the_workload(assets: BootAssets, container_rootfs: Path, run_dir: Path, tmp_path: Path) -> None:
    data = os.urandom(300 * 1024)
    source = tmp_path / "input.bin"
    source.write_bytes(data)
    common = [sys.executable, "-m", "osbuilder", "run", *BASE, "--kernel", str(assets.kernel), "--image",
              str(assets.agent_image), "--rootfs", str(container_rootfs)]
    env = {**os.environ, "OSBUILDER_RUN_DIR": str(run_dir)}
    from_file = subprocess.run([*common, "--stdin", str(source), "--", "cat"], cwd=REPO, capture_output=True,
                               timeout=400, env=env)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == data
    interactive = subprocess.run([*common, "-i", "--", "sh", "-c", "read line; echo got: $line"], cwd=REPO,
                                 input=b"hello through stdin\n", capture_output=True, timeout=400, env=env)
    assert interactive.returncode == 0, interactive.stderr
    assert interactive.stdout == b"got: hello through stdin\n"
    # Without --stdin the workload reads end-of-file at once (it does not hang).
    code, report = _run_json(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--rootfs",
                             container_rootfs, "--", "sh", "-c", "cat; echo eof")
    assert code == 0 and report["stdout"] == "eof\n"


# --- bad input ---------------------------------------------------------------------------------------------------


def test_a_command_that_does_not_exist_is_a_clear_error(assets: BootAssets, container_rootfs: Path,
                                                        run_dir: Path) -> None:
    code, report = _run_json(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--rootfs",
                             container_rootfs, "--", "/no/such/command")
    assert code in (1, 2), report
    assert report["ok"] is False and "/no/such/command" in report["error"]
    assert re.search(r"CreateContainer|StartContainer", report["error"])
    assert isinstance(report["timings"]["powered_off"], float)  # torn down in order all the same


def test_bad_input_is_refused_before_anything_starts(assets: BootAssets, container_rootfs: Path, run_dir: Path,
                                                     tmp_path: Path) -> None:
    bundle = oci_bundle(tmp_path / "bad", container_rootfs, ["true"], edit=lambda spec: spec["process"].update(
        args=[]))
    empty = _run(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--oci-bundle", bundle)
    assert empty.returncode == 2 and "process.args" in empty.stderr and "no command to run" in empty.stderr
    missing = _run(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--rootfs",
                   tmp_path / "no-root", "--", "true")
    assert missing.returncode == 2 and "no-root" in missing.stderr
    malformed = oci_bundle(tmp_path / "malformed", container_rootfs, ["true"],
                           edit=lambda spec: spec["linux"]["resources"].update(memory={"limit": "lots"}))
    bad = _run(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--oci-bundle", malformed)
    assert bad.returncode == 2 and "linux.resources.memory.limit" in bad.stderr


# --- timeout and signals ------------------------------------------------------------------------------------------


def test_timeout_kills_removes_and_tears_down(assets: BootAssets, container_rootfs: Path, run_dir: Path) -> None:
    code, report = _run_json(run_dir, "--kernel", assets.kernel, "--image", assets.agent_image, "--rootfs",
                             container_rootfs, "--timeout", "30", "--", "sleep", "1000")
    assert code == 137 and report["exit_status"] == 137
    assert report["timed_out"] is True and report["ok"] is False and "--timeout 30" in report["error"]
    assert isinstance(report["timings"]["powered_off"], float)


TRAPPING = "trap 'echo got TERM; exit 7' TERM; echo started; while :; do sleep 1; done"


def _start_run(assets: BootAssets, root: Path, run_dir: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "osbuilder", "run", *BASE, "--kernel", str(assets.kernel),
                                "--image", str(assets.agent_image), "--rootfs", str(root), "--", "sh", "-c",
                                TRAPPING], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "OSBUILDER_RUN_DIR": str(run_dir)})
    assert process.stdout is not None
    line = process.stdout.readline()  # the workload runs
    assert line == b"started\n", process.stderr.read() if process.stderr else b""
    return process


def _wait_for_nothing_left(run_dir: Path, seconds: float = 20) -> list[str]:
    deadline = time.monotonic() + seconds
    while (remaining := leftovers(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return remaining


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_run_signals_the_workload_and_tears_down(sig: signal.Signals, code: int, assets: BootAssets,
                                                                 container_rootfs: Path, run_dir: Path) -> None:
    process = _start_run(assets, container_rootfs, run_dir)
    assert leftovers(run_dir), "the leftover check sees a running sandbox"  # the check can fail
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert stdout == b"got TERM\n"  # SignalProcess reached the workload, its output was drained
    assert not _wait_for_nothing_left(run_dir, 5)


def test_a_killed_osbuilder_leaves_nothing(assets: BootAssets, container_rootfs: Path, run_dir: Path) -> None:
    process = _start_run(assets, container_rootfs, run_dir)
    process.kill()
    process.communicate(timeout=30)
    remaining = _wait_for_nothing_left(run_dir)
    assert not remaining, remaining


# --- the bundle's own configuration ---------------------------------------------------------------------------


def test_run_bundle_uses_its_configuration(release_bundle: Built, assets: BootAssets, container_rootfs: Path,
                                           run_dir: Path) -> None:
    """The session's release bundle (tests/helpers/bundle.py), run with its configuration-qemu.toml."""
    _code, report = _run_json(run_dir, "--bundle", release_bundle.tarball, "--rootfs", container_rootfs, "--",
                              *EXAMPLE)
    _assert_complete(report)
    assert report["agent"]["version"] == assets.agent_version
    assert report["dax"] is True  # configuration-qemu.toml: the image as an NVDIMM
    assert report["stdout"].startswith("hello from the container\n")
