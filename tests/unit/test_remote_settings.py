"""The remote cache's settings and its artifacts, without a registry: URLs, modes and credentials
(never echoed), and an entry packed as an artifact and checked against its key on the way back."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from osbuilder.cache import ENTRY_META, content_key
from osbuilder.errors import UsageError
from osbuilder.remote import artifact
from osbuilder.remote.client import RegistryError
from osbuilder.remote.settings import Mode, credentials, parse_endpoint, settings

SECRET = "hunter2-secret"


def test_urls() -> None:
    https = parse_endpoint("oci://ghcr.io/owner/osbuilder-cache")
    assert (https.host, https.repository, https.plain_http) == ("ghcr.io", "owner/osbuilder-cache", False)
    plain = parse_endpoint("oci+http://127.0.0.1:5000/cache")
    assert plain.plain_http and plain.url == "oci+http://127.0.0.1:5000/cache"
    assert plain.reference("a" * 64) == f"127.0.0.1:5000/cache:{'a' * 64}"
    for bad in ("http://ghcr.io/x", "oci://ghcr.io/Owner/Cache", "oci://ghcr.io:99999/x", "oci://ghcr.io/", "ghcr.io/x"):
        with pytest.raises(UsageError):
            parse_endpoint(bad)


def test_credentials_in_the_url_are_refused_without_being_shown() -> None:
    with pytest.raises(UsageError) as caught:
        parse_endpoint(f"oci://ci:{SECRET}@ghcr.io/owner/cache")
    assert SECRET not in str(caught.value) and SECRET not in json.dumps(caught.value.to_json())
    assert "OSBUILDER_REGISTRY_AUTH" in caught.value.fix


def test_settings_come_from_the_options_or_the_environment(tmp_path: Path) -> None:
    assert settings(None, None, False, None, {}) is None
    chosen = settings(None, None, False, None, {"OSBUILDER_REMOTE_CACHE": "oci+http://127.0.0.1:5000/c",
                                                 "OSBUILDER_REMOTE_CACHE_MODE": "pull",
                                                 "OSBUILDER_REMOTE_CACHE_TIMEOUT": "2.5"})
    assert chosen is not None and chosen.mode is Mode.PULL and chosen.timeout == 2.5
    assert not chosen.mode.pushes and chosen.mode.pulls
    given = settings("oci://ghcr.io/o/c", "push", True, None, {"OSBUILDER_REMOTE_CACHE_MODE": "pull"})
    assert given is not None and given.mode is Mode.PUSH and given.required
    with pytest.raises(UsageError, match="without a remote cache"):
        settings(None, None, True, None, {})
    with pytest.raises(UsageError, match="unknown mode"):
        settings("oci://ghcr.io/o/c", "both", False, None, {})
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(UsageError, match="plain HTTP"):
        settings("oci+http://127.0.0.1:5000/c", None, False, ca, {})
    with pytest.raises(UsageError, match="seconds"):
        settings("oci://ghcr.io/o/c", None, False, None, {"OSBUILDER_REMOTE_CACHE_TIMEOUT": "soon"})


def test_credentials_from_the_variable_or_the_docker_configuration(tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert credentials("ghcr.io", env) is None
    found = credentials("ghcr.io", {**env, "OSBUILDER_REGISTRY_AUTH": f"ci:{SECRET}:with-colon"})
    assert found is not None and (found.username, found.password) == ("ci", f"{SECRET}:with-colon")
    assert SECRET not in repr(found)
    with pytest.raises(UsageError) as caught:
        credentials("ghcr.io", {**env, "OSBUILDER_REGISTRY_AUTH": SECRET})
    assert SECRET not in str(caught.value)
    encoded = base64.b64encode(f"robot:{SECRET}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://ghcr.io": {"auth": encoded}, "registry.local:5000": {"username": "u", "password": "p"},
        "broken.local": {"auth": base64.b64encode(SECRET.encode()).decode()}}}))
    from_file = credentials("ghcr.io", env)
    assert from_file is not None and (from_file.username, from_file.password) == ("robot", SECRET)
    assert from_file.source.endswith("(auths.https://ghcr.io)")
    plain = credentials("registry.local:5000", env)
    assert plain is not None and plain.username == "u"
    with pytest.raises(UsageError) as broken:
        credentials("broken.local", env)
    assert SECRET not in str(broken.value)


def _entry(tmp_path: Path, kind: str = "kernel") -> tuple[Path, str]:
    inputs = {"kind": kind, "version": "6.12", "toolchain": {"gcc": "12.2"}}
    key = content_key(inputs)
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "vmlinux-6.12").write_bytes(b"\0" * 20000 + b"kernel")  # compresses: a zstd layer
    (entry / "config-6.12").write_text("CONFIG_X=y\n")  # small: stored
    os.symlink("vmlinux-6.12", entry / "vmlinux.container")
    (entry / ENTRY_META).write_text(json.dumps({"kind": kind, "key": key, "created": 1, "inputs": inputs,
                                                "name": "6.12"}))
    return entry, key


def test_an_entry_packs_to_a_reproducible_artifact_that_checks_against_its_key(tmp_path: Path) -> None:
    entry, key = _entry(tmp_path)
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    packed = artifact.pack(entry, "kernel", key, tmp_path / "one", env)
    again = artifact.pack(entry, "kernel", key, tmp_path / "two", env)
    assert packed.manifest == again.manifest  # the same entry, the same manifest (and so the same digest)
    annotations = packed.manifest["annotations"]
    assert annotations["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert annotations["dev.osbuilder.step"] == "kernel" and annotations["dev.osbuilder.key"] == key
    types = {layer.descriptor["annotations"][artifact.TITLE]: layer.descriptor["mediaType"] for layer in packed.layers}
    assert types == {"config-6.12": artifact.FILE_TYPE, "vmlinux-6.12": artifact.ZSTD_TYPE}
    step, _config, layers = artifact.read_manifest(packed.manifest, "kernel", key)
    read = artifact.read_config(packed.config.read_bytes(), "kernel", key, layers)
    assert step == "kernel" and read.symlinks == (("vmlinux.container", "vmlinux-6.12"),)
    assert "created" not in read.meta and read.meta["name"] == "6.12"
    # Back into a staging directory: every file verified.
    staging = tmp_path / "staging"
    staging.mkdir()
    for layer, record in zip(packed.layers, read.files, strict=True):
        blob = tmp_path / f"blob-{record.path}"
        blob.write_bytes(layer.blob.read_bytes())
        artifact.place_file(blob, layer.descriptor["mediaType"], record, staging)
    artifact.place_symlinks(read, staging)
    assert (staging / "vmlinux.container").read_bytes() == (entry / "vmlinux-6.12").read_bytes()


def test_a_file_zstd_barely_shrinks_is_stored_as_it_is(tmp_path: Path) -> None:
    entry, key = _entry(tmp_path)
    (entry / "initrd.img").write_bytes(os.urandom(64 << 10))  # already compressed, in effect
    (tmp_path / "work").mkdir()
    packed = artifact.pack(entry, "kernel", key, tmp_path / "work")
    titles = [layer.descriptor["annotations"][artifact.TITLE] for layer in packed.layers]
    stored = packed.layers[titles.index("initrd.img")]
    assert stored.descriptor["mediaType"] == artifact.FILE_TYPE and stored.blob == entry / "initrd.img"
    assert not (tmp_path / "work" / f"{titles.index('initrd.img')}.zst").exists()  # its zstd not kept


def _refused(body: dict[str, Any], key: str, layers: list[dict[str, Any]], kind: str = "kernel") -> str:
    with pytest.raises(RegistryError) as caught:
        artifact.read_config(json.dumps(body).encode(), kind, key, layers)
    assert not caught.value.unavailable
    return caught.value.problem


def test_what_does_not_match_its_key_is_refused(tmp_path: Path) -> None:
    entry, key = _entry(tmp_path)
    (tmp_path / "work").mkdir()
    packed = artifact.pack(entry, "kernel", key, tmp_path / "work")
    config = json.loads(packed.config.read_bytes())
    layers = packed.manifest["layers"]
    forged = json.loads(json.dumps(config))
    forged["meta"]["inputs"]["version"] = "6.13"
    assert "records inputs whose digest is" in _refused(forged, key, layers)
    assert "points at another entry" in _refused(config, key, layers, kind="rootfs")
    escaping = json.loads(json.dumps(config))
    escaping["files"][0]["path"] = "../../etc/passwd"
    assert "would leave the entry" in _refused(escaping, key, layers)
    outside = json.loads(json.dumps(config))
    outside["symlinks"][0]["target"] = "/etc/shadow"
    assert "outside the entry" in _refused(outside, key, layers)
    with pytest.raises(RegistryError, match="not an agent entry"):
        artifact.read_manifest(packed.manifest, "agent", key)
    record = artifact.read_config(packed.config.read_bytes(), "kernel", key, layers).files[0]
    tampered = tmp_path / "tampered"
    tampered.write_bytes(b"something else")
    (tmp_path / "staging").mkdir()
    with pytest.raises(RegistryError, match="does not match the sha256"):
        artifact.place_file(tampered, artifact.FILE_TYPE, record, tmp_path / "staging")
