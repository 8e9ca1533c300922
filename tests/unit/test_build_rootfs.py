"""osbuilder build-rootfs end to end with the minimal recipe (no distribution, no network), and every
kind of bad input: exit 2, a clear message, and nothing left behind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli

SDE = "1700000000"


def _build(cache: Path, output: Path, agent: Path, *extra: str | os.PathLike[str],
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("--cache-dir", cache, "build-rootfs", "--distro", "minimal", "--agent", agent, "-o", output,
                   "--json", *extra, env={"SOURCE_DATE_EPOCH": SDE, **(env or {})})


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _nothing_left(parent: Path, cache: Path, before: set[str]) -> None:
    assert set(os.listdir(parent)) == before, "output or temporary files were left behind"
    if (cache / "rootfs").exists():
        assert list((cache / "rootfs").iterdir()) == []
    if (cache / "tmp").exists():
        assert list((cache / "tmp").iterdir()) == []


def _unstripped(agent: Path, destination: Path) -> Path:
    """The agent with a debug section added, so stripping it has something to remove."""
    debug = destination.with_suffix(".debug")
    debug.write_bytes(bytes(range(256)) * 16)
    subprocess.run(["objcopy", "--add-section", f".debug_osbuilder={debug}", agent, destination], check=True)
    return destination


def _section_names(binary: Path) -> set[str]:
    listing = subprocess.run(["readelf", "-SW", binary], check=True, capture_output=True, text=True).stdout
    return {word for line in listing.splitlines() for word in line.split() if word.startswith(".")}


def test_minimal_rootfs(tmp_path: Path, test_agent: Path) -> None:
    cache, output = tmp_path / "cache", tmp_path / "rootfs"
    unstripped = _unstripped(test_agent, tmp_path / "kata-agent")
    assert ".debug_osbuilder" in _section_names(unstripped)
    report = _json(_build(cache, output, unstripped))
    for key in ("ok", "output", "distro", "release", "arch", "init", "backend", "mode", "cache_hit", "cache_key",
                "packages", "agent_sha256", "duration"):
        assert key in report, key
    assert (report["distro"], report["init"], report["mode"], report["cache_hit"]) == ("minimal", "agent", "none",
                                                                                        False)
    init = output / "sbin" / "init"
    assert hashlib.sha256(init.read_bytes()).hexdigest() == report["agent_sha256"]
    assert ".debug_osbuilder" not in _section_names(init)  # stripped
    assert init.stat().st_size < unstripped.stat().st_size
    assert os.access(init, os.X_OK)
    for directory in ("dev", "proc", "sys", "run", "tmp", "etc", "var/lib/osbuilder"):
        assert (output / directory).is_dir(), directory
    assert os.readlink(output / "var" / "tmp") == "../tmp"
    assert (output / "etc" / "resolv.conf").read_bytes() == b""
    meta = yaml.safe_load((output / "var/lib/osbuilder/osbuilder.yaml").read_text())
    assert meta["base-distro"]["name"] == "minimal" and meta["agent"]["agent-is-init-daemon"] == "yes"
    assert meta["rootfs-creation-time"] == "2023-11-14T22:13:20.000000000+0000Z"
    manifest = json.loads((output / "var/lib/osbuilder/manifest.json").read_text())
    assert manifest["cache_key"] == report["cache_key"]
    assert report["cache_tarball"] == str(cache / "rootfs" / report["cache_key"] / "rootfs.tar")
    with tarfile.open(report["cache_tarball"]) as tarball:  # the tree, as later steps may read it
        assert tarball.getmember("./sbin/init").size == init.stat().st_size
    assert manifest["agent"]["sha256"] == report["agent_sha256"]
    assert manifest["agent"]["source_sha256"] == hashlib.sha256(unstripped.read_bytes()).hexdigest()
    assert manifest["recipe"]["name"] == "minimal" and len(manifest["recipe"]["sha256"]) == 64


def test_rebuild_is_a_cache_hit_and_no_cache_rebuilds(tmp_path: Path, test_agent: Path) -> None:
    cache = tmp_path / "cache"
    first = _json(_build(cache, tmp_path / "one", test_agent))
    second = _json(_build(cache, tmp_path / "two", test_agent))
    assert second["cache_hit"] is True and second["cache_key"] == first["cache_key"]
    assert "cache hit" in _build(cache, tmp_path / "three", test_agent, "-v").stderr
    third = _json(_build(cache, tmp_path / "two", test_agent, "--no-cache", "--force"))
    assert third["cache_hit"] is False and third["cache_key"] == first["cache_key"]
    changed = _json(_build(cache, tmp_path / "four", test_agent, "--agent-name", "other-agent"))
    assert changed["cache_hit"] is False and changed["cache_key"] != first["cache_key"]


def test_reproducible_from_separate_caches(tmp_path: Path, test_agent: Path) -> None:
    digests = []
    for name in ("a", "b"):
        report = _json(_build(tmp_path / f"cache-{name}", tmp_path / name, test_agent))
        tarball = tmp_path / f"cache-{name}" / "rootfs" / report["cache_key"] / "rootfs.tar"
        digests.append(hashlib.sha256(tarball.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_force_replaces_an_existing_output(tmp_path: Path, test_agent: Path) -> None:
    cache, output = tmp_path / "cache", tmp_path / "rootfs"
    output.mkdir()
    (output / "stale").write_text("old")
    refused = _build(cache, output, test_agent)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert (output / "stale").exists()
    _json(_build(cache, output, test_agent, "--force"))
    assert not (output / "stale").exists() and (output / "sbin" / "init").is_file()
    assert sorted(os.listdir(tmp_path)) == ["cache", "rootfs"]


@contextlib.contextmanager
def _unwritable(directory: Path) -> Iterator[None]:
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a directory immutable here (chattr +i)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)


def test_unwritable_output_parent(tmp_path: Path, test_agent: Path) -> None:
    parent = tmp_path / "readonly"
    parent.mkdir()
    cache = tmp_path / "cache"
    with _unwritable(parent):
        result = _build(cache, parent / "rootfs", test_agent)
        assert result.returncode == 2, result.stderr
        assert f"-o {parent / 'rootfs'}" in result.stderr and "cannot create" in result.stderr
        assert os.listdir(parent) == []
    _nothing_left(tmp_path, cache, {"readonly", "cache"} if cache.exists() else {"readonly"})


def test_output_inside_the_cache_is_refused(tmp_path: Path, test_agent: Path) -> None:
    # The cache keeps rootfs entries in <cache>/rootfs: `-o <cache>/rootfs` would be filled by them.
    cache = tmp_path / "cache"
    cache.mkdir()  # a cache in use
    result = _build(cache, cache / "rootfs", test_agent)
    assert result.returncode == 2, result.stderr
    assert f"-o {cache / 'rootfs'}" in result.stderr and "overlap" in result.stderr and "--cache-dir" in result.stderr
    assert not (cache / "rootfs").exists() or list((cache / "rootfs").iterdir()) == []


def test_forced_output_holding_the_cache_is_refused(tmp_path: Path, test_agent: Path) -> None:
    output, cache = tmp_path / "out", tmp_path / "out" / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "kept").write_text("a cached input\n")
    result = _build(cache, output, test_agent, "--force")
    assert result.returncode == 2, result.stderr
    assert "overlap" in result.stderr
    assert (cache / "downloads" / "kept").read_text() == "a cached input\n"
    assert sorted(os.listdir(output)) == ["cache"]


def _evil_tarball(path: Path, agent: Path) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(agent, "usr/bin/kata-agent")
        info = tarfile.TarInfo("usr/../../escape")
        data = b"gotcha\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    plain = path.with_suffix("")
    plain.write_bytes(buffer.getvalue())
    subprocess.run(["xz", "-f", str(plain)], check=True)
    return path


@pytest.mark.parametrize("case", ["distro", "release", "agent", "tarball", "parent", "epoch", "busybox", "extra"])
def test_bad_input_exits_2_and_leaves_nothing(tmp_path: Path, test_agent: Path, case: str) -> None:
    cache = tmp_path / "cache"
    output = tmp_path / "out" / "rootfs"
    (tmp_path / "out").mkdir()
    args: list[str | os.PathLike[str]] = ["--cache-dir", cache, "build-rootfs", "-o", output]
    env = {"SOURCE_DATE_EPOCH": SDE}
    agent: list[str | os.PathLike[str]] = ["--agent", test_agent]
    expected = {
        "distro": (["--distro", "ubunto", *agent], ["unknown distro 'ubunto'", "did you mean 'ubuntu'"]),
        "release": (["--distro", "ubuntu", "--os-version", "jammy", *agent], ["ubuntu has no release 'jammy'",
                                                                              "noble"]),
        "agent": (["--distro", "minimal", "--agent", tmp_path / "nope"], [f"{tmp_path / 'nope'} does not exist"]),
        "tarball": (["--distro", "minimal", "--agent-tarball", _evil_tarball(tmp_path / "a.tar.xz", test_agent)],
                    ["contains '..'", "--agent-tarball"]),
        "parent": (["--distro", "minimal", *agent], ["does not exist", "mkdir -p"]),
        "epoch": (["--distro", "minimal", *agent], ["SOURCE_DATE_EPOCH"]),
        "busybox": (["--distro", "ubuntu", "--busybox", *agent], ["--busybox is for the minimal recipe"]),
        "extra": (["--distro", "minimal", "--extra-pkgs", "strace", *agent], ["minimal installs no packages"]),
    }[case]
    if case == "parent":
        args[args.index(output)] = tmp_path / "missing" / "rootfs"
    if case == "epoch":
        env["SOURCE_DATE_EPOCH"] = "yesterday"
    before = set(os.listdir(tmp_path))
    result = run_cli(*args, *expected[0], env=env)
    assert result.returncode == 2, result.stderr
    for text in expected[1]:
        assert text in result.stderr, (text, result.stderr)
    assert os.listdir(tmp_path / "out") == []
    _nothing_left(tmp_path, cache, before | ({"cache"} if cache.exists() else set()))


def test_a_damaged_tarball_installs_nothing(tmp_path: Path) -> None:
    from osbuilder.errors import BuildError, CommandError
    from osbuilder.rootfs.install import install

    damaged = tmp_path / "rootfs.tar"
    damaged.write_bytes(b"not a tar archive" * 100)
    output = tmp_path / "rootfs"
    with pytest.raises(CommandError) as failed:
        install(damaged, output)
    assert "unpacking the rootfs" in failed.value.problem and failed.value.exit_code == 1
    assert sorted(os.listdir(tmp_path)) == ["rootfs.tar"]
    damaged.write_bytes(b"\0" * 1024)  # an end-of-archive marker: tar unpacks nothing and succeeds
    with pytest.raises(BuildError, match="has no /var/lib/osbuilder/osbuilder.yaml") as empty:
        install(damaged, output)
    assert "--no-cache" in empty.value.fix
    assert sorted(os.listdir(tmp_path)) == ["rootfs.tar"]


def test_an_output_filled_during_the_build_is_kept(tmp_path: Path, test_agent: Path) -> None:
    from osbuilder.errors import BuildError
    from osbuilder.rootfs.install import Installer

    report = _json(_build(tmp_path / "cache", tmp_path / "first", test_agent))
    tarball = tmp_path / "cache" / "rootfs" / report["cache_key"] / "rootfs.tar"
    output = tmp_path / "second"
    installer = Installer(output)
    with tarball.open("rb") as source:
        installer.start(source)
        output.mkdir()
        (output / "theirs").write_text("someone else's")
        with pytest.raises(BuildError, match="filled by something else"):
            installer.finish()
    installer.abort()
    assert os.listdir(output) == ["theirs"]
    assert sorted(os.listdir(tmp_path)) == ["cache", "first", "second"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_no_in_place_bootstrap_where_a_chroot_cannot_run(tmp_path: Path) -> None:
    from osbuilder.rootfs.bootstrappers.mmdebstrap import chroot_possible as _chroot_possible

    assert _chroot_possible(tmp_path)
    mountpoint = tmp_path / "noexec"
    mountpoint.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec", "none", str(mountpoint)]).returncode:
        pytest.skip("cannot mount here")
    try:
        assert not _chroot_possible(mountpoint)  # the build bootstraps a tarball there instead
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_split_unpack_gives_the_same_tree(tmp_path: Path) -> None:
    from osbuilder.rootfs.install import Installer, Split
    from osbuilder.rootfs.tree import RootfsTree
    from tests.helpers.rootfsinspect import disk_state

    tree = RootfsTree(None, mtime=1700000000)
    for index in range(700):
        tree.put_file(f"usr/lib/pkg{index % 7}/file{index}", f"{index}\n".encode())
        tree.put_file(f"etc/conf{index % 5}/file{index}", b"x", mode=0o600)
    tree.put_file("usr/bin/tool", b"tool", mode=0o755)
    tree.put_hardlink("usr/bin/tool2", "usr/bin/tool")
    tree.put_symlink("usr/lib/pkg0/link", "../pkg1")
    tree.put_file("var/lib/osbuilder/osbuilder.yaml", b"---\n")
    split = Split.of(tree)
    assert split is not None and split.root in ("etc", "usr") and "" in split.mtimes
    tarball = tmp_path / "rootfs.tar"
    tree.write(tarball)
    states = []
    for name, how in (("serial", None), ("split", split)):
        installer = Installer(tmp_path / name)
        installer.unpack(tarball, how)
        installer.finish()
        states.append(disk_state(tmp_path / name))
    assert states[0] == states[1]
    assert Split.from_json(json.loads(json.dumps(split.to_json()))) == split
    tree.put_hardlink("etc/crossing", "usr/lib/pkg1/file1")  # no half of the tree stands alone now
    assert Split.of(tree) is None
