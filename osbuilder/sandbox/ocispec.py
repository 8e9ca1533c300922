"""An OCI container to run: a runtime bundle's config.json, or runc's default spec for a root tree.

Read and checked before anything starts (bad input names the file and the field), then constrained
as the Kata runtime constrains a spec before it hands it to the agent: no hooks (they run on the
host), no network, cgroup or time namespace and no namespace paths (the VM is the sandbox), no
device, block I/O or network resources and no seccomp profile (the guest decides those).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.errors import ConfigError, UsageError

CONFIG_JSON = "config.json"
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
STRIPPED_NAMESPACES = ("network", "cgroup", "time")
STRIPPED_RESOURCES = ("devices", "blockIO", "network")
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
BIND_OPTIONS = ("bind", "rbind")

# What `runc spec` writes (runc 1.1), the reference environment; without the network namespace, as
# Kata constrains it, and without a terminal: `osbuilder run` keeps stdout and stderr apart.
_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
RUNC_DEFAULT_SPEC: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {name: list(_DEFAULT_CAPS) for name in ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


@dataclass(frozen=True)
class HostBind:
    """A bind mount of the spec whose source is on the host: the runtime shares it with the guest."""

    index: int  # in spec["mounts"]
    source: Path


@dataclass(frozen=True)
class ContainerConfig:
    """A container to run: its spec (checked and constrained; never modified afterwards), its root
    tree on the host, and where both came from (for error messages)."""

    spec: Mapping[str, Any]
    root: Path
    origin: str
    binds: tuple[HostBind, ...] = ()

    @property
    def args(self) -> list[str]:
        return list(self.spec["process"]["args"])

    @property
    def hostname(self) -> str:
        return str(self.spec.get("hostname", ""))


# --- checking ----------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, path: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(problem=problem, where=f"{self.origin} ({path})", fix=fix)

    def kind(self, value: Any, expected: type | tuple[type, ...], path: str, name: str) -> Any:
        # bool is an int in Python; JSON keeps them apart.
        wrong_bool = isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,))
        if not isinstance(value, expected) or wrong_bool:
            raise self.fail(path, f"must be {name}, not {json.dumps(value)[:60]}", f"write {path} as {name}")
        return value

    def optional(self, parent: Mapping[str, Any], key: str, expected: type | tuple[type, ...], path: str,
                 name: str) -> Any:
        if key not in parent or parent[key] is None:
            return None
        return self.kind(parent[key], expected, f"{path}.{key}" if path else key, name)

    def strings(self, parent: Mapping[str, Any], key: str, path: str) -> list[str]:
        values = self.optional(parent, key, list, path, "a list of strings") or []
        for index, value in enumerate(values):
            self.kind(value, str, f"{path}.{key}[{index}]", "a string")
        return list(values)

    def count(self, parent: Mapping[str, Any], key: str, path: str, minimum: int = 0) -> int | None:
        value = self.optional(parent, key, int, path, "an integer")
        if value is not None and value < minimum:
            raise self.fail(f"{path}.{key}", f"must be at least {minimum}, not {value}", f"fix {path}.{key}")
        return int(value) if value is not None else None


def check_spec(spec: Any, origin: str) -> None:
    """The fields the runtime and the agent read, each of the right type (OCI runtime spec 1.0)."""
    check = _Checker(origin)
    check.kind(spec, dict, "(top level)", "a JSON object")
    check.optional(spec, "ociVersion", str, "", "a string")
    check.optional(spec, "hostname", str, "", "a string")
    _check_process(check, spec)
    root = check.optional(spec, "root", dict, "", "an object with path and readonly")
    if root is None:
        raise check.fail("root", "is missing", 'add "root": {"path": "rootfs"}')
    if not check.optional(root, "path", str, "root", "a string"):
        raise check.fail("root.path", "is missing or empty", 'set "root": {"path": "rootfs"}')
    check.optional(root, "readonly", bool, "root", "true or false")
    for index, mount in enumerate(check.optional(spec, "mounts", list, "", "a list of mounts") or []):
        path = f"mounts[{index}]"
        check.kind(mount, dict, path, "an object with destination, type, source and options")
        destination = check.optional(mount, "destination", str, path, "an absolute path")
        if not destination or not destination.startswith("/"):
            raise check.fail(f"{path}.destination", "must be an absolute path in the container",
                             'e.g. "destination": "/data"')
        check.optional(mount, "type", str, path, "a string")
        check.optional(mount, "source", str, path, "a string")
        check.strings(mount, "options", path)
    annotations = check.optional(spec, "annotations", dict, "", "an object of strings")
    for key, value in (annotations or {}).items():
        check.kind(value, str, f"annotations.{key}", "a string")
    _check_linux(check, spec)


def _check_process(check: _Checker, spec: Mapping[str, Any]) -> None:
    process = check.optional(spec, "process", dict, "", "an object")
    if process is None:
        raise check.fail("process", "is missing: the container needs a process to run",
                         'add "process": {"args": ["sh"], "cwd": "/"}')
    check.optional(process, "terminal", bool, "process", "true or false")
    check.strings(process, "args", "process")
    for index, entry in enumerate(check.strings(process, "env", "process")):
        if "=" not in entry:
            raise check.fail(f"process.env[{index}]", f"{entry!r} is not NAME=value", "write it as NAME=value")
    cwd = check.optional(process, "cwd", str, "process", "an absolute path")
    if cwd is not None and not cwd.startswith("/"):
        raise check.fail("process.cwd", f"{cwd!r} is not an absolute path", 'e.g. "cwd": "/"')
    user = check.optional(process, "user", dict, "process", "an object with uid and gid")
    if user is not None:
        check.count(user, "uid", "process.user")
        check.count(user, "gid", "process.user")
        for index, gid in enumerate(check.optional(user, "additionalGids", list, "process.user", "a list") or []):
            check.kind(gid, int, f"process.user.additionalGids[{index}]", "an integer")
        check.optional(user, "username", str, "process.user", "a string")
    capabilities = check.optional(process, "capabilities", dict, "process", "an object of capability lists")
    for name in CAPABILITY_SETS:
        for index, value in enumerate(check.strings(capabilities or {}, name, "process.capabilities")):
            if not value.startswith("CAP_"):
                raise check.fail(f"process.capabilities.{name}[{index}]", f"{value!r} is not a capability",
                                 "use names such as CAP_KILL")
    for index, rlimit in enumerate(check.optional(process, "rlimits", list, "process", "a list") or []):
        path = f"process.rlimits[{index}]"
        check.kind(rlimit, dict, path, "an object with type, hard and soft")
        kind = check.optional(rlimit, "type", str, path, "a string")
        if not kind or not kind.startswith("RLIMIT_"):
            raise check.fail(f"{path}.type", f"{kind!r} is not an rlimit", 'use e.g. "RLIMIT_NOFILE"')
        check.count(rlimit, "hard", path)
        check.count(rlimit, "soft", path)
    check.optional(process, "noNewPrivileges", bool, "process", "true or false")
    check.optional(process, "oomScoreAdj", int, "process", "an integer")
    check.optional(process, "apparmorProfile", str, "process", "a string")
    check.optional(process, "selinuxLabel", str, "process", "a string")


def _check_linux(check: _Checker, spec: Mapping[str, Any]) -> None:
    linux = check.optional(spec, "linux", dict, "", "an object")
    if linux is None:
        return
    for index, namespace in enumerate(check.optional(linux, "namespaces", list, "linux", "a list") or []):
        path = f"linux.namespaces[{index}]"
        check.kind(namespace, dict, path, "an object with type")
        kind = check.optional(namespace, "type", str, path, "a string")
        if kind not in NAMESPACE_TYPES:
            raise check.fail(f"{path}.type", f"{kind!r} is not a namespace type",
                             f"use one of {', '.join(NAMESPACE_TYPES)}")
        check.optional(namespace, "path", str, path, "a string")
    resources = check.optional(linux, "resources", dict, "linux", "an object") or {}
    memory = check.optional(resources, "memory", dict, "linux.resources", "an object") or {}
    for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        check.optional(memory, key, int, "linux.resources.memory", "an integer (bytes)")
    cpu = check.optional(resources, "cpu", dict, "linux.resources", "an object") or {}
    for key in ("shares", "period", "realtimePeriod"):
        check.count(cpu, key, "linux.resources.cpu")
    for key in ("quota", "realtimeRuntime"):
        check.optional(cpu, key, int, "linux.resources.cpu", "an integer")
    for key in ("cpus", "mems"):
        check.optional(cpu, key, str, "linux.resources.cpu", "a string")
    pids = check.optional(resources, "pids", dict, "linux.resources", "an object") or {}
    check.optional(pids, "limit", int, "linux.resources.pids", "an integer")
    for key in ("maskedPaths", "readonlyPaths"):
        check.strings(linux, key, "linux")
    for key, value in (check.optional(linux, "sysctl", dict, "linux", "an object of strings") or {}).items():
        check.kind(value, str, f"linux.sysctl.{key}", "a string")
    check.optional(linux, "cgroupsPath", str, "linux", "a string")
    check.optional(linux, "rootfsPropagation", str, "linux", "a string")


# --- the runtime's constraints ----------------------------------------------------------------------------


def constrained(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the spec as the Kata runtime hands it to the agent."""
    result = copy.deepcopy(dict(spec))
    result.pop("hooks", None)
    process = result.get("process")
    if isinstance(process, dict):
        # No terminal: the output is copied as two streams (stdout, stderr).
        process["terminal"] = False
    linux = result.get("linux")
    if isinstance(linux, dict):
        linux.pop("seccomp", None)
        namespaces = [dict(entry) for entry in linux.get("namespaces") or []
                      if entry.get("type") not in STRIPPED_NAMESPACES]
        for entry in namespaces:
            entry.pop("path", None)
        linux["namespaces"] = namespaces
        resources = linux.get("resources")
        if isinstance(resources, dict):
            for key in STRIPPED_RESOURCES:
                resources.pop(key, None)
    return result


