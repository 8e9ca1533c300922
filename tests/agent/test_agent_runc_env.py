"""The environment the agent builds for a container equals what host `runc run` builds for the same
config.json: hostname, PID, /dev, capabilities, no_new_privs, user and groups, HOME, rlimits, cwd,
environment, and the mounts (mount point, filesystem type, per-mount options, in order) from
/proc/self/mountinfo. /sys/fs/cgroup is left out: runc mounts this cgroup v1 host's hierarchies there,
the agent cgroup2. Both run the same busybox root, each from its own copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import AgentProcess, Harness, Workloads  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration

PROBE = ("hostname; echo $$; ls -l /dev; grep -E '^(Cap|NoNewPrivs|Groups)' /proc/self/status; id; "
         "echo HOME=$HOME; ulimit -n; cat /proc/self/oom_score_adj; pwd; env | sort; echo ---; "
         "cat /proc/self/mountinfo")


def mounts(mountinfo: str) -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, per-mount options) in order, without /sys/fs/cgroup."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        point, options, fstype = fields[4], fields[5], fields[fields.index("-") + 1]
        if point == "/sys/fs/cgroup" or point.startswith("/sys/fs/cgroup/"):
            continue
        out.append((point, fstype, options))
    return out


def split_probe(stdout: bytes) -> tuple[list[str], list[tuple[str, str, str]]]:
    text = stdout.decode()
    head, _, mountinfo = text.partition("---\n")
    return head.splitlines(), mounts(mountinfo)


def runc_run(bundle: Path, spec: dict[str, Any]) -> tuple[int, bytes, bytes]:
    (bundle / "config.json").write_text(json.dumps(spec))
    cid = f"osb-env-{uuid.uuid4().hex[:12]}"
    try:
        proc = subprocess.run(["runc", "run", "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60)
    finally:
        subprocess.run(["runc", "delete", "--force", cid], capture_output=True)
    return proc.returncode, proc.stdout, proc.stderr


def copy_root(busybox_root: Path, dest: Path) -> Path:
    shutil.copytree(busybox_root, dest, symlinks=True)
    return dest


def default_spec(spec: dict[str, Any], tmp_path: Path) -> None:
    del spec, tmp_path


def user_spec(spec: dict[str, Any], tmp_path: Path) -> None:
    del tmp_path
    spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [7, 50]}
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]
    spec["process"]["cwd"] = "/home/tester"
    spec["process"]["oomScoreAdj"] = 100


def mounts_spec(spec: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "file").write_text("shared\n")
    spec["root"]["readonly"] = False
    spec["process"]["cwd"] = "/work/dir"  # created when missing, as runc does
    spec["process"]["env"].append("EXTRA=1")
    spec["mounts"] += [
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]},
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/etc/hostfile", "type": "bind", "source": str(data / "file"), "options": ["bind"]},
    ]
    spec["linux"]["maskedPaths"].append("/etc/group")
    spec["linux"]["readonlyPaths"].append("/etc")
    spec["linux"]["sysctl"] = {"kernel.domainname": "osb.example"}
    spec["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640,
                                 "uid": 0, "gid": 5}]
    spec["linux"]["rootfsPropagation"] = "rslave"


VARIANTS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "runc-spec-defaults": default_spec,
    "user-groups-rlimits": user_spec,
    "mounts-binds-paths": mounts_spec,
}


def compare(agent: AgentProcess, tmp_path: Path, busybox_root: Path, workloads: type[Workloads],
            variant: Callable[[dict[str, Any], Path], None]) -> None:
    runc_bundle = tmp_path / "runc"
    runc_bundle.mkdir()
    runc_root = copy_root(busybox_root, runc_bundle / "rootfs")
    ours_root = copy_root(busybox_root, tmp_path / "ours-rootfs")

    runc_spec = workloads.spec_json(runc_root, ["sh", "-c", PROBE])
    variant(runc_spec, tmp_path)
    code, runc_out, runc_err = runc_run(runc_bundle, runc_spec)
    assert code == 0, runc_err

    ours_spec = workloads.spec_json(ours_root, ["sh", "-c", PROBE])
    variant(ours_spec, tmp_path)
    with agent.connect(timeout=30) as c:
        c.create_sandbox(hostname="sandbox", sandbox_id="env")
        r = workloads.run(c, "env", workloads.to_proto(ours_spec))
    assert r.status == 0, r.stderr

    runc_head, runc_mounts = split_probe(runc_out)
    ours_head, ours_mounts = split_probe(r.stdout)
    assert ours_head == runc_head
    assert ours_mounts[0][0] == "/" and runc_mounts[0][0] == "/"
    assert ours_mounts == runc_mounts
    assert len(ours_mounts) >= 12  # the probe really saw the container's mounts


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_same_environment_as_runc(ns_agent: AgentProcess, tmp_path: Path, busybox_root: Path,
                                  workloads: type[Workloads], variant: str) -> None:
    compare(ns_agent, tmp_path, busybox_root, workloads, VARIANTS[variant])


def test_same_environment_as_runc_without_pivot_root(agent_binary: Path, run_agent: Callable[..., AgentProcess],
                                                     tmp_path: Path, busybox_root: Path,
                                                     workloads: type[Workloads], harness: type[Harness]) -> None:
    """As on an initramfs, where pivot_root fails: MS_MOVE + chroot gives the container the same view."""
    reason = harness.namespaces_usable()
    if reason:
        pytest.skip(reason)
    agent = run_agent(agent_binary, "--no-pivot-root", prefix=harness.namespaced_prefix(tmp_path))
    compare(agent, tmp_path, busybox_root, workloads, mounts_spec)
