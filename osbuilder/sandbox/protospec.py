"""An OCI spec (config.json's JSON, already constrained by osbuilder.sandbox.ocispec) as the agent's
protobuf Spec and Process (Kata's oci.proto: the same fields, spelled as Go names).

The root becomes the guest path where the shared directory shows it, and host bind sources the
guest paths of their shared copies; everything else is carried over field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osbuilder.ttrpc.protos import oci_pb2


def _user(data: Mapping[str, Any]) -> oci_pb2.User:
    return oci_pb2.User(UID=int(data.get("uid", 0)), GID=int(data.get("gid", 0)),
                        AdditionalGids=[int(gid) for gid in data.get("additionalGids") or []],
                        Username=str(data.get("username", "")))


def _capabilities(data: Mapping[str, Any]) -> oci_pb2.LinuxCapabilities:
    return oci_pb2.LinuxCapabilities(Bounding=data.get("bounding") or [], Effective=data.get("effective") or [],
                                     Inheritable=data.get("inheritable") or [],
                                     Permitted=data.get("permitted") or [], Ambient=data.get("ambient") or [])


def process_message(data: Mapping[str, Any]) -> oci_pb2.Process:
    process = oci_pb2.Process(
        Terminal=bool(data.get("terminal", False)),
        Args=list(data.get("args") or []),
        Env=list(data.get("env") or []),
        Cwd=str(data.get("cwd") or "/"),
        NoNewPrivileges=bool(data.get("noNewPrivileges", False)),
        ApparmorProfile=str(data.get("apparmorProfile", "")),
        OOMScoreAdj=int(data.get("oomScoreAdj", 0)),
        SelinuxLabel=str(data.get("selinuxLabel", "")),
    )
    process.User.CopyFrom(_user(data.get("user") or {}))
    if data.get("capabilities") is not None:
        process.Capabilities.CopyFrom(_capabilities(data["capabilities"]))
    size = data.get("consoleSize")
    if size:
        process.ConsoleSize.CopyFrom(oci_pb2.Box(Height=int(size.get("height", 0)), Width=int(size.get("width", 0))))
    for rlimit in data.get("rlimits") or []:
        process.Rlimits.add(Type=rlimit["type"], Hard=int(rlimit.get("hard", 0)), Soft=int(rlimit.get("soft", 0)))
    return process


def _resources(data: Mapping[str, Any]) -> oci_pb2.LinuxResources:
    resources = oci_pb2.LinuxResources()
    memory = data.get("memory")
    if memory:
        resources.Memory.CopyFrom(oci_pb2.LinuxMemory(
            Limit=int(memory.get("limit", 0)), Reservation=int(memory.get("reservation", 0)),
            Swap=int(memory.get("swap", 0)), Kernel=int(memory.get("kernel", 0)),
            KernelTCP=int(memory.get("kernelTCP", 0)), Swappiness=int(memory.get("swappiness", 0)),
            DisableOOMKiller=bool(memory.get("disableOOMKiller", False))))
    cpu = data.get("cpu")
    if cpu:
        resources.CPU.CopyFrom(oci_pb2.LinuxCPU(
            Shares=int(cpu.get("shares", 0)), Quota=int(cpu.get("quota", 0)), Period=int(cpu.get("period", 0)),
            RealtimeRuntime=int(cpu.get("realtimeRuntime", 0)), RealtimePeriod=int(cpu.get("realtimePeriod", 0)),
            Cpus=str(cpu.get("cpus", "")), Mems=str(cpu.get("mems", ""))))
    pids = data.get("pids")
    if pids:
        resources.Pids.CopyFrom(oci_pb2.LinuxPids(Limit=int(pids.get("limit", 0))))
    for limit in data.get("hugepageLimits") or []:
        resources.HugepageLimits.add(Pagesize=str(limit.get("pageSize", "")), Limit=int(limit.get("limit", 0)))
    return resources


def _linux(data: Mapping[str, Any]) -> oci_pb2.Linux:
    linux = oci_pb2.Linux(
        CgroupsPath=str(data.get("cgroupsPath", "")),
        RootfsPropagation=str(data.get("rootfsPropagation", "")),
        MaskedPaths=list(data.get("maskedPaths") or []),
        ReadonlyPaths=list(data.get("readonlyPaths") or []),
        MountLabel=str(data.get("mountLabel", "")),
    )
    for key, field in (("uidMappings", linux.UIDMappings), ("gidMappings", linux.GIDMappings)):
        for mapping in data.get(key) or []:
            field.add(HostID=int(mapping.get("hostID", 0)), ContainerID=int(mapping.get("containerID", 0)),
                      Size=int(mapping.get("size", 0)))
    for name, value in (data.get("sysctl") or {}).items():
        linux.Sysctl[name] = value
    if data.get("resources"):
        linux.Resources.CopyFrom(_resources(data["resources"]))
    for namespace in data.get("namespaces") or []:
        linux.Namespaces.add(Type=namespace["type"], Path=str(namespace.get("path", "")))
    for device in data.get("devices") or []:
        linux.Devices.add(Path=str(device.get("path", "")), Type=str(device.get("type", "")),
                          Major=int(device.get("major", 0)), Minor=int(device.get("minor", 0)),
                          FileMode=int(device.get("fileMode", 0)), UID=int(device.get("uid", 0)),
                          GID=int(device.get("gid", 0)))
    return linux


def spec_message(spec: Mapping[str, Any], *, root_path: str, bind_sources: Mapping[int, str] | None = None
                 ) -> oci_pb2.Spec:
    """The agent's Spec. `root_path` is the root as the guest sees it; `bind_sources` maps the index of
    a host bind mount to the guest path of its shared copy."""
    bind_sources = bind_sources or {}
    message = oci_pb2.Spec(Version=str(spec.get("ociVersion", "")), Hostname=str(spec.get("hostname", "")))
    message.Process.CopyFrom(process_message(spec.get("process") or {}))
    message.Root.CopyFrom(oci_pb2.Root(Path=root_path, Readonly=bool((spec.get("root") or {}).get("readonly"))))
    for index, mount in enumerate(spec.get("mounts") or []):
        message.Mounts.add(destination=mount["destination"],
                           source=bind_sources.get(index, str(mount.get("source", ""))),
                           type=str(mount.get("type", "")), options=list(mount.get("options") or []))
    for key, value in (spec.get("annotations") or {}).items():
        message.Annotations[key] = value
    if spec.get("linux") is not None:
        message.Linux.CopyFrom(_linux(spec["linux"]))
    return message
