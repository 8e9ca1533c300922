"""OCI bundles and specs: what is read, what the runtime's constraints strip, what the agent receives,
and every bad input named by file and field."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from osbuilder.errors import ConfigError, UsageError
from osbuilder.sandbox import ocispec
from osbuilder.sandbox.mountns import SandboxPaths, guest_rootfs
from osbuilder.sandbox.protospec import spec_message
from osbuilder.sandbox.sandbox import shared_storage
from osbuilder.ttrpc.protos import oci_pb2


def _bundle(tmp_path: Path, spec: dict[str, Any] | str) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(spec if isinstance(spec, str) else json.dumps(spec, indent=1))
    return bundle


def _runc_spec(tmp_path: Path) -> dict[str, Any]:
    """What the host's `runc spec` writes (the reference), else our copy of its defaults."""
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed (make deps installs docker.io, which brings it)")
    workdir = tmp_path / "runc-spec"
    workdir.mkdir()
    subprocess.run([runc, "spec"], cwd=workdir, check=True)
    return dict(json.loads((workdir / "config.json").read_text()))


def test_default_spec_is_runc_spec_without_network_namespace_or_terminal(tmp_path: Path) -> None:
    reference = _runc_spec(tmp_path)
    reference["process"]["terminal"] = False
    reference["linux"]["namespaces"] = [ns for ns in reference["linux"]["namespaces"] if ns["type"] != "network"]
    assert reference == ocispec.RUNC_DEFAULT_SPEC


def test_rootfs_gets_the_default_spec_with_the_command(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    config = ocispec.with_args(ocispec.default_config(tmp_path / "root"), ["echo", "hi"])
    assert config.args == ["echo", "hi"]
    assert config.root == (tmp_path / "root").resolve()
    assert [ns["type"] for ns in config.spec["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount"]
    assert "devices" not in config.spec["linux"]["resources"]  # stripped as the runtime strips it


def test_runtime_constraints_strip_what_kata_strips(tmp_path: Path) -> None:
    spec = _runc_spec(tmp_path)
    spec["hooks"] = {"prestart": [{"path": "/bin/true"}]}
    spec["linux"]["namespaces"] += [{"type": "cgroup"}, {"type": "time"}, {"type": "ipc", "path": "/proc/1/ns/ipc"}]
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ERRNO"}
    spec["linux"]["resources"].update(blockIO={"weight": 10}, network={"classID": 1}, memory={"limit": 1 << 26},
                                      pids={"limit": 20})
    config = ocispec.load_bundle(_bundle(tmp_path, spec))
    linux = config.spec["linux"]
    assert "hooks" not in config.spec and "seccomp" not in linux
    assert {ns["type"] for ns in linux["namespaces"]} == {"pid", "ipc", "uts", "mount"}
    assert all("path" not in ns for ns in linux["namespaces"])
    assert set(linux["resources"]) == {"memory", "pids"}
    assert config.spec["process"]["terminal"] is False
    # The original is left alone: constraints make a copy.
    assert spec["linux"]["seccomp"] and spec["process"]["terminal"] is True


def test_the_agent_gets_the_guest_root_and_every_field(tmp_path: Path) -> None:
    spec = _runc_spec(tmp_path)
    spec["process"]["args"] = ["sh", "-c", "exit 3"]
    spec["process"]["user"]["additionalGids"] = [5, 6]
    spec["linux"]["resources"] = {"memory": {"limit": 67108864}, "pids": {"limit": 32},
                                  "cpu": {"quota": 50000, "period": 100000}}
    spec["linux"]["sysctl"] = {"kernel.domainname": "example"}
    config = ocispec.load_bundle(_bundle(tmp_path, spec))
    message = spec_message(config.spec, root_path=guest_rootfs("c1"))
    decoded = oci_pb2.Spec.FromString(message.SerializeToString())
    assert decoded.Root.Path == "/run/kata-containers/shared/containers/c1/rootfs"
    assert decoded.Root.Readonly is True
    assert decoded.Hostname == "runc" and decoded.Version == spec["ociVersion"]
    assert list(decoded.Process.Args) == ["sh", "-c", "exit 3"]
    assert list(decoded.Process.Env) == spec["process"]["env"]
    assert list(decoded.Process.User.AdditionalGids) == [5, 6]
    assert list(decoded.Process.Capabilities.Bounding) == spec["process"]["capabilities"]["bounding"]
    assert list(decoded.Process.Capabilities.Inheritable) == []
    assert [(r.Type, r.Hard, r.Soft) for r in decoded.Process.Rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert decoded.Process.NoNewPrivileges is True and decoded.Process.Terminal is False
    assert [(m.destination, m.type, list(m.options)) for m in decoded.Mounts] == \
        [(m["destination"], m["type"], m.get("options", [])) for m in spec["mounts"]]
    assert decoded.Linux.Resources.Memory.Limit == 67108864 and decoded.Linux.Resources.Pids.Limit == 32
    assert (decoded.Linux.Resources.CPU.Quota, decoded.Linux.Resources.CPU.Period) == (50000, 100000)
    assert [ns.Type for ns in decoded.Linux.Namespaces] == ["pid", "ipc", "uts", "mount"]
    assert list(decoded.Linux.MaskedPaths) == spec["linux"]["maskedPaths"]
    assert list(decoded.Linux.ReadonlyPaths) == spec["linux"]["readonlyPaths"]
    assert dict(decoded.Linux.Sysctl) == {"kernel.domainname": "example"}


def test_host_bind_mounts_are_shared_under_guest_paths(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    spec = dict(ocispec.RUNC_DEFAULT_SPEC, mounts=[{"destination": "/data", "type": "bind", "source": str(data),
                                                    "options": ["rbind", "ro"]}])
    config = ocispec.load_bundle(_bundle(tmp_path, spec))
    assert [(bind.index, bind.source) for bind in config.binds] == [(0, data)]
    message = spec_message(config.spec, root_path="/r", bind_sources={0: "/run/kata-containers/shared/containers/x"})
    assert message.Mounts[0].source == "/run/kata-containers/shared/containers/x"


def test_bundle_without_config_json_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(UsageError) as caught:
        ocispec.load_bundle(tmp_path)
    assert caught.value.exit_code == 2
    assert "no config.json" in caught.value.problem and str(tmp_path) in caught.value.where


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda s: s["process"].update(args="sh -c true"), "process.args", "a list of strings"),
    (lambda s: s["process"].update(env=["PATH"]), "process.env[0]", "NAME=value"),
    (lambda s: s["process"].update(cwd="tmp"), "process.cwd", "absolute"),
    (lambda s: s["process"]["user"].update(uid=-1), "process.user.uid", "at least 0"),
    (lambda s: s["process"]["capabilities"]["bounding"].append("KILL"), "process.capabilities.bounding[3]",
     "not a capability"),
    (lambda s: s["process"]["rlimits"][0].update(type="NOFILE"), "process.rlimits[0].type", "not an rlimit"),
    (lambda s: s["mounts"][0].update(destination="proc"), "mounts[0].destination", "absolute"),
    (lambda s: s["linux"]["namespaces"].append({"type": "pidns"}), "linux.namespaces[5].type", "not a namespace"),
    (lambda s: s["linux"]["resources"].update(memory={"limit": "64M"}), "linux.resources.memory.limit",
     "an integer"),
    (lambda s: s.pop("process"), "process", "is missing"),
    (lambda s: s["root"].update(path=""), "root.path", "missing or empty"),
    (lambda s: s["process"].update(noNewPrivileges="yes"), "process.noNewPrivileges", "true or false"),
])
def test_malformed_specs_name_the_field(tmp_path: Path, change: Any, field: str, words: str) -> None:
    spec = json.loads(json.dumps(ocispec.RUNC_DEFAULT_SPEC))
    spec["linux"]["namespaces"].insert(1, {"type": "network"})
    change(spec)
    bundle = _bundle(tmp_path, spec)
    with pytest.raises(ConfigError) as caught:
        ocispec.load_bundle(bundle)
    assert caught.value.exit_code == 2
    assert caught.value.where == f"{bundle / 'config.json'} ({field})"
    assert words in caught.value.problem


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, '{\n  "ociVersion": "1.0.2",\n  "process": {,}\n}\n')
    with pytest.raises(ConfigError) as caught:
        ocispec.load_bundle(bundle)
    assert caught.value.where.startswith(f"{bundle / 'config.json'}:3:")