def _is_bind(mount: Mapping[str, Any]) -> bool:
    return mount.get("type") == "bind" or any(option in BIND_OPTIONS for option in mount.get("options") or [])


def _host_binds(spec: Mapping[str, Any], origin: str) -> tuple[HostBind, ...]:
    binds = []
    for index, mount in enumerate(spec.get("mounts") or []):
        if not _is_bind(mount):
            continue
        source = Path(mount.get("source") or "")
        if not source.is_absolute() or not source.exists():
            raise UsageError(problem=f"the bind mount's source {str(source)!r} does not exist on the host",
                             where=f"{origin} (mounts[{index}].source)",
                             fix="give an absolute host path that exists; the runtime shares it with the guest")
        binds.append(HostBind(index, source))
    return tuple(binds)


def _make(spec: dict[str, Any], root: Path, origin: str, root_field: str) -> ContainerConfig:
    check_spec(spec, origin)
    if not root.is_dir():
        raise UsageError(problem=f"the container's root {root} does not exist or is not a directory",
                         where=f"{origin} ({root_field})", fix="give the directory that holds the container's files")
    return ContainerConfig(constrained(spec), root.resolve(), origin, _host_binds(spec, origin))


# --- sources ----------------------------------------------------------------------------------------------


def load_bundle(bundle: Path) -> ContainerConfig:
    """An OCI runtime bundle: a directory with config.json and the root it names."""
    if not bundle.is_dir():
        raise UsageError(problem=f"{bundle} is not a directory", where=f"--oci-bundle {bundle}",
                         fix="give an OCI runtime bundle: a directory with config.json and its root (runc spec)")
    config = bundle / CONFIG_JSON
    if not config.is_file():
        raise UsageError(problem=f"{bundle} has no {CONFIG_JSON}: it is not an OCI runtime bundle",
                         where=f"--oci-bundle {bundle}",
                         fix=f"create one with `runc spec` in {bundle}, or pass the root with --rootfs")
    try:
        spec = json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(problem=f"invalid JSON: {exc.msg}", where=f"{config}:{exc.lineno}:{exc.colno}",
                          fix="fix the JSON syntax") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(problem="not UTF-8 text", where=str(config), fix="write config.json as UTF-8 JSON") from exc
    origin = str(config)
    check_spec(spec, origin)
    root = Path(spec["root"]["path"])
    return _make(spec, root if root.is_absolute() else bundle / root, origin, "root.path")


def default_config(root: Path) -> ContainerConfig:
    """runc's default spec (without a network namespace) for a root tree."""
    spec = copy.deepcopy(RUNC_DEFAULT_SPEC)
    spec["root"]["path"] = str(root)
    return _make(spec, root, f"--rootfs {root}", "root")


def with_args(config: ContainerConfig, args: Sequence[str]) -> ContainerConfig:
    """The container with its process's args replaced (the command after --), checked."""
    spec = copy.deepcopy(dict(config.spec))
    if args:
        spec["process"]["args"] = list(args)
    if not spec["process"].get("args"):
        raise UsageError(problem="no command to run: the spec's process.args is empty and none was given",
                         where=f"{config.origin} (process.args)",
                         fix="give the command after --, e.g. osbuilder run ... -- sh -c 'echo hello'")
    return ContainerConfig(spec, config.root, config.origin, config.binds)


def spec_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True)
