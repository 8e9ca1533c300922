"""The remote cache when things go wrong, against the real CNCF distribution registry: a registry
stopped mid-push, a blob damaged on the registry's disk, wrong credentials (TLS and htpasswd), a tag
that points at another entry, a registry that is down or hangs. Each is said once and the build goes
on locally (or fails with --remote-cache-required); nothing half-pushed or unverified is ever used,
and no credential appears in any output."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from osbuilder.cache import sha256_file
from osbuilder.remote.client import RegistryClient
from osbuilder.remote.settings import RemoteSettings, parse_endpoint
from tests.conftest import run_cli
from tests.helpers.registry import REPOSITORY, Registry
from tests.helpers.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

USER = "osbuilder-ci"
PASSWORD = "s3cret-Pa55-not-in-logs"
UNUSABLE = "is not usable, the build goes on without it"


def _minimal_rootfs(cache: Path, output: Path, agent: Path, *remote: str, env: dict[str, str] | None = None
                    ) -> subprocess.CompletedProcess[str]:
    return run_cli("--cache-dir", cache, *remote, "build-rootfs", "--distro", "minimal", "--busybox", "--agent",
                   agent, "-o", output, "--json", env={"SOURCE_DATE_EPOCH": "1700000000", **(env or {})},
                   timeout=900)


def _report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _manifest(registry: Registry, key: str) -> dict[str, Any]:
    answer = requests.get(f"http://{registry.host}/v2/{REPOSITORY}/manifests/{key}", timeout=10,
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def _client(registry: Registry) -> RegistryClient:
    client = RegistryClient(RemoteSettings(parse_endpoint(registry.url)), None)
    client.connect()
    return client


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    started = Registry(tmp_path / "registry").start()
    try:
        yield started
    finally:
        started.stop()


def test_a_registry_stopped_mid_push_leaves_nothing_to_pull(tmp_path: Path, registry: Registry,
                                                             test_agent: Path) -> None:
    # The registry dies once 256 KiB of the rootfs's layer have reached it: blobs go first, so no
    # manifest (no tag) can exist for what was being pushed.
    proxy = TcpProxy(registry.port, after_bytes=256 << 10, then=registry.stop).start()
    try:
        through = f"oci+http://127.0.0.1:{proxy.port}/{REPOSITORY}"
        result = _minimal_rootfs(tmp_path / "a", tmp_path / "rootfs-a", test_agent, "--remote-cache", through,
                                 "--remote-cache-mode", "push")
    finally:
        proxy.stop()
    built = _report(result)
    assert proxy.fired.is_set()
    assert built["cache"] == "built" and built["remote_cache"]["pushed"] == []
    assert built["remote_cache"]["error"]["problem"].startswith("cannot reach")
    assert result.stderr.count(UNUSABLE) == 1
    registry.start()  # the same storage, as after a restart
    assert built["cache_key"] not in registry.tags()
    pulled = _report(_minimal_rootfs(tmp_path / "b", tmp_path / "rootfs-b", test_agent, "--remote-cache",
                                     registry.url, "--remote-cache-mode", "pull"))
    assert pulled["cache"] == "built"
    assert pulled["remote_cache"]["missing"] == [{"kind": "rootfs", "key": built["cache_key"]}]
    assert pulled["remote_cache"]["refused"] == [] and pulled["remote_cache"]["error"] is None


def test_a_damaged_blob_is_refused_by_its_digest_and_rebuilt(tmp_path: Path, registry: Registry,
                                                              test_agent: Path) -> None:
    pushed = _report(_minimal_rootfs(tmp_path / "a", tmp_path / "rootfs-a", test_agent, "--remote-cache",
                                     registry.url, "--remote-cache-mode", "push"))
    key = pushed["cache_key"]
    assert [entry["key"] for entry in pushed["remote_cache"]["pushed"]] == [key]
    largest = max(_manifest(registry, key)["layers"], key=lambda layer: layer["size"])
    blob = registry.blob_path(largest["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit flipped on the registry's disk; the size stays
    blob.write_bytes(bytes(data))
    result = _minimal_rootfs(tmp_path / "b", tmp_path / "rootfs-b", test_agent, "--remote-cache", registry.url,
                             "--remote-cache-mode", "pull")
    rebuilt = _report(result)
    assert rebuilt["cache"] == "built"
    refused = rebuilt["remote_cache"]["refused"]
    assert len(refused) == 1 and refused[0]["key"] == key and "does not match its digest" in refused[0]["problem"]
    assert "refused the remote rootfs entry" in result.stderr and "building it here" in result.stderr
    # Built here, from nothing that was downloaded: the same bytes as the first machine's.
    entry_b = tmp_path / "b" / "rootfs" / key
    assert "pulled" not in json.loads((entry_b / ".osbuilder-cache.json").read_text())
    assert sha256_file(entry_b / "rootfs.tar") == sha256_file(tmp_path / "a" / "rootfs" / key / "rootfs.tar")


def test_a_tag_that_points_at_another_entry_is_refused(tmp_path: Path, registry: Registry, test_agent: Path) -> None:
    agent = _report(run_cli("--cache-dir", tmp_path / "a", "--remote-cache", registry.url, "build-agent", "-o",
                            tmp_path / "agent", "--json"))
    rootfs = _report(_minimal_rootfs(tmp_path / "a", tmp_path / "rootfs-a", test_agent, "--remote-cache",
                                     registry.url))
    client = _client(registry)
    # 1. The agent's tag made to name the rootfs's artifact.
    client.put_manifest(_manifest(registry, rootfs["cache_key"]), agent["cache_key"])
    other_kind = _report(run_cli("--cache-dir", tmp_path / "b", "--remote-cache", registry.url, "build-agent", "-o",
                                 tmp_path / "agent-b", "--json"))
    assert other_kind["cache"] == "built"
    assert "holds a rootfs entry, not an agent entry" in other_kind["remote_cache"]["refused"][0]["problem"]
    # 2. An agent artifact whose recorded inputs are not the ones its tag is the digest of.
    manifest = _manifest(registry, rootfs["cache_key"])
    forged = tmp_path / "forged-config.json"
    config = json.loads(requests.get(f"http://{registry.host}/v2/{REPOSITORY}/blobs/{manifest['config']['digest']}",
                                     timeout=10).content)
    config["kind"], config["key"] = "agent", agent["cache_key"]
    forged.write_bytes(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    descriptor = {"mediaType": manifest["config"]["mediaType"], "size": forged.stat().st_size,
                  "digest": "sha256:" + sha256_file(forged)}
    client.upload(forged, descriptor)
    manifest["config"] = descriptor
    manifest["annotations"]["dev.osbuilder.step"] = "agent"
    client.put_manifest(manifest, agent["cache_key"])
    other_inputs = _report(run_cli("--cache-dir", tmp_path / "c", "--remote-cache", registry.url, "build-agent", "-o",
                                   tmp_path / "agent-c", "--json"))
    assert other_inputs["cache"] == "built" and other_inputs["sha256"] == agent["sha256"]
    assert "records inputs whose digest is" in other_inputs["remote_cache"]["refused"][0]["problem"]


def test_credentials_tls_and_a_401_said_once_and_never_shown(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", tls=True, users={USER: PASSWORD}).start()
    outputs: list[str] = []

    def osbuilder(cache: str, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = run_cli("-vv", "--cache-dir", tmp_path / cache, "--remote-cache", registry.url, *args,
                         env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config"), **(env or {})})
        outputs.extend((result.stdout, result.stderr))
        return result

    try:
        assert registry.ca is not None
        ca = ("--remote-cache-ca", str(registry.ca))
        # Not trusting the throwaway CA: said once, built locally.
        untrusted = osbuilder("a", "build-agent", "-o", tmp_path / "agent-a", "--json")
        assert json.loads(untrusted.stdout)["cache"] == "built"
        assert "TLS failed" in untrusted.stderr and untrusted.stderr.count(UNUSABLE) == 1
        # Wrong credentials: one clear 401, the build goes on; required, it fails.
        wrong = osbuilder("b", *ca, "build-agent", "-o", tmp_path / "agent-b", "--json",
                          env={"OSBUILDER_REGISTRY_AUTH": f"{USER}:wrong-{PASSWORD[::-1]}"})
        report = json.loads(wrong.stdout)
        assert wrong.returncode == 0 and report["cache"] == "built"
        assert report["remote_cache"]["error"]["status"] == 401
        assert wrong.stderr.count("refused the credentials (401") == 1 and wrong.stderr.count(UNUSABLE) == 1
        assert "OSBUILDER_REGISTRY_AUTH" in wrong.stderr  # where they came from, never what they are
        required = osbuilder("c", *ca, "--remote-cache-required", "build-agent", "-o", tmp_path / "agent-c",
                             env={"OSBUILDER_REGISTRY_AUTH": f"{USER}:wrong"})
        assert required.returncode == 1 and "401" in required.stderr
        assert not (tmp_path / "agent-c").exists()
        # The right ones, from a docker configuration file: pushed; then pulled with the variable.
        docker = tmp_path / "docker"
        docker.mkdir()
        (docker / "config.json").write_text(json.dumps({"auths": {registry.host: {
            "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
        pushed = osbuilder("d", *ca, "build-agent", "-o", tmp_path / "agent-d", "--json",
                           env={"DOCKER_CONFIG": str(docker)})
        assert [entry["kind"] for entry in json.loads(pushed.stdout)["remote_cache"]["pushed"]] == ["agent"]
        pulled = osbuilder("e", *ca, "build-agent", "-o", tmp_path / "agent-e", "--json",
                           env={"OSBUILDER_REGISTRY_AUTH": f"{USER}:{PASSWORD}"})
        assert json.loads(pulled.stdout)["cache"] == "remote"
        assert sha256_file(tmp_path / "agent-e") == sha256_file(tmp_path / "agent-d")
    finally:
        registry.stop()
    secrets = (PASSWORD, PASSWORD[::-1], base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    assert outputs and not [text for text in outputs for secret in secrets if secret in text]


def test_a_registry_that_is_down_hangs_or_fails_is_said_once(tmp_path: Path) -> None:
    silent = TcpProxy(None).start()  # accepts, never answers
    try:
        hangs = run_cli("--cache-dir", tmp_path / "a", "--remote-cache", f"oci+http://127.0.0.1:{silent.port}/x",
                        "build-agent", "-o", tmp_path / "agent-a", "--json",
                        env={"OSBUILDER_REMOTE_CACHE_TIMEOUT": "2"})
    finally:
        silent.stop()
    report = _report(hangs)
    assert report["cache"] == "built" and "did not answer within 2 s" in report["remote_cache"]["error"]["problem"]
    assert hangs.stderr.count(UNUSABLE) == 1
    down_url = f"oci+http://127.0.0.1:{TcpProxy(None).port}/x"  # a port nobody listens on any more
    down = run_cli("--cache-dir", tmp_path / "b", "--remote-cache", down_url, "build-agent", "-o",
                   tmp_path / "agent-b", "--json")
    assert _report(down)["cache"] == "built" and down.stderr.count(UNUSABLE) == 1
    required = run_cli("--cache-dir", tmp_path / "c", "--remote-cache", down_url, "--remote-cache-required",
                       "build-agent", "-o", tmp_path / "agent-c")
    assert required.returncode == 1 and "cannot reach" in required.stderr
    for status in ("500 Internal Server Error", "404 Not Found"):  # 404: not a registry (a web server)
        answered = _with_a_server_that_answers(status, tmp_path / status[:3])
        report = _report(answered)
        assert report["cache"] == "built" and report["remote_cache"]["error"]["status"] == int(status[:3])
        assert answered.stderr.count(UNUSABLE) == 1 and f"answered {status[:3]}" in answered.stderr
        # Once for the run, not once per entry (the pull, then the push).
        assert "refused the remote" not in answered.stderr and "could not push" not in answered.stderr


def _with_a_server_that_answers(status: str, work: Path) -> subprocess.CompletedProcess[str]:
    """build-agent against a server that answers every request with `status`."""
    work.mkdir()
    server = TcpProxy(None, answer=f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode()).start()
    try:
        return run_cli("--cache-dir", work / "cache", "--remote-cache", f"oci+http://127.0.0.1:{server.port}/x",
                       "build-agent", "-o", work / "agent", "--json")
    finally:
        server.stop()


def test_cache_push_and_pull_move_entries_by_key(tmp_path: Path, registry: Registry) -> None:
    built = _report(run_cli("--cache-dir", tmp_path / "a", "build-agent", "-o", tmp_path / "agent", "--json"))
    key = built["cache_key"]
    remote = ("--remote-cache", registry.url, "--remote-cache-mode", "pull")  # the mode does not apply
    pushed = _report(run_cli("--cache-dir", tmp_path / "a", *remote, "cache", "push", f"agent/{key}", "--json"))
    assert pushed["entries"] == [{"kind": "agent", "key": key, "result": "pushed"}]
    again = _report(run_cli("--cache-dir", tmp_path / "a", *remote, "cache", "push", key, "--json"))
    assert again["entries"][0]["result"] == "present"
    pulled = _report(run_cli("--cache-dir", tmp_path / "b", *remote, "cache", "pull", key, "--json"))
    assert pulled["entries"] == [{"kind": "agent", "key": key, "result": "pulled"}]
    assert sha256_file(tmp_path / "b" / "agent" / key / "kata-agent") == built["sha256"]
    missing = run_cli("--cache-dir", tmp_path / "b", *remote, "cache", "pull", "0" * 64)
    assert missing.returncode == 1 and "has no entry 0000000000000000" in missing.stderr
    unknown = run_cli("--cache-dir", tmp_path / "b", *remote, "cache", "push", "1" * 64)
    assert unknown.returncode == 2 and "no entry 1111111111111111 in the local cache" in unknown.stderr
    registry.stop()
    down = run_cli("--cache-dir", tmp_path / "a", *remote, "cache", "push", key)
    assert down.returncode == 1 and "cannot reach" in down.stderr
