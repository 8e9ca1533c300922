"""Boot checks under QEMU (TCG): the built assets boot and the reference agent answers.

The matrix: image + systemd, image + agent-as-init, initrd + agent-as-init, image over virtio-blk,
measured image (dm-verity through dm-mod.create). Then the negative cases, the fuzzing of the agent
through the client in a booted guest, and the guarantee that no QEMU outlives a check.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osbuilder.arch import host_arch
from osbuilder.boot.qemu import VmSpec, start_vm
from osbuilder.image.layout import read_layout
from osbuilder.image.superblock import probe
from osbuilder.kernelcmdline import RootSpec, kernel_params
from osbuilder.tree import resolve_in_root
from osbuilder.ttrpc.client import TtrpcClient, TtrpcError, encode_frame
from tests.conftest import REPO, BuiltRootfs, run_cli
from tests.helpers.assets import BootAssets, MeasuredImage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMINGS = ("kernel_started", "root_mounted", "agent_ready", "powered_off")


def _boot(kernel: Path, *args: str | os.PathLike[str], timeout: float = 240,
          wait: float | None = None) -> tuple[int, dict[str, object]]:
    """Boot with the virtio-serial channel (whatever the host has) and TCG. `wait` bounds the whole
    command, for failures that must be reported at once rather than at the --timeout deadline."""
    result = run_cli("boot", "--kernel", kernel, "--accel", "tcg", "--transport", "serial", "--timeout", str(timeout),
                     "--json", *args, timeout=wait if wait is not None else timeout + 60)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _assert_served(report: dict[str, object], version: str) -> None:
    assert report["ok"] is True, report.get("error")
    agent = report["agent"]
    assert isinstance(agent, dict)
    assert agent["status"] == "SERVING"
    assert agent["version"] == version
    details = report["guest_details"]
    assert isinstance(details, dict) and details["agent_version"] == version
    timings = report["timings"]
    assert isinstance(timings, dict)
    assert all(isinstance(timings[key], float) for key in TIMINGS), timings
    assert timings["kernel_started"] <= timings["agent_ready"] <= timings["powered_off"]
    assert report["transport"] == "serial"


def _guest_messages(report: dict[str, object]) -> list[str]:
    """The console tail without the lines that repeat the kernel command line."""
    tail = report["console_tail"]
    assert isinstance(tail, list)
    return [line for line in tail if "command line" not in line.lower()]


def test_image_with_systemd_dax(assets: BootAssets) -> None:
    code, report = _boot(assets.kernel, "--image", assets.systemd_image, "--expect-agent-version", assets.agent_version)
    assert code == 0
    _assert_served(report, assets.agent_version)
    root = report["root"]
    assert isinstance(root, dict) and root["device"] == "/dev/pmem0p1" and root["fstype"] == "ext4"
    assert report["dax"] is True
    # Under systemd the agent is a service, not PID 1.
    assert report["guest_details"]["init_daemon"] is False  # type: ignore[index]


def test_image_agent_as_init_dax(assets: BootAssets) -> None:
    code, report = _boot(assets.kernel, "--image", assets.agent_image)
    assert code == 0
    _assert_served(report, assets.agent_version)
    assert report["dax"] is True
    assert report["guest_details"]["init_daemon"] is True  # type: ignore[index]


def test_initrd_agent_as_init(assets: BootAssets) -> None:
    code, report = _boot(assets.kernel, "--initrd", assets.agent_initrd)
    assert code == 0
    _assert_served(report, assets.agent_version)
    assert report["dax"] is None
    root = report["root"]
    assert isinstance(root, dict) and set(root) == {"device", "fstype", "options"}
    assert (root["device"], root["fstype"]) == ("rootfs", "rootfs") and root["options"]


def test_image_over_virtio_blk(assets: BootAssets) -> None:
    code, report = _boot(assets.kernel, "--image", assets.agent_image, "--no-dax")
    assert code == 0
    _assert_served(report, assets.agent_version)
    assert report["dax"] is None
    assert report["root"]["device"] == "/dev/vda1"  # type: ignore[index]
    assert "dax" not in report["root"]["options"]  # type: ignore[index]


def test_measured_image_through_dm_mod_create(assets: BootAssets) -> None:
    measured: MeasuredImage = assets.measured_image
    code, report = _boot(assets.kernel, "--image", measured.image, "--verity", measured.root_hash_file)
    assert code == 0
    _assert_served(report, assets.agent_version)
    assert "dm-mod.create=" in str(report["cmdline"])
    assert report["root"]["device"] == "/dev/dm-0"  # type: ignore[index]


def test_measured_image_with_a_wrong_root_hash_does_not_boot(assets: BootAssets, tmp_path: Path) -> None:
    measured = assets.measured_image
    line = measured.root_hash_file.read_text().strip()
    root_hash = line.split("root_hash=", 1)[1].split(",", 1)[0]
    wrong = tmp_path / "root_hash.txt"
    wrong.write_text(line.replace(root_hash, "1" * 64) + "\n")
    code, report = _boot(assets.kernel, "--image", measured.image, "--verity", wrong, timeout=120)
    assert code == 1
    assert report["ok"] is False
    # Not the kernel's echo of its command line (it names dm-verity whatever happens): the failure.
    assert any("verity" in line.lower() for line in _guest_messages(report))


def _flip_first_block_of_init(image: Path, rootfs: Path) -> int:
    """Flip one byte in the first data block of the image's /sbin/init (as the rootfs tree resolves
    it); the block number in the filesystem, which is the data device's block number for dm-verity."""
    layout = read_layout(image)
    info = probe(image, layout.root.offset)
    assert info is not None and info.fs_type == "ext4"
    resolved = resolve_in_root(rootfs, "sbin/init")
    assert resolved is not None
    bmap = subprocess.run(["debugfs", "-R", f"bmap /{resolved[0]} 0", f"{image}?offset={layout.root.offset}"],
                          capture_output=True, text=True, check=True)
    block = int(bmap.stdout.split()[-1])
    offset = layout.root.offset + block * info.block_size + 100
    with image.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return block


