"""Kata's provisioning steps and rootfs checks, on small synthetic distribution trees."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from osbuilder.errors import BuildError
from osbuilder.rootfs import provision
from osbuilder.rootfs.agent import TarballMember
from osbuilder.rootfs.provision import AgentInstall, Provisioning
from osbuilder.rootfs.tree import REG, SYM, RootfsTree
from tests.helpers.faketree import CHRONY_CONF, CHRONY_SERVICE, debian_like

TRIMS = ("usr/share/doc", "usr/share/man")


@pytest.fixture
def agent(tmp_path: Path) -> AgentInstall:
    binary = tmp_path / "agent"
    binary.write_bytes(b"\x7fELF the agent")
    return AgentInstall("kata-agent", binary, hashlib.sha256(binary.read_bytes()).hexdigest())


def _provisioned(tmp_path: Path, agent: AgentInstall, init: str, **options: object) -> RootfsTree:
    tree = RootfsTree(debian_like(tmp_path / "base.tar", systemd=init == "systemd"), mtime=1700000000)
    spec = Provisioning(init=init, agent=agent, trims=TRIMS, **options)  # type: ignore[arg-type]
    provision.provision(tree, spec)
    assert provision.check(tree, spec) == []
    return tree


def test_systemd_mode_opens_a_private_root_to_services(tmp_path: Path, agent: AgentInstall) -> None:
    tree = RootfsTree(debian_like(tmp_path / "base.tar"), mtime=1700000000)
    tree.chmod("", 0o700)
    provision.provision(tree, Provisioning(init="systemd", agent=agent, trims=TRIMS))
    assert tree.entries[""].mode == 0o751  # g+rx,o+x added, nothing else


def test_systemd_mode(tmp_path: Path, agent: AgentInstall) -> None:
    tree = _provisioned(tmp_path, agent, "systemd")
    assert tree.read("usr/bin/kata-agent") == b"\x7fELF the agent"
    assert tree.get("usr/bin/kata-agent").mode == 0o755  # type: ignore[union-attr]
    service = tree.read("usr/lib/systemd/system/kata-agent.service").decode()
    assert "ExecStart=/usr/bin/kata-agent" in service and "OOMScoreAdjust=-997" in service
    target = tree.read("usr/lib/systemd/system/kata-containers.target").decode()
    for line in ("Requires=basic.target", "Requires=tmp.mount", "Requires=kata-agent.service",
                 "Wants=chronyd.service", "AllowIsolate=yes"):
        assert line in target
    wants = tree.get("etc/systemd/system/basic.target.wants/kata-containers.target")
    assert wants is not None and wants.linkname == "/usr/lib/systemd/system/kata-containers.target"
    dbus = tree.get("etc/systemd/system/kata-containers.target.wants/dbus.socket")
    assert dbus is not None and dbus.linkname == "/usr/lib/systemd/system/dbus.socket"
    # tmp.mount copied from usr/share/systemd, as Kata does when the distribution ships one
    assert tree.read("etc/systemd/system/tmp.mount") == b"[Mount]\nWhat=tmpfs\nWhere=/tmp\n"
    assert tree.entries[""].mode == 0o755


def test_common_layout(tmp_path: Path, agent: AgentInstall) -> None:
    tree = _provisioned(tmp_path, agent, "systemd")
    var_tmp = tree.get("var/tmp")
    assert var_tmp is not None and var_tmp.type == SYM and var_tmp.linkname == "../tmp"
    for gone in ("var/cache", "var/log", "var/lib/chrony", "var/lib/systemd", "usr/share/doc"):
        assert not tree.exists(gone), gone
    assert tree.exists("var/lib/dpkg/status")
    resolv = tree.get("etc/resolv.conf")
    assert resolv is not None and resolv.type == REG and tree.read("etc/resolv.conf") == b""
    assert tree.read("etc/machine-id") == b""
    assert tree.read("etc/hostname") == b"localhost\n"
    assert tree.read("usr/bin/tool") == b"the tool's content\n"  # hard link into a trimmed dir
    assert tree.exists("dev")


def test_chrony_uses_the_ptp_clock(tmp_path: Path, agent: AgentInstall) -> None:
    tree = _provisioned(tmp_path, agent, "systemd")
    conf = tree.read("etc/chrony/chrony.conf").decode().splitlines()
    assert "#pool ntp.example.invalid iburst maxsources 4" in conf
    assert "#server 192.0.2.1 iburst" in conf and "#peer 192.0.2.2" in conf
    assert conf[-2:] == ["refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0", "makestep 1 -1"]
    unit = tree.read("lib/systemd/system/chrony.service").decode().splitlines()
    assert unit[:2] == ["[Unit]", "ConditionPathExists=/dev/ptp0"]
    assert "ExecStart=!/usr/sbin/chronyd $DAEMON_OPTS" in unit
    assert "ReadWritePaths=/run -/var/lib/chrony /var/spool" in unit
    assert "#StateDirectory=chrony" in unit and "#LogsDirectory=chrony" in unit
    assert "StateDirectoryMode=0750" in unit


def test_chrony_edits_are_idempotent_where_it_matters() -> None:
    assert provision.chrony_unit(provision.chrony_unit(CHRONY_SERVICE)).count("ConditionPathExists") == 1
    assert "pool" not in provision.chrony_conf(CHRONY_CONF).replace("#pool", "")


def test_agent_as_init_replaces_the_init_symlink(tmp_path: Path, agent: AgentInstall) -> None:
    tree = RootfsTree(debian_like(tmp_path / "base.tar"), mtime=1)  # systemd present, yet agent init
    spec = Provisioning(init="agent", agent=agent)
    provision.provision(tree, spec)
    assert provision.check(tree, spec) == []
    init = tree.get("sbin/init")
    assert init is not None and init.type == REG and init.path == "usr/sbin/init"
    assert tree.read("usr/lib/systemd/systemd") == b"\x7fELF systemd"  # the symlink was not followed
    assert not tree.exists("usr/bin/kata-agent")
    assert not tree.exists("etc/systemd/system/tmp.mount")


def test_delete_unneeded(tmp_path: Path, agent: AgentInstall) -> None:
    tree = _provisioned(tmp_path, agent, "systemd", delete_unneeded=True)
    for gone in ("usr/lib/systemd/system/systemd-journald.service",
                 "usr/lib/systemd/system/systemd-udevd-control.socket",
                 "usr/lib/systemd/system-generators/systemd-fstab-generator",
                 "etc/systemd/system/syslog.service"):
        assert tree.exists(gone) == gone.endswith("syslog.service"), gone  # names, not link targets
    assert tree.exists("usr/lib/systemd/system/dbus.socket")


def test_kernel_modules_are_copied(tmp_path: Path, agent: AgentInstall) -> None:
    modules = tmp_path / "6.1.0-test"
    (modules / "kernel" / "fs").mkdir(parents=True)
    (modules / "kernel" / "fs" / "x.ko").write_bytes(b"ko")
    (modules / "modules.dep").write_text("kernel/fs/x.ko:\n")
    (modules / "build").symlink_to("/usr/src/linux")
    tree = _provisioned(tmp_path, agent, "systemd", kernel_modules=modules)
    assert tree.read("lib/modules/6.1.0-test/kernel/fs/x.ko") == b"ko"
    assert tree.get("usr/lib/modules/6.1.0-test/build").linkname == "/usr/src/linux"  # type: ignore[union-attr]


def test_agent_tarball_members_and_units(tmp_path: Path, agent: AgentInstall) -> None:
    members = (TarballMember("usr/lib/systemd/system/kata-agent.service", "file", 0o644, data=b"[Service]\n"),
               TarballMember("usr/share/kata", "dir", 0o755),
               TarballMember("usr/share/kata/policy.rego", "file", 0o600, data=b"allow\n"),
               TarballMember("usr/share/kata/default.rego", "symlink", 0o777, "policy.rego"))
    with_members = AgentInstall(agent.name, agent.binary, agent.sha256, members)
    tree = _provisioned(tmp_path, with_members, "systemd")
    assert tree.read("usr/lib/systemd/system/kata-agent.service") == b"[Service]\n"  # the tarball's unit wins
    assert tree.read("usr/share/kata/default.rego") == b"allow\n"
    assert tree.exists("usr/lib/systemd/system/kata-containers.target")


def test_checks_name_what_is_missing(tmp_path: Path, agent: AgentInstall) -> None:
    tree = RootfsTree(debian_like(tmp_path / "base.tar", systemd=False), mtime=1)
    spec = Provisioning(init="systemd", agent=agent)
    provision.provision(tree, spec)
    problems = provision.check(tree, spec)
    assert "/sbin/init is missing" in problems
    assert any("systemd is missing" in problem for problem in problems)
    with pytest.raises(BuildError) as caught:
        provision.require_ok(problems, "rootfs")
    assert "/sbin/init is missing" in caught.value.problem
    assert caught.value.exit_code == 1


def test_agent_init_check_sees_systemd_as_init(tmp_path: Path, agent: AgentInstall) -> None:
    tree = RootfsTree(debian_like(tmp_path / "base.tar"), mtime=1)
    problems = provision.check(tree, Provisioning(init="agent", agent=agent))
    assert problems == ["/sbin/init is systemd, but the agent must be init"]
    tree.remove("sbin/init")
    tree.put_file("sbin/init", b"\x7fELF something else", mode=0o755)
    assert "is not the agent" in provision.check(tree, Provisioning(init="agent", agent=agent))[0]


def test_tree_without_a_distribution(agent: AgentInstall) -> None:
    tree = RootfsTree(None, mtime=1)
    provision.dirs_for_kernel_and_agent(tree)
    spec = Provisioning(init="agent", agent=agent)
    provision.provision(tree, spec)
    assert provision.check(tree, spec) == []
    for directory, mode in (("dev", 0o755), ("proc", 0o555), ("sys", 0o555), ("run", 0o755), ("tmp", 0o1777),
                            ("root", 0o700), ("etc", 0o755)):
        entry = tree.get(directory)
        assert entry is not None and entry.mode == mode, directory
    assert tree.read("etc/passwd").startswith(b"root:x:0:0:")


def test_masked_units_and_generators_link_to_dev_null(tmp_path: Path, agent: AgentInstall) -> None:
    tree = _provisioned(tmp_path, agent, "systemd", masked_units=("systemd-journald.service", "modprobe@.service"),
                        masked_generators=("systemd-fstab-generator",))
    for path in ("etc/systemd/system/systemd-journald.service", "etc/systemd/system/modprobe@.service",
                 "etc/systemd/system-generators/systemd-fstab-generator"):
        entry = tree.get(path)
        assert entry is not None and entry.type == SYM and entry.linkname == "/dev/null", path
    (tmp_path / "agent-mode").mkdir()
    agent_mode = _provisioned(tmp_path / "agent-mode", agent, "agent", masked_units=("systemd-journald.service",))
    assert agent_mode.get("etc/systemd/system/systemd-journald.service") is None  # systemd mode only


def test_the_agent_unit_does_not_wait_for_sysinit(tmp_path: Path, agent: AgentInstall) -> None:
    unit = _provisioned(tmp_path, agent, "systemd").read("usr/lib/systemd/system/kata-agent.service").decode()
    assert "DefaultDependencies=no" in unit and "Requires=tmp.mount" in unit and "Before=shutdown.target" in unit
    assert "After=" not in unit  # nothing to wait for
