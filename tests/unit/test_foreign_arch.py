"""aarch64 on an x86_64 host, the parts that need no emulation: what a missing binfmt handler says
(each state of /proc/sys/fs/binfmt_misc, reproduced in a directory), the agent's architecture
checked while planning, the reference agent's cross build planned, and the VM the runtime would
start for an arm64 guest (machine, CPU, virtio-blk root, kernel parameters, accelerator)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from osbuilder import binfmt
from osbuilder.agent_build import plan_reference_agent
from osbuilder.arch import ARCHES, host_arch
from osbuilder.boot.accel import choose_accel
from osbuilder.boot.plan import Assets, VmChoices, plan_vm
from osbuilder.boot.qemu import qemu_argv
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS
from osbuilder.rootfs.agent import elf_arch
from osbuilder.rootfs.plan import Request, plan
from osbuilder.rootfs.prepare import prepare
from tests.conftest import run_cli
from tests.helpers.binfmt import REGISTERED, fake_binfmt

pytestmark = pytest.mark.skipif(host_arch().name != "x86_64", reason="the foreign architecture here is aarch64")
AARCH64 = ARCHES["aarch64"]
def _all_tools(name: str) -> str | None:
    return f"/usr/bin/{name}"


def test_each_missing_piece_of_emulation_names_its_fix(tmp_path: Path) -> None:
    unmounted = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "a", mounted=False, handler=None), find=_all_tools)
    assert "binfmt_misc is not mounted" in unmounted.problem
    assert unmounted.fix == "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; then update-binfmts --enable"
    nothing = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "b", mounted=False, handler=None), find=lambda _: None)
    assert nothing.fix.startswith("apt-get install qemu-user-static binfmt-support arch-test; then mount -t binfmt_misc")
    unregistered = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "c", handler=None), find=_all_tools)
    assert "not registered" in unregistered.problem and unregistered.fix == "update-binfmts --enable qemu-aarch64"
    disabled = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "d", handler=REGISTERED.replace("enabled", "disabled")),
                                find=_all_tools)
    assert "is disabled" in disabled.problem and disabled.fix == "update-binfmts --enable qemu-aarch64"
    no_fix_binary = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "e", handler=REGISTERED.replace("PF", "P")),
                                     find=_all_tools)
    assert "lacks the F flag" in no_fix_binary.problem and "chroot" in no_fix_binary.problem
    no_arch_test = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "f"),
                                    find=lambda name: None if name == "arch-test" else f"/usr/bin/{name}")
    assert no_arch_test.fix == "apt-get install arch-test" and "mmdebstrap needs arch-test" in no_arch_test.problem
    ready = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "g"), find=_all_tools)
    assert ready.ok and ready.problem == ready.fix == ""
    assert binfmt.emulation(host_arch(), tmp_path / "nowhere").ok  # the host's own programs need nothing


def test_a_build_without_emulation_stops_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build-rootfs --arch aarch64 on a host without binfmt_misc: exit 2 with the packages and
    commands, before the agent is compiled or anything fetched or written."""
    monkeypatch.setattr(binfmt, "BINFMT_DIR", fake_binfmt(tmp_path, mounted=False, handler=None))
    monkeypatch.setattr(binfmt, "find_tool", lambda _: None)
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")
    output = tmp_path / "rootfs"
    request = Request(output=output, distro="debian", release="bookworm", arch="aarch64", agent_init=True)
    planned = plan(request, context.versions, context.recipe, context.cache.root)
    with pytest.raises(UsageError) as refused:
        prepare(planned, context.versions, context.cache, context.fetcher, {})
    assert refused.value.exit_code == 2 and refused.value.where == "--arch aarch64"
    assert "binfmt_misc is not mounted" in refused.value.problem and "x86_64 host" in refused.value.problem
    assert "apt-get install qemu-user-static binfmt-support arch-test" in refused.value.fix
    assert "update-binfmts --enable" in refused.value.fix
    assert not output.exists() and not (context.cache.root / "agent").exists()


