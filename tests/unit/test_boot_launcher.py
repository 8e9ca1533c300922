"""The launcher's checks before it starts (assets that are not what they claim to be, bad bundles),
its choices (accelerator, transport: both answers by injected probes), the causes it reads from a
failed guest's console, and the QEMU devices of a shared directory."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from osbuilder.arch import Arch, host_arch
from osbuilder.boot import diagnose
from osbuilder.boot.accel import KvmProbe, choose_accel
from osbuilder.boot.preflight import check_image, check_initrd, check_kernel
from osbuilder.boot.qemu import ConsoleLine, SharedFs, VmSpec, qemu_argv
from osbuilder.boot.runtimeconfig import read_runtime_config
from osbuilder.boot.transport import choose_transport
from osbuilder.cache import Cache
from osbuilder.errors import ConfigError, UsageError
from osbuilder.sandbox import virtiofsd
from tests.conftest import run_cli

# --- checks before anything starts ---------------------------------------------------------------


def test_text_files_are_not_a_kernel_or_an_image() -> None:
    with pytest.raises(UsageError) as kernel:
        check_kernel(Path("/etc/passwd"))
    assert kernel.value.exit_code == 2 and kernel.value.where == "--kernel /etc/passwd"
    assert "is not a guest kernel: it is a text file" in kernel.value.problem
    assert "root:" in kernel.value.problem  # what it starts with: the user can recognise it
    with pytest.raises(UsageError) as image:
        check_image(Path("/etc/hosts"))
    assert image.value.where == "--image /etc/hosts" and "is not a Kata rootfs image" in image.value.problem
    assert "a text file" in image.value.problem


def test_a_program_is_not_a_kernel_and_an_empty_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="an ELF program or library, not a kernel"):
        check_kernel(Path(sys.executable).resolve())
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(UsageError, match="an empty file"):
        check_initrd(empty)
    with pytest.raises(UsageError, match="does not exist"):
        check_kernel(tmp_path / "missing")
    with pytest.raises(UsageError, match="is a directory"):
        check_image(tmp_path)


def test_initrds_are_cpio_or_compressed(tmp_path: Path) -> None:
    cpio = tmp_path / "plain.cpio"
    cpio.write_bytes(b"070701" + bytes(200))
    check_initrd(cpio)
    zstd = tmp_path / "initrd.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(100))
    check_initrd(zstd)
    with pytest.raises(UsageError, match="is not an initrd"):
        check_initrd(Path("/etc/hostname") if Path("/etc/hostname").is_file() else Path("/etc/passwd"))


@pytest.mark.parametrize("command", ["boot", "run"])
def test_launcher_refuses_non_assets_before_qemu_starts(command: str, tmp_path: Path) -> None:
    extra = ["--rootfs", str(tmp_path)] if command == "run" else []
    result = run_cli(command, "--kernel", "/etc/passwd", "--image", "/etc/hosts", "--transport", "serial",
                     "--accel", "tcg", *extra, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "/etc/passwd is not a guest kernel: it is a text file" in result.stderr
    assert "qemu" not in result.stderr.lower()


def test_run_refuses_a_bundle_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    result = run_cli("run", "--kernel", "/etc/passwd", "--image", "/etc/hosts", "--oci-bundle", tmp_path, "--json",
                     "--", "true", timeout=60)
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["where"] == f"--oci-bundle {tmp_path}" and "no config.json" in error["problem"]


def test_run_needs_a_container(tmp_path: Path) -> None:
    result = run_cli("run", "--kernel", "/etc/passwd", "--image", "/etc/hosts", "--", "true", timeout=60)
    assert result.returncode == 2 and "--oci-bundle/--rootfs" in result.stderr


# --- choices by injected probes -------------------------------------------------------------------


def test_transport_auto_follows_the_probe() -> None:
    assert choose_transport("auto", probe=lambda: True) == "vsock"
    assert choose_transport("auto", probe=lambda: False) == "serial"
    assert choose_transport("serial", probe=lambda: True) == "serial"
    assert choose_transport("vsock", probe=lambda: False) == "vsock"


def test_accel_auto_follows_the_probe_and_remembers_it(tmp_path: Path) -> None:
    calls: list[bool] = []

    def probe(answer: bool) -> KvmProbe:
        def run(kernel: Path, arch: Arch, qemu: str | None) -> bool:
            calls.append(answer)
            return answer
        return run

    kernel, arch = tmp_path / "vmlinux", host_arch()
    assert choose_accel("auto", kernel, arch, None, probe=probe(True), device_usable=lambda: True) == "kvm"
    assert choose_accel("auto", kernel, arch, None, probe=probe(False), device_usable=lambda: True) == "tcg"
    assert choose_accel("auto", kernel, arch, None, probe=probe(True), device_usable=lambda: False) == "tcg"
    assert calls == [True, False]  # no device: no probe
    cache = Cache(tmp_path / "cache")
    cache.ensure()
    assert choose_accel("auto", kernel, arch, cache, probe=probe(False), device_usable=lambda: True) == "tcg"
    # The answer is kept for this host boot: a second probe is not asked (and would have said kvm).
    assert choose_accel("auto", kernel, arch, cache, probe=probe(True), device_usable=lambda: True) == "tcg"
    assert calls == [True, False, False]
    assert choose_accel("tcg", kernel, arch, cache, probe=probe(True), device_usable=lambda: True) == "tcg"


# --- causes from the console --------------------------------------------------------------------


def _lines(*texts: str, start: float = 1.0) -> list[ConsoleLine]:
    return [ConsoleLine(start + index * 0.1, text) for index, text in enumerate(texts)]


def test_verity_corruption_and_init_failure_are_named_and_stop_the_guest() -> None:
    lines = _lines("[    1.201] device-mapper: verity: 254:0: data block 4711 is corrupted",
                   "[    1.202] Run /sbin/init as init process",
                   "[    1.203] Starting init: /sbin/init exists but couldn't execute it (error -5)",
                   "[    1.204] Run /bin/sh as init process")
    found = diagnose.causes(lines)
    assert [cause.kind for cause in found] == ["verity", "init"]
    text = diagnose.describe(found)
    assert "data block 4711 of 254:0 is corrupted" in text and "/sbin/init could not be executed" in text
    assert "EIO" in text
    assert diagnose.stopped(lines, now=1.4) is None  # the grace for the lines that follow
    assert diagnose.stopped(lines, now=1.3 + diagnose.FATAL_GRACE) == found


def test_panic_and_missing_init_are_fatal_a_lone_verity_error_only_when_silent() -> None:
    panic = _lines("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100")
    assert diagnose.causes(panic)[0].summary == "kernel panic: Attempted to kill init! exitcode=0x00000100"
    assert diagnose.stopped(panic, now=5.0) is not None
    no_init = _lines("Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.")
    # The specific reason rather than the panic that reports it.
    assert [cause.summary for cause in diagnose.causes(no_init)] == ["no working init found in the root filesystem"]
    lone = _lines("device-mapper: verity: 254:0: metadata block 7 is corrupted", "systemd[1]: started")
    assert diagnose.stopped(lone, now=3.0) is None
    assert diagnose.stopped(lone, now=1.1 + diagnose.STALL_SECONDS) is not None
    healthy = _lines("Run /sbin/init as init process", "systemd[1]: Failed to start foo.service")
    assert diagnose.causes(healthy) == []
    requested = _lines("Kernel panic - not syncing: Requested init /no/such/init failed (error -2).")
    assert diagnose.describe(diagnose.causes(requested)) == "init /no/such/init could not be executed (error -2, ENOENT)"
    # rdinit= that cannot run is named, but the kernel goes on to the default inits: not fatal alone.
    fallback = _lines("Failed to execute /init (error -13)", "Run /sbin/init as init process")
    assert [cause.fatal for cause in diagnose.causes(fallback)] == [False]
    assert diagnose.stopped(fallback, now=1.1 + diagnose.FATAL_GRACE) is None


# --- configuration and devices ------------------------------------------------------------------


def test_runtime_configuration_carries_the_shared_fs(tmp_path: Path) -> None:
    config = tmp_path / "configuration-qemu.toml"
    config.write_text('[hypervisor.qemu]\nkernel = "/k"\nimage = "/i"\nshared_fs = "virtio-9p"\n'
                      'virtio_fs_daemon = "/opt/kata/libexec/virtiofsd"\nvirtio_fs_cache = "never"\n')
    read = read_runtime_config(config, root=tmp_path)
    assert (read.shared_fs, read.virtio_fs_cache) == ("virtio-9p", "never")
    assert read.virtio_fs_daemon == tmp_path / "opt/kata/libexec/virtiofsd"
    config.write_text('[hypervisor.qemu]\nkernel = "/k"\nimage = "/i"\nshared_fs = "nfs"\n')
    with pytest.raises(ConfigError, match="not one of") as caught:
        read_runtime_config(config)
    assert "shared_fs" in caught.value.where


def test_qemu_gets_the_runtimes_shared_fs_devices(tmp_path: Path) -> None:
    base = VmSpec(arch=host_arch(), kernel=tmp_path / "k", cmdline="", accel="tcg", initrd=tmp_path / "i",
                  agent_socket=tmp_path / "a.sock", memory_mb=1024)
    argv = qemu_argv(VmSpec(**{**base.__dict__, "shared_fs": SharedFs("virtio-fs", socket=Path("/s/fs.sock")),
                               "wrapper": ("nsenter", "--mount=/proc/1/ns/mnt", "--"), "name": "sbx"}))
    assert argv[:4] == ["nsenter", "--mount=/proc/1/ns/mnt", "--", f"qemu-system-{host_arch().qemu}"]
    joined = " ".join(argv)
    assert "-name sbx" in joined
    assert "memory-backend-file,id=dimm1,size=1024M,mem-path=/dev/shm,share=on" in joined
    assert "-numa node,memdev=dimm1" in joined
    assert "socket,id=char-kataShared,path=/s/fs.sock" in joined
    assert "vhost-user-fs-pci,chardev=char-kataShared,tag=kataShared,queue-size=1024" in joined
    ninep = " ".join(qemu_argv(VmSpec(**{**base.__dict__, "shared_fs": SharedFs("virtio-9p",
                                                                                  directory=Path("/d/shared"))})))
    assert "virtio-9p-pci,disable-modern=false,fsdev=extra-9p-kataShared,mount_tag=kataShared" in ninep
    assert "local,id=extra-9p-kataShared,path=/d/shared,security_model=none,multidevs=remap" in ninep
    assert "memory-backend-file" not in ninep


RUST_HELP = """virtiofsd backend
Usage: virtiofsd [OPTIONS]
      --shared-dir <shared-dir>  Shared directory path
      --fd <fd>                  File descriptor for the listening socket