def test_a_corrupt_block_of_a_measured_image_is_named_at_once(assets: BootAssets, noble_rootfs: BuiltRootfs,
                                                               tmp_path: Path) -> None:
    image = tmp_path / "measured-flipped.img"
    shutil.copyfile(assets.measured_image.image, image)
    block = _flip_first_block_of_init(image, noble_rootfs.path)
    # A deadline far away, a command bound well before it: the failure must be reported when the
    # guest stops, not when the deadline passes.
    code, report = _boot(assets.kernel, "--image", image, "--verity", assets.measured_image.root_hash_file,
                         timeout=900, wait=300)
    assert code == 1 and report["ok"] is False
    error = str(report["error"])
    assert f"data block {block} of " in error and "is corrupted" in error, error
    assert "the guest stopped before the agent answered" in error
    assert "/sbin/init could not be executed" in error


def test_an_init_that_cannot_run_is_named_at_once(assets: BootAssets) -> None:
    code, report = _boot(assets.kernel, "--image", assets.agent_image, "--kernel-params", "init=/no/such/init",
                         timeout=900, wait=300)
    assert code == 1
    assert "init /no/such/init could not be executed (error -2, ENOENT)" in str(report["error"]), report["error"]


def test_image_without_pfn_block_is_refused_for_dax(assets: BootAssets) -> None:
    code, report = _boot(assets.kernel, "--image", assets.no_dax_header_image, timeout=120)
    assert code == 1
    assert report["ok"] is False and report["error"]
    console = "\n".join(_guest_messages(report))
    assert "dax" in console.lower(), console


def test_wrong_expected_agent_version(assets: BootAssets) -> None:
    code, report = _boot(assets.kernel, "--initrd", assets.agent_initrd, "--expect-agent-version", "0.0.0-nope")
    assert code == 1
    assert "0.0.0-nope" in str(report["error"]) and assets.agent_version in str(report["error"])
    assert report["console_tail"], "a failed check reports the console"


def test_kernel_without_the_agent_transport_times_out(assets: BootAssets) -> None:
    code, report = _boot(assets.no_transport_kernel, "--initrd", assets.agent_initrd, timeout=25)
    assert code == 1
    assert "did not answer" in str(report["error"])
    console = "\n".join(report["console_tail"])  # type: ignore[arg-type]
    assert "osbuilder-agent" in console  # the agent ran, but had no channel to serve on


