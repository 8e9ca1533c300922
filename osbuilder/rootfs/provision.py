"""Turning a distribution tree into a guest rootfs, with the semantics of Kata's rootfs.sh
(setup_rootfs and delete_unnecessary_files), and the checks of its image builder (check_rootfs).

Everything here edits a RootfsTree, so it needs no privileges and runs the same for every backend.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from osbuilder import templating
from osbuilder.errors import BuildError
from osbuilder.rootfs.agent import TarballMember
from osbuilder.rootfs.check import SYSTEMD_PATHS
from osbuilder.rootfs.tree import LNK, REG, SYM, Entry, RootfsTree

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
DATA_FILES = ("rootfs/templates/kata-agent.service.j2", "rootfs/templates/kata-containers.target.j2",
              "rootfs/templates/tmp.mount.j2")

SYSTEMD_UNIT_DIR = "usr/lib/systemd/system"
ETC_UNIT_DIR = "etc/systemd/system"
GENERATOR_DIR = "etc/systemd/system-generators"
AGENT_UNIT = "kata-agent.service"
TARGET_UNIT = "kata-containers.target"

# Kata deletes these after bootstrapping; we keep var/lib/dpkg so that the package database stays
# queryable (dpkg-query --admindir, scanners) and var/lib/osbuilder for our metadata.
VAR_REMOVED = ("var/cache", "var/log", "var/tmp")
VAR_LIB_KEPT = ("dpkg", "osbuilder")

# Kata's `rootfs.sh -d`: units (as .service and .socket) and files removed anywhere in the tree.
UNNEEDED_UNITS = (
    "systemd-coredump@", "systemd-journald", "systemd-journald-dev-log", "systemd-journal-flush",
    "systemd-random-seed", "systemd-timesyncd", "systemd-tmpfiles-setup", "systemd-udevd",
    "systemd-udevd-control", "systemd-udevd-kernel", "systemd-udev-trigger", "systemd-update-utmp",
)
UNNEEDED_FILES = (
    "systemd-bless-boot-generator", "systemd-fstab-generator", "systemd-getty-generator",
    "systemd-gpt-auto-generator", "systemd-tmpfiles-cleanup.timer",
)

CHRONY_CONFIGS = ("etc/chrony/chrony.conf", "etc/chrony.conf")
CHRONY_UNITS = ("lib/systemd/system/chrony.service", "usr/lib/systemd/system/chronyd.service")
CHRONY_APPEND = ("refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0", "makestep 1 -1")


@dataclass(frozen=True)
class AgentInstall:
    name: str  # kata-agent
    binary: Path  # the stripped executable on the host
    sha256: str  # of the stripped executable
    members: tuple[TarballMember, ...] = ()  # the rest of an agent tarball


@dataclass(frozen=True)
class Provisioning:
    init: str  # "systemd" or "agent"
    agent: AgentInstall
    trims: tuple[str, ...] = ()
    delete_unneeded: bool = False
    kernel_modules: Path | None = None
    hostname: str = "localhost"
    masked_units: tuple[str, ...] = ()  # the recipe's: linked to /dev/null in /etc/systemd/system
    masked_generators: tuple[str, ...] = ()  # the recipe's: linked to /dev/null in /etc/systemd/system-generators

    @property
    def agent_init(self) -> bool:
        return self.init == "agent"


def modules_name(directory: Path) -> str:
    """The name of a --kernel-modules directory: the tree has it as lib/modules/<name>."""
    return Path(os.path.abspath(directory)).name


def provision(tree: RootfsTree, spec: Provisioning) -> None:
    """Kata's setup_rootfs steps, in Kata's order."""
    for trim in spec.trims:
        tree.remove(trim)
    _mount_points(tree)
    _var_layout(tree)
    if not spec.agent_init:
        _tmp_mount(tree)
    if spec.kernel_modules is not None:
        add_host_tree(tree, spec.kernel_modules, f"lib/modules/{modules_name(spec.kernel_modules)}")
    _chrony(tree)
    _install_agent(tree, spec)
    if spec.agent_init:
        _agent_as_init(tree, spec.agent)
    else:
        _systemd_wiring(tree, spec.agent)
        mask_units(tree, spec.masked_units)
        mask_units(tree, spec.masked_generators, GENERATOR_DIR)
    reset_host_files(tree, spec.hostname)
    if spec.delete_unneeded:
        removed = delete_unneeded(tree)
        log.info("--delete-unneeded removed %d files", len(removed))


# Where the kernel and init mount devtmpfs, procfs, sysfs and tmpfs (mmdebstrap's tarball may lack
# /dev, as device nodes are left out), with Debian's modes.
MOUNT_POINTS = (("dev", 0o755), ("proc", 0o555), ("run", 0o755), ("sys", 0o555), ("tmp", 0o1777))


def _mount_points(tree: RootfsTree) -> None:
    for path, mode in MOUNT_POINTS:
        if tree.get(path, follow=True) is None:
            tree.put_dir(path, mode=mode)
    # What bootstrapping left in /dev (links, pts/, shm/) is hidden by devtmpfs at boot; emptying it
    # makes every backend give the same tree.
    tree.remove_matching(lambda entry: parent_is(entry, "dev"))


def _var_layout(tree: RootfsTree) -> None:
    for path in VAR_REMOVED:
        tree.remove(path)
    if tree.exists("var/lib"):
        var_lib = tree.resolve("var/lib")
        tree.remove_matching(lambda entry: parent_is(entry, var_lib)
                             and entry.path.rsplit("/", 1)[-1] not in VAR_LIB_KEPT)
    tree.put_symlink("var/tmp", "../tmp")


def parent_is(entry: Entry, directory: str) -> bool:
    return entry.path.rsplit("/", 1)[0] == directory if "/" in entry.path else directory == ""


def _tmp_mount(tree: RootfsTree) -> None:
    if tree.exists(f"{ETC_UNIT_DIR}/tmp.mount") or tree.exists(f"{SYSTEMD_UNIT_DIR}/tmp.mount"):
        return
    shipped = tree.get("usr/share/systemd/tmp.mount", follow=True)
    if shipped is not None and shipped.type in (REG, LNK):
        tree.put_file(f"{ETC_UNIT_DIR}/tmp.mount", tree.read("usr/share/systemd/tmp.mount"))
    else:
        tree.put_file(f"{ETC_UNIT_DIR}/tmp.mount", templating.render(TEMPLATES, "tmp.mount.j2").encode())


def add_host_tree(tree: RootfsTree, source: Path, destination: str) -> int:
    """Copy a host directory into the tree (`cp -a` as root: modes and links kept, owned by root)."""
    count = 0
    tree.put_dir(destination, mode=source.stat().st_mode & 0o7777)
    for path in sorted(source.rglob("*")):
        relative = f"{destination}/{path.relative_to(source).as_posix()}"
        mode = path.lstat().st_mode & 0o7777
        if path.is_symlink():
            tree.put_symlink(relative, str(path.readlink()))
        elif path.is_dir():
            tree.put_dir(relative, mode=mode)
        elif path.is_file():
            tree.put_file(relative, path, mode=mode)
        else:
            log.warning("skipping %s: not a file, directory or symlink", path)
            continue
        count += 1
    return count


def chrony_conf(text: str) -> str:
    """Time from the host's PTP clock (KVM's ptp_kvm) instead of network servers."""
    lines = [f"#{line}" if re.match(r"(server|pool|peer) ", line) else line for line in text.splitlines()]
    return "\n".join([*lines, *CHRONY_APPEND]) + "\n"


def chrony_unit(text: str) -> str:
    """Start only where /dev/ptp0 exists, as root, without state and log directories (var/lib and
    var/log are gone from the image)."""
    out = []
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            line = re.sub(r"\s*-u [A-Za-z0-9_]+", "", line)
        elif line.startswith("ReadWritePaths="):
            line = re.sub(r"(?<=[= ])/var/lib/chrony(?=\s|$)", "-/var/lib/chrony", line)
        elif line.startswith(("StateDirectory=", "LogsDirectory=")):
            line = f"#{line}"
        out.append(line)
        if line.strip() == "[Unit]" and "ConditionPathExists=/dev/ptp0" not in text:
            out.append("ConditionPathExists=/dev/ptp0")
    return "\n".join(out) + "\n"


def _chrony(tree: RootfsTree) -> None:
    for config in CHRONY_CONFIGS:
        if tree.update(config, chrony_conf):
            break
    for unit in CHRONY_UNITS:
        if tree.update(unit, chrony_unit):
            break


def _install_agent(tree: RootfsTree, spec: Provisioning) -> None:
    agent = spec.agent
    if not spec.agent_init:
        tree.put_file(f"usr/bin/{agent.name}", agent.binary, mode=0o755)
    for member in agent.members:
        if member.kind == "dir":
            tree.put_dir(member.path, mode=member.mode)
        elif member.kind == "symlink":
            tree.put_symlink(member.path, member.linkname)
        elif member.kind == "hardlink":
            tree.put_hardlink(member.path, member.linkname)
        elif member.path != f"usr/bin/{agent.name}":
            tree.put_file(member.path, member.data, mode=member.mode)


def _agent_as_init(tree: RootfsTree, agent: AgentInstall) -> None:
    # Kata moves the agent over /sbin/init: the init symlink (if any) is replaced, not followed.
    tree.remove(f"usr/bin/{agent.name}")
    tree.remove("sbin/init")
    tree.put_file("sbin/init", agent.binary, mode=0o755)


def _systemd_wiring(tree: RootfsTree, agent: AgentInstall) -> None:
    if not tree.exists(f"{SYSTEMD_UNIT_DIR}/{AGENT_UNIT}"):
        tree.put_file(f"{SYSTEMD_UNIT_DIR}/{AGENT_UNIT}",
                      templating.render(TEMPLATES, "kata-agent.service.j2", agent_path=f"/usr/bin/{agent.name}").encode())
    if not tree.exists(f"{SYSTEMD_UNIT_DIR}/{TARGET_UNIT}"):
        tree.put_file(f"{SYSTEMD_UNIT_DIR}/{TARGET_UNIT}",
                      templating.render(TEMPLATES, "kata-containers.target.j2", agent_unit=AGENT_UNIT).encode())
    tree.put_symlink(f"{ETC_UNIT_DIR}/basic.target.wants/{TARGET_UNIT}", f"/{SYSTEMD_UNIT_DIR}/{TARGET_UNIT}")
    tree.put_symlink(f"{ETC_UNIT_DIR}/{TARGET_UNIT}.wants/dbus.socket", f"/{SYSTEMD_UNIT_DIR}/dbus.socket")
    tree.chmod("", tree.entries[""].mode | 0o051)  # chmod g+rx,o+x: services of other users can reach /


def mask_units(tree: RootfsTree, names: Sequence[str], directory: str = ETC_UNIT_DIR) -> None:
    """`systemctl mask`: a link to /dev/null in /etc/systemd/system wins over the unit file (a
    template name such as modprobe@.service masks every instance); in /etc/systemd/system-generators
    it disables the generator of that name."""
    for name in names:
        tree.remove(f"{directory}/{name}")
        tree.put_symlink(f"{directory}/{name}", "/dev/null")


def _replace_file(tree: RootfsTree, path: str, content: bytes) -> None:
    """A regular file with this content at path; a symlink there is replaced, not followed."""
    existing = tree.get(path)
    mode = existing.mode if existing is not None and existing.type == REG else 0o644
    tree.remove(path)
    tree.put_file(path, content, mode=mode)


def reset_host_files(tree: RootfsTree, hostname: str = "localhost") -> None:
    """The files a bootstrap copies from the build host, made neutral (guest and container roots)."""
    # The agent bind-mounts the sandbox's resolv.conf over this file, so it must be a regular file;
    # bootstrapping copied the build host's, which belongs in no image.
    _replace_file(tree, "etc/resolv.conf", b"")
    # The build host's name (copied by mmdebstrap) would make images differ between hosts.
    _replace_file(tree, "etc/hostname", f"{hostname}\n".encode())
    # systemd generates a machine id at boot (or bind-mounts one on a read-only root) when empty.
    _replace_file(tree, "etc/machine-id", b"")


def delete_unneeded(tree: RootfsTree) -> list[str]:
    names = {f"{unit}.{suffix}" for unit in UNNEEDED_UNITS for suffix in ("service", "socket")}
    names.update(UNNEEDED_FILES)
    return tree.remove_matching(lambda entry: entry.type in (REG, SYM, LNK)
                                and entry.path.rsplit("/", 1)[-1] in names)


# --- checks -------------------------------------------------------------------------------------


def check(tree: RootfsTree, spec: Provisioning) -> list[str]:
    """What is wrong with a provisioned tree (Kata's check_rootfs, plus the agent); empty if fine."""
    problems: list[str] = []
    init = tree.get("sbin/init")
    if init is None:
        problems.append("/sbin/init is missing")
    elif not (init.type == SYM or (init.type in (REG, LNK) and init.executable)):
        problems.append(f"/sbin/init is a {init.kind} that is not executable")
    if spec.agent_init:
        problems.extend(_check_agent_init(tree, spec.agent))
    else:
        problems.extend(_check_systemd(tree, spec.agent))
    return problems


def _executable(tree: RootfsTree, path: str) -> bool:
    entry = tree.get(path, follow=True)
    return entry is not None and entry.type in (REG, LNK) and entry.executable


def _check_agent_init(tree: RootfsTree, agent: AgentInstall) -> list[str]:
    problems = []
    if not _executable(tree, "sbin/init"):
        return ["/sbin/init is not an executable file (agent as init)"]
    init_path = tree.resolve("sbin/init")
    if init_path in {tree.resolve(path) for path in SYSTEMD_PATHS}:
        problems.append("/sbin/init is systemd, but the agent must be init")
    elif tree.sha256("sbin/init") != agent.sha256:
        problems.append(f"/sbin/init is not the agent (sha256 differs from {agent.sha256[:12]}...)")
    return problems


def _check_systemd(tree: RootfsTree, agent: AgentInstall) -> list[str]:
    problems = []
    if not any(_executable(tree, path) for path in SYSTEMD_PATHS):
        problems.append("systemd is missing (/usr/lib/systemd/systemd); the recipe must install 'init'")
    init = tree.get("sbin/init", follow=True)
    if init is not None and init.type in (REG, LNK) and tree.resolve("sbin/init") not in {
            tree.resolve(path) for path in SYSTEMD_PATHS}:
        problems.append(f"/sbin/init resolves to /{tree.resolve('sbin/init')}, not to systemd")
    if not _executable(tree, f"usr/bin/{agent.name}"):
        problems.append(f"the agent /usr/bin/{agent.name} is missing or not executable")
    for unit in (AGENT_UNIT, TARGET_UNIT):
        if not tree.exists(f"{SYSTEMD_UNIT_DIR}/{unit}", follow=True):
            problems.append(f"/{SYSTEMD_UNIT_DIR}/{unit} is missing")
    for link in (f"{ETC_UNIT_DIR}/basic.target.wants/{TARGET_UNIT}", f"{ETC_UNIT_DIR}/{TARGET_UNIT}.wants/dbus.socket"):
        entry = tree.get(link)
        if entry is None or entry.type != SYM:
            problems.append(f"/{link} is missing")
    return problems


def require_ok(problems: Sequence[str], what: str) -> None:
    if problems:
        raise BuildError(
            problem=f"the {what} fails its checks:\n    - " + "\n    - ".join(problems),
            where=what,
            fix="check the recipe's packages for this init mode and the agent given",
        )


def dirs_for_kernel_and_agent(tree: RootfsTree) -> None:
    """What a tree without a distribution needs besides the mount points: the directories the
    agent and a debug shell use, and the account files for root."""
    for path in ("etc", "sbin", "usr/bin", "usr/sbin", "var/lib"):
        tree.put_dir(path)
    tree.put_dir("root", mode=0o700)
    tree.put_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    tree.put_file("etc/group", b"root:x:0:\n")
    tree.put_file("etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")