"""


def _fake_daemon(path: Path, help_text: str, version: str) -> Path:
    path.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{version}'; else cat <<'EOF'\n{help_text}EOF\nfi\n")
    path.chmod(0o755)
    return path


def test_virtiofsd_kind_decides_its_options(tmp_path: Path) -> None:
    rust = virtiofsd.identify(str(_fake_daemon(tmp_path / "rust", RUST_HELP, "virtiofsd 1.13.0")))
    assert rust is not None and rust.kind == virtiofsd.RUST and rust.version == "virtiofsd 1.13.0"
    assert rust.argv(Path("/sh"), cache="none") == [str(tmp_path / "rust"), "--fd=3", "--shared-dir=/sh",
                                                    "--cache=never", "--thread-pool-size=1", "--announce-submounts"]
    assert virtiofsd.identify(str(_fake_daemon(tmp_path / "other", "usage: nothing\n", "x"))) is None
    with pytest.raises(UsageError, match="not a virtiofsd"):
        virtiofsd.require_virtiofsd(tmp_path / "other")
    # A Rust daemon is preferred to QEMU's C one when both are there.
    found = virtiofsd.find_virtiofsd(tmp_path / "rust")
    assert found.kind == virtiofsd.RUST


@pytest.mark.skipif(not os.access("/usr/lib/qemu/virtiofsd", os.X_OK), reason="qemu-system-common's virtiofsd")
def test_qemus_c_virtiofsd_is_recognised() -> None:
    daemon = virtiofsd.identify("/usr/lib/qemu/virtiofsd")
    assert daemon is not None and daemon.kind == virtiofsd.QEMU_C
    assert daemon.argv(Path("/sh")) == ["/usr/lib/qemu/virtiofsd", "--fd=3", "-o", "source=/sh", "-o", "cache=auto",
                                        "--thread-pool-size=1", "-o", "announce_submounts"]
    assert shutil.which("nsenter") and shutil.which("unshare")


def test_every_bundled_qemu_configuration_shares_over_virtio_fs(tmp_path: Path) -> None:
    from osbuilder.bundle.configs import ConfigSpec, render

    for spec in (ConfigSpec("configuration-qemu.toml", "qemu", "vmlinux.container", image="kata-containers.img"),
                 ConfigSpec("configuration-qemu-initrd.toml", "qemu", "vmlinux.container",
                            initrd="kata-containers-initrd.img")):
        path = tmp_path / spec.filename
        path.write_text(render(spec, host_arch()))
        read = read_runtime_config(path, root=tmp_path)
        assert read.shared_fs == "virtio-fs" and read.virtio_fs_cache == "auto"
        assert read.virtio_fs_daemon == tmp_path / "opt/kata/libexec/virtiofsd"