def test_text_report_and_console_log(assets: BootAssets, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    result = run_cli("boot", "--kernel", assets.kernel, "--initrd", assets.agent_initrd, "--accel", "tcg",
                     "--transport", "serial", "--console-log", log, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   check: Health/Check returned SERVING" in result.stdout
    assert "osbuilder-agent: version=" in log.read_text(errors="replace")


def test_agent_survives_malformed_and_random_frames(assets: BootAssets, tmp_path: Path) -> None:
    """Fuzz the agent in a booted guest through the client: it keeps serving."""
    arch = host_arch()
    socket_path = tmp_path / "agent.sock"
    spec = VmSpec(arch=arch, kernel=assets.kernel, initrd=assets.agent_initrd, accel="tcg",
                  cmdline=kernel_params(RootSpec("initrd")), agent_socket=socket_path)
    vm = start_vm(spec)
    rng = random.Random(20261128)
    try:
        client = _connect_serving(socket_path, vm.started + 120)
        client.close()
        for round_number in range(8):
            client = TtrpcClient.connect_unix(str(socket_path), timeout=5)
            try:
                if round_number % 2:
                    client.send_raw(rng.randbytes(rng.randint(1, 300)), timeout=5)
                else:
                    body = rng.randbytes(rng.randint(0, 64))
                    client.send_raw(encode_frame(rng.choice([1, 3, 2, 5]), rng.choice([1, 2, 7]), body), timeout=5)
                    with_garbage_len = (rng.randint(5 << 20, 1 << 31)).to_bytes(4, "big") + bytes(6)
                    client.send_raw(with_garbage_len, timeout=5)
            except (OSError, TtrpcError):
                pass
            finally:
                client.close()
            time.sleep(0.5)  # the agent resynchronises after 200 ms of silence on the serial line
        survivor = _connect_serving(socket_path, time.monotonic() + 60)
        version = survivor.version(timeout=10)
        assert version.agent_version == assets.agent_version
        survivor.destroy_sandbox(timeout=10)
        survivor.close()
        assert vm.wait_exit(60) is not None, "the guest did not power off after DestroySandbox"
    finally:
        vm.stop()


def _connect_serving(socket_path: Path, deadline: float) -> TtrpcClient:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = TtrpcClient.connect_unix(str(socket_path), timeout=5)
        except OSError as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            if client.is_serving(timeout=3):
                return client
        except TtrpcError as exc:
            last = exc
        client.close()
        time.sleep(0.5)
    raise AssertionError(f"the agent did not come back: {last}")


def _qemu_processes(asset: Path) -> list[int]:
    """QEMU processes booting this session's asset: boots elsewhere on the machine (other sessions,
    other checkouts) are not this test's to count."""
    result = subprocess.run(["pgrep", "-f", f"qemu-system.*{re.escape(str(asset))}"], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def test_twenty_runs_with_forced_timeouts_leave_no_qemu(assets: BootAssets) -> None:
    before = set(_qemu_processes(assets.agent_initrd))
    outcomes = []
    for run in range(20):
        forced = run % 2 == 0
        code, report = _boot(assets.kernel, "--initrd", assets.agent_initrd, timeout=0.7 if forced else 120)
        outcomes.append((forced, code, report["ok"]))
        assert set(_qemu_processes(assets.agent_initrd)) <= before, f"QEMU left behind after run {run}"
    assert all(code == 1 and not ok for forced, code, ok in outcomes if forced)
    assert all(code == 0 and ok for forced, code, ok in outcomes if not forced)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_qemu_after_the_caller_is_interrupted_or_killed(assets: BootAssets, sig: signal.Signals) -> None:
    before = set(_qemu_processes(assets.systemd_image))
    process = subprocess.Popen([sys.executable, "-m", "osbuilder", "boot", "--kernel", str(assets.kernel), "--image",
                                str(assets.systemd_image), "--accel", "tcg", "--transport", "serial", "--timeout",
                                "300"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if set(_qemu_processes(assets.systemd_image)) - before:
                break
            time.sleep(0.1)
        assert set(_qemu_processes(assets.systemd_image)) - before, "QEMU did not start"
        time.sleep(1)
        process.send_signal(sig)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    for _ in range(100):
        if not set(_qemu_processes(assets.systemd_image)) - before:
            break
        time.sleep(0.1)
    assert not set(_qemu_processes(assets.systemd_image)) - before, f"QEMU outlived osbuilder after {sig.name}"