def test_missing_root_and_empty_args_are_bad_input(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, dict(ocispec.RUNC_DEFAULT_SPEC, root={"path": "nowhere"}))
    with pytest.raises(UsageError, match="does not exist") as caught:
        ocispec.load_bundle(bundle)
    assert "root.path" in caught.value.where
    with pytest.raises(UsageError, match=r"no such directory|does not exist"):
        ocispec.default_config(tmp_path / "missing")
    empty = dict(ocispec.RUNC_DEFAULT_SPEC, process=dict(ocispec.RUNC_DEFAULT_SPEC["process"], args=[]))
    config = ocispec.load_bundle(_bundle(tmp_path, empty))
    with pytest.raises(UsageError, match="no command to run") as no_args:
        ocispec.with_args(config, [])
    assert "process.args" in no_args.value.where
    assert ocispec.with_args(config, ["true"]).args == ["true"]


def test_bind_source_must_exist(tmp_path: Path) -> None:
    spec = dict(ocispec.RUNC_DEFAULT_SPEC, mounts=[{"destination": "/d", "type": "bind", "source": "/no/such/dir"}])
    with pytest.raises(UsageError, match="does not exist on the host") as caught:
        ocispec.load_bundle(_bundle(tmp_path, spec))
    assert "mounts[0].source" in caught.value.where


def test_shared_storage_and_host_layout_follow_the_runtime() -> None:
    virtiofs = shared_storage("virtio-fs")
    assert (virtiofs.driver, virtiofs.source, virtiofs.fstype, list(virtiofs.options), virtiofs.mount_point) == \
        ("virtio-fs", "kataShared", "virtiofs", [], "/run/kata-containers/shared/containers/")
    ninep = shared_storage("virtio-9p")
    assert (ninep.driver, ninep.fstype) == ("9p", "9p")
    assert list(ninep.options) == ["trans=virtio,version=9p2000.L,cache=mmap", "nodev", "msize=8192"]
    paths = SandboxPaths(Path("/run/osbuilder"), "abc")
    assert paths.mounts == Path("/run/osbuilder/shared/sandboxes/abc/mounts")
    assert paths.shared == Path("/run/osbuilder/shared/sandboxes/abc/shared")
    assert paths.container_rootfs("c") == Path("/run/osbuilder/shared/sandboxes/abc/mounts/c/rootfs")