def test_the_docker_backend_needs_only_the_hosts_registered_handler(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """In the builder container, mmdebstrap and arch-test are the image's: the host needs no arch-test,
    but without its binfmt handler (F flag) the container cannot run arm64 programs either, and the
    build stops before the engine is asked to build or run anything."""
    from osbuilder.rootfs.bootstrappers.docker import InContainer

    no_arch_test = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "a"),
                                    find=lambda name: None if name == "arch-test" else f"/usr/bin/{name}",
                                    in_container=True)
    assert no_arch_test.ok
    # registered by other means (a binfmt container, say): no host package is needed at all
    assert binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "a2"), find=lambda _: None, in_container=True).ok
    natively = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "a3"), find=lambda _: None)
    assert natively.problem == ("qemu-user-static, binfmt-support, arch-test are not installed (mmdebstrap needs "
                                "arch-test for a foreign --arch)")
    without_f = binfmt.emulation(AARCH64, fake_binfmt(tmp_path / "b", handler=REGISTERED.replace("PF", "P")),
                                 find=_all_tools, in_container=True)
    assert "lacks the F flag" in without_f.problem
    monkeypatch.setattr(binfmt, "BINFMT_DIR", fake_binfmt(tmp_path / "c", handler=None))
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")
    request = Request(output=tmp_path / "rootfs", distro="debian", release="bookworm", arch="aarch64", agent_init=True)
    planned = plan(request, context.versions, context.recipe, context.cache.root)
    in_container = dataclasses.replace(planned, bootstrapper=InContainer("debian", "bookworm", "base", "tag"))
    with pytest.raises(UsageError) as refused:
        prepare(in_container, context.versions, context.cache, context.fetcher, {})
    assert refused.value.exit_code == 2 and refused.value.where == "--arch aarch64"
    assert "qemu-user emulation for aarch64 is not registered" in refused.value.problem
    assert "update-binfmts --enable qemu-aarch64" in refused.value.fix
    assert not (tmp_path / "rootfs").exists() and not (context.cache.root / "agent").exists()


def test_doctor_reports_the_emulation() -> None:
    result = run_cli("doctor", "--json")
    report = json.loads(result.stdout)
    [state] = report["emulation"]
    assert state["arch"] == "aarch64" and state["handler"] == "/proc/sys/fs/binfmt_misc/qemu-aarch64"
    assert state["ok"] == binfmt.emulation(AARCH64).ok
    assert ("emulation of aarch64" in run_cli("doctor").stdout)
    packages = {tool["package"] for step in report["steps"] for tool in step["tools"]}
    assert {"qemu-user-static", "binfmt-support", "arch-test", "qemu-system-arm", "gcc-aarch64-linux-gnu"} <= packages


