"""Every byte a cached output records is covered by its key: what the host happens to have (pigz,
another mkfs release) and what versions.yaml says (the agent version a rootfs records, the busybox
pin) change the key of the step whose bytes they change, so an entry is the same bytes whichever
runner built it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbuilder.context import Context
from osbuilder.image.builder import ImageOptions
from osbuilder.initrd.builder import InitrdOptions
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS
from osbuilder.rootfs.plan import Request, plan


def _tool(directory: Path, name: str, version_line: str) -> None:
    """A stand-in that answers --version / -V like the real one, first on PATH."""
    directory.mkdir(exist_ok=True)
    script = directory / name
    script.write_text(f"#!/bin/sh\necho '{version_line}' >&2\necho '{version_line}'\n")
    script.chmod(0o755)


def _in_front(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def test_the_initrd_key_names_the_compressor_the_host_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = InitrdOptions(output=tmp_path / "i.img", compression="gzip")
    here = options.content_key("r" * 64, {"SOURCE_DATE_EPOCH": "1"})
    # pigz, when the host has it, compresses gzip initrds: other bytes, so another key.
    _tool(tmp_path / "bin", "pigz", "pigz 9.9")
    _in_front(monkeypatch, tmp_path / "bin")
    with_pigz = options.content_key("r" * 64, {"SOURCE_DATE_EPOCH": "1"})
    assert options.key_inputs("r" * 64, {"SOURCE_DATE_EPOCH": "1"})["compressor"] == "pigz 9.9"
    assert with_pigz != here
    uncompressed = InitrdOptions(output=tmp_path / "i.img", compression="none")
    assert uncompressed.key_inputs("r" * 64, {"SOURCE_DATE_EPOCH": "1"})["compressor"] is None


def test_the_image_key_names_the_mkfs_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = ImageOptions(output=tmp_path / "x.img", seed="s" * 64, source_date_epoch=1)
    here = options.content_key()
    _tool(tmp_path / "bin", "mke2fs", "mke2fs 9.99.9 (1-Jan-2030)")
    _in_front(monkeypatch, tmp_path / "bin")
    assert options.key_inputs()["tools"] == {"mke2fs": "mke2fs 9.99.9 (1-Jan-2030)"}
    assert options.content_key() != here


def _rootfs_key(tmp_path: Path, versions_text: str, request: Request) -> str:
    versions = tmp_path / f"versions-{abs(hash(versions_text))}.yaml"
    versions.write_text(versions_text)
    context = Context(versions_path=versions, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")
    context.cache.ensure()
    return plan(request, context.versions, context.recipe, context.cache.root, key_only=True,
                environment={"SOURCE_DATE_EPOCH": "1"}).cache_key


def test_the_rootfs_key_follows_the_agent_version_it_records(tmp_path: Path) -> None:
    # A given agent binary without a VERSION records versions.yaml's assets.agent.version.
    agent = tmp_path / "kata-agent"
    agent.write_bytes(Path("/bin/true").read_bytes())
    text = DEFAULT_VERSIONS.read_text()
    request = Request(distro="debian", release="bookworm", agent_init=True, agent=agent)
    base = _rootfs_key(tmp_path, text, request)
    assert _rootfs_key(tmp_path, text, request) == base
    assert _rootfs_key(tmp_path, _bump_agent_version(text), request) != base


def _bump_agent_version(text: str) -> str:
    start = text.index("\n  agent:\n")
    end = text.index('version: "4.1.0"', start)
    return text[:end] + 'version: "4.1.1"' + text[end + len('version: "4.1.0"'):]


def test_the_rootfs_key_follows_the_busybox_pin(tmp_path: Path) -> None:
    text = DEFAULT_VERSIONS.read_text()
    request = Request(distro="minimal", agent_init=True, agent=tmp_path / "kata-agent", busybox=True)
    (tmp_path / "kata-agent").write_bytes(Path("/bin/true").read_bytes())
    base = _rootfs_key(tmp_path, text, request)
    repinned = text.replace('sha256: "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744"',
                            'sha256: "' + "0" * 64 + '"')
    assert repinned != text
    assert _rootfs_key(tmp_path, repinned, request) != base
    # Without busybox the pin is nobody's input.
    plain = Request(distro="minimal", agent_init=True, agent=tmp_path / "kata-agent", busybox=False)
    assert _rootfs_key(tmp_path, repinned, plain) == _rootfs_key(tmp_path, text, plain)


def test_the_rootfs_key_and_manifest_name_the_kernel_modules_directory(tmp_path: Path) -> None:
    # The tree gets lib/modules/<name of DIR>: the same modules under another name are another rootfs.
    (tmp_path / "kata-agent").write_bytes(Path("/bin/true").read_bytes())
    for name in ("6.12.107-kata", "modules"):
        (tmp_path / name / "kernel").mkdir(parents=True)
        (tmp_path / name / "kernel" / "demo.ko").write_bytes(b"module")
    text = DEFAULT_VERSIONS.read_text()
    keys = {name: _rootfs_key(tmp_path, text, Request(distro="debian", release="bookworm", agent_init=True,
                                                      agent=tmp_path / "kata-agent",
                                                      kernel_modules=tmp_path / name))
            for name in ("6.12.107-kata", "modules")}
    assert keys["6.12.107-kata"] != keys["modules"]


def test_the_pinned_runtime_under_any_name_is_read_and_recorded_as_the_pinned_tarball(tmp_path: Path) -> None:
    from osbuilder.bundle.runtime import SHIM_MEMBERS, acquire_runtime
    from osbuilder.cache import sha256_file
    from tests.helpers.runtime import make_runtime_tarball

    tarball = make_runtime_tarball(tmp_path / "runtime", "4.1.0")
    digest = sha256_file(tarball)
    text = DEFAULT_VERSIONS.read_text()
    pinned = text.replace('sha256: "3dc6b69c4acb787b967b04b64599a20d02a8beb1a8eaab3084110df9d0b08c96"',
                          f'sha256: "{digest}"')
    assert pinned != text
    versions_file = tmp_path / "versions.yaml"
    versions_file.write_text(pinned)
    context = Context(versions_path=versions_file, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")
    url = context.versions.runtime_download("x86_64").url
    renamed = tmp_path / "elsewhere" / "runtime.bin"  # no tarball suffix: told by its content
    renamed.parent.mkdir()
    renamed.write_bytes(tarball.read_bytes())
    for given in (tarball, renamed):
        runtime = acquire_runtime(context.versions, context.fetcher, "x86_64", given, "4.1.0")
        assert (runtime.sha256, runtime.recorded) == (digest, url)
        assert runtime.files[SHIM_MEMBERS[0]].startswith(b"#!/bin/sh")  # the shim inside, not the tarball
    # Another runtime is recorded by its file name only.
    other = make_runtime_tarball(tmp_path / "other", "4.1.1")
    assert acquire_runtime(context.versions, context.fetcher, "x86_64", other, "4.1.1").recorded == other.name