def test_an_x86_64_agent_is_refused_for_an_aarch64_rootfs(tmp_path: Path, test_agent: Path) -> None:
    assert elf_arch(test_agent.read_bytes()) == "x86_64"
    output = tmp_path / "rootfs"
    result = run_cli("--cache-dir", tmp_path / "cache", "build-rootfs", "--distro", "debian", "--os-version",
                     "bookworm", "--arch", "aarch64", "--agent-init", "--agent", test_agent, "-o", output)
    assert result.returncode == 2, result.stderr
    assert "is built for x86_64, the rootfs for aarch64" in result.stderr and f"--agent {test_agent}" in result.stderr
    assert not output.exists() and [path.name for path in tmp_path.iterdir()] == ["cache"]
    assert not (tmp_path / "cache" / "rootfs").exists() and not (tmp_path / "cache" / "agent").exists()
    # the same agent for the host's architecture is taken (the minimal recipe: no network)
    taken = run_cli("--cache-dir", tmp_path / "cache", "build-rootfs", "--distro", "minimal", "--agent", test_agent,
                    "-o", output, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert taken.returncode == 0, taken.stderr


def test_the_reference_agent_is_planned_for_the_target(tmp_path: Path) -> None:
    memo = tmp_path / "tool-versions.json"
    native = plan_reference_agent("1.0", memo)
    cross = plan_reference_agent("1.0", memo, arch=AARCH64)
    assert native.make_variables == [] and native.inputs["arch"] == "x86_64"
    assert cross.make_variables == ["CC=aarch64-linux-gnu-gcc", "STRIP=aarch64-linux-gnu-strip"]
    assert cross.inputs["arch"] == "aarch64" and "aarch64-linux-gnu-gcc" in cross.inputs["compiler"]
    assert cross.cache_key != native.cache_key


def _arm64_vm(tmp_path: Path, image: bool) -> tuple[list[str], str]:
    kernel, disk = tmp_path / "vmlinux", tmp_path / "disk.img"
    kernel.write_bytes(b"kernel")
    disk.write_bytes(bytes(4096))
    vm, _root = plan_vm(VmChoices(arch="aarch64", accel="tcg", transport="serial"),
                        Assets(kernel, disk if image else None, None if image else kernel))
    argv = qemu_argv(dataclasses.replace(vm, agent_socket=tmp_path / "agent.sock"))
    return argv, vm.cmdline


def test_the_arm64_vm_is_the_runtimes(tmp_path: Path) -> None:
    argv, cmdline = _arm64_vm(tmp_path, image=True)
    assert argv[0] == "qemu-system-aarch64"
    assert argv[argv.index("-machine") + 1] == "virt,usb=off,gic-version=max,accel=tcg"  # no nvdimm=on
    assert argv[argv.index("-cpu") + 1] == "cortex-a57,pmu=off"
    assert f"file={tmp_path / 'disk.img'},if=none,id=disk0,format=raw,readonly=on" in argv
    assert "virtio-blk-pci,drive=disk0" in argv and not any("nvdimm" in arg for arg in argv)
    params = cmdline.split()
    assert "root=/dev/vda1" in params and "rootflags=data=ordered,errors=remount-ro" in params
    assert "dax" not in cmdline and "console=ttyAMA0" in params and "iommu.passthrough=0" in params
    assert not any(param.startswith(("tsc=", "i8042.")) for param in params)
    initrd_argv, initrd_cmdline = _arm64_vm(tmp_path, image=False)
    assert "-initrd" in initrd_argv and "root=" not in initrd_cmdline


def _kernel_heads() -> dict[str, bytes]:
    """The first bytes that say a kernel's architecture: a 64-bit x86 bzImage's boot sector and setup
    header, an arm64 Image's magic, an arm64 kernel ELF (e_machine 183, upper-half entry)."""
    bzimage = bytearray(0x1000)
    bzimage[0x1FE:0x200], bzimage[0x202:0x206] = b"\x55\xaa", b"HdrS"
    bzimage[0x206:0x208], bzimage[0x236] = (0x20F).to_bytes(2, "little"), 1  # protocol 2.15, XLF_KERNEL_64
    image = bytearray(0x1000)
    image[0x38:0x3C] = b"ARM\x64"
    elf = bytearray(0x1000)
    elf[:5] = b"\x7fELF\x02"
    elf[18:20] = (183).to_bytes(2, "little")
    elf[24:32] = (0xFFFF800080000000).to_bytes(8, "little")
    return {"x86_64": bytes(bzimage), "aarch64": bytes(image), "aarch64-elf": bytes(elf)}


def test_a_kernel_of_another_architecture_is_refused_before_qemu_starts(tmp_path: Path) -> None:
    from osbuilder.boot.plan import choose_assets

    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"070701" + bytes(200))
    for name, head in _kernel_heads().items():
        kernel = tmp_path / name
        kernel.write_bytes(head)
        assets = choose_assets(kernel, None, initrd, None)
        assert assets.kernel_arch == name.split("-")[0]
    bzimage = choose_assets(tmp_path / "x86_64", None, initrd, None)
    with pytest.raises(UsageError) as refused:
        plan_vm(VmChoices(arch="aarch64", accel="tcg", transport="serial"), bzimage)
    error = refused.value
    assert error.exit_code == 2 and error.where == f"--kernel {tmp_path / 'x86_64'}"
    assert error.problem == f"{tmp_path / 'x86_64'} is an x86_64 kernel, but the VM is aarch64 (--arch aarch64)"
    assert error.fix == "pass --arch x86_64, or an aarch64 kernel (osbuilder build-kernel --arch aarch64)"
    arm64 = choose_assets(tmp_path / "aarch64-elf", None, initrd, None)
    with pytest.raises(UsageError) as on_this_host:
        plan_vm(VmChoices(accel="tcg", transport="serial"), arm64)
    assert "is an aarch64 kernel, but the VM is x86_64 (this host)" in on_this_host.value.problem
    vm, _root = plan_vm(VmChoices(arch="aarch64", accel="tcg", transport="serial"), arm64)
    assert vm.arch.name == "aarch64"
    # Through the command line: exit 2, and no QEMU was started.
    result = run_cli("boot", "--arch", "aarch64", "--kernel", tmp_path / "x86_64", "--initrd", initrd, "--json")
    assert result.returncode == 2 and "is an x86_64 kernel, but the VM is aarch64" in result.stdout
    container = tmp_path / "container"
    (container / "bin").mkdir(parents=True)
    ran = run_cli("run", "--arch", "aarch64", "--kernel", tmp_path / "x86_64", "--initrd", initrd, "--rootfs",
                  container, "--json", "--", "true")
    assert ran.returncode == 2 and "is an x86_64 kernel, but the VM is aarch64" in ran.stdout


def test_an_arm64_guest_is_emulated(tmp_path: Path) -> None:
    def no_probe(*_: object) -> bool:
        raise AssertionError("KVM is never probed for another architecture")

    kernel = tmp_path / "Image"
    assert choose_accel("auto", kernel, AARCH64, None, probe=no_probe, device_usable=lambda: True) == "tcg"
    with pytest.raises(UsageError) as refused:
        choose_accel("kvm", kernel, AARCH64, None, probe=no_probe, device_usable=lambda: True)
    assert refused.value.where == "--accel kvm" and "aarch64 guest on this x86_64 host" in refused.value.problem


def test_the_rootfs_cache_key_carries_the_architecture(tmp_path: Path) -> None:
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")
    context.cache.ensure()
    planned = {arch: plan(Request(distro="debian", release="bookworm", arch=arch, agent_init=True), context.versions,
                          context.recipe, context.cache.root, key_only=True, environment={"SOURCE_DATE_EPOCH": "1"})
               for arch in ("x86_64", "aarch64")}
    native, foreign = (planned[arch].cache_inputs() for arch in ("x86_64", "aarch64"))
    assert (native["arch"], foreign["arch"]) == ("x86_64", "aarch64")
    assert native["agent"]["build"] != foreign["agent"]["build"]  # the agent is built for the target
    assert planned["x86_64"].cache_key != planned["aarch64"].cache_key
