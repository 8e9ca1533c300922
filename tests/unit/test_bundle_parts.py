"""Bundle pieces without a build: configuration templates, the reproducible tarball, safe
extraction, the runtime's version and the matching rule, the CI matrix."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path

import pytest

from osbuilder.arch import ARCHES
from osbuilder.bundle.builder import _kernel_inputs
from osbuilder.bundle.configs import ConfigSpec, render
from osbuilder.bundle.extract import check_members
from osbuilder.bundle.runtime import Runtime, _from_local, _shim_version, recorded_source, require_match
from osbuilder.bundle.tarball import write_tar_zst
from osbuilder.errors import BuildError, UsageError
from tests.conftest import run_cli

X86 = ARCHES["x86_64"]
LINE = "root_hash=" + "a" * 64 + ",salt=" + "b" * 64 + ",data_blocks=10,data_block_size=4096,hash_block_size=4096"


def test_configurations_render_valid_toml() -> None:
    image = tomllib.loads(render(ConfigSpec("c.toml", "qemu", "vmlinux.container", image="kata-containers.img"), X86))
    qemu = image["hypervisor"]["qemu"]
    assert qemu["image"] == "/opt/kata/share/kata-containers/kata-containers.img" and "initrd" not in qemu
    assert qemu["disable_image_nvdimm"] is False and qemu["path"] == "/opt/kata/bin/qemu-system-x86_64"
    initrd = tomllib.loads(render(ConfigSpec("c.toml", "qemu", "vmlinux.container", initrd="i.img"), X86))
    assert "image" not in initrd["hypervisor"]["qemu"] and "kernel_verity_params" not in initrd["hypervisor"]["qemu"]
    measured = tomllib.loads(render(ConfigSpec("c.toml", "qemu", "k", image="m.img", verity_line=LINE,
                                               kernel_params='a="b c"'), X86))
    assert measured["hypervisor"]["qemu"]["kernel_verity_params"] == LINE
    assert measured["hypervisor"]["qemu"]["kernel_params"] == 'a="b c"'  # quoting survives
    for hypervisor in ("clh", "fc"):
        data = tomllib.loads(render(ConfigSpec("c.toml", hypervisor, "k", image="i.img"), X86))
        assert next(iter(data["hypervisor"].values()))["disable_image_nvdimm"] is True
    with pytest.raises(ValueError, match="exactly one"):
        render(ConfigSpec("c.toml", "qemu", "k", image="i", initrd="r"), X86)


def _tree(root: Path) -> Path:
    (root / "opt/kata/bin").mkdir(parents=True)
    (root / "opt/kata/bin/tool").write_text("#!/bin/sh\n")
    (root / "opt/kata/bin/tool").chmod(0o700)
    (root / "opt/kata/VERSION").write_text("1.0\n")
    (root / "opt/kata/link").symlink_to("VERSION")
    return root


def _members(tarball: Path) -> list[tarfile.TarInfo]:
    raw = subprocess.run(["zstd", "-d", "-c", str(tarball)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        return archive.getmembers()


def test_tarball_is_reproducible_sorted_and_owned_by_root(tmp_path: Path) -> None:
    first = _tree(tmp_path / "a")
    write_tar_zst(first, tmp_path / "one.tar.zst", epoch=1_700_000_000)
    time.sleep(1.1)
    second = _tree(tmp_path / "b")
    write_tar_zst(second, tmp_path / "two.tar.zst", epoch=1_700_000_000)
    assert (tmp_path / "one.tar.zst").read_bytes() == (tmp_path / "two.tar.zst").read_bytes()
    members = _members(tmp_path / "one.tar.zst")
    names = [member.name for member in members]
    assert names == [".", "./opt", "./opt/kata", "./opt/kata/VERSION", "./opt/kata/bin", "./opt/kata/bin/tool",
                     "./opt/kata/link"]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "root", "root")}
    assert {m.mtime for m in members} == {1_700_000_000}
    modes = {m.name: m.mode for m in members}
    assert modes["./opt/kata/bin/tool"] == 0o755 and modes["./opt/kata/VERSION"] == 0o644


def test_tarball_refuses_special_files_and_leaves_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    os.mkfifo(root / "opt/kata/fifo")
    with pytest.raises(BuildError, match="not a file, directory or symlink"):
        write_tar_zst(root, tmp_path / "out.tar.zst", epoch=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t"]


def _bad_tarball(path: Path, member: tarfile.TarInfo) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    path.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True).stdout)
    return path


@pytest.mark.parametrize("name,link", [("../evil", ""), ("/etc/evil", ""), ("opt/link", "../../../etc/passwd"),
                                       ("opt/abs", "/etc/passwd")])
def test_extraction_refuses_members_that_escape(tmp_path: Path, name: str, link: str) -> None:
    member = tarfile.TarInfo(name)
    if link:
        member.type, member.linkname = tarfile.SYMTYPE, link
    else:
        member.size = 1
    with pytest.raises(UsageError, match="escapes the bundle"):
        check_members(_bad_tarball(tmp_path / "bad.tar.zst", member))


def _shim(directory: Path, output: str) -> Path:
    shim = directory / "opt/kata/bin/containerd-shim-kata-v2"
    shim.parent.mkdir(parents=True)
    shim.write_text(f"#!/bin/sh\necho '{output}'\n")
    shim.chmod(0o755)
    return shim


def test_runtime_version_from_the_go_and_rust_shims(tmp_path: Path) -> None:
    go = _shim(tmp_path / "go", 'Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", '
                                'version: 3.2.0, commit: abc')
    files, digest = _from_local(tmp_path / "go")
    assert list(files) == ["opt/kata/bin/containerd-shim-kata-v2"] and len(digest) == 64
    assert _shim_version(files, str(go)) == "3.2.0"
    _shim(tmp_path / "rust", "Kata Containers containerd shim (Rust): id: io.containerd.kata.v2, version: 4.1.0, "
                             "commit: def")
    assert _shim_version(_from_local(tmp_path / "rust")[0], "rust") == "4.1.0"
    _shim(tmp_path / "silent", "hello")
    with pytest.raises(UsageError, match="--runtime-version"):
        _shim_version(_from_local(tmp_path / "silent")[0], "silent")


def test_mismatched_runtime_is_refused_naming_both_versions() -> None:
    runtime = Runtime("4.1.0", {}, "kata-static.tar.zst", "0" * 64, "kata-static.tar.zst")
    require_match(runtime, {"image": "4.1.0", "initrd": "4.1.0"})
    with pytest.raises(UsageError) as caught:
        require_match(runtime, {"image": "4.1.0", "initrd": "4.0.9"})
    assert "4.1.0" in caught.value.problem and "4.0.9" in caught.value.problem


def test_a_bundle_records_no_path_of_the_machine_that_built_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The same runtime or kernel from another directory must give the same manifest bytes (its key
    # covers digests, not paths): a local path is recorded by its name; the pinned tarball, however
    # it was given, by its pinned URL.
    url, pinned = "https://example.test/releases/4.1.0/kata-static-4.1.0-amd64.tar.zst", "9" * 64
    given = "/tmp/runner-a/kata-static-4.1.0-amd64.tar.zst"
    assert recorded_source(given, "0" * 64, url, pinned) == "kata-static-4.1.0-amd64.tar.zst"
    assert recorded_source(given, pinned, url, pinned) == url
    assert recorded_source(url, pinned, url, pinned) == url
    assert recorded_source(given, "0" * 64, None, None) == "kata-static-4.1.0-amd64.tar.zst"
    (tmp_path / "opt-kata").mkdir()
    monkeypatch.chdir(tmp_path / "opt-kata")
    assert recorded_source(".", "0" * 64, url, pinned) == "opt-kata"
    record = {"name": "6.12.107-1", "build_seconds": 612.0, "build_steps": 9000,
              "config_changed_without_version_bump": {"previous": "a" * 64},
              "source": {"kind": "local-tree", "tree_digest": "1" * 64, "path": "/home/someone/src/linux"},
              "config": {"mode": "fragments", "sha256": "2" * 64,
                         "fragments": [{"path": "common/9p.conf", "sha256": "3" * 64},
                                       {"path": "/home/someone/mine.conf", "sha256": "4" * 64},
                                       {"path": "../mine/debug.conf", "sha256": "5" * 64},
                                       {"path": "x86_64/mine.conf", "sha256": "6" * 64}],
                         "skipped_by_tag": ["confidential/x86_64/tdx.conf", "/elsewhere/arm.conf"]}}
    assert _kernel_inputs(record) == {
        "name": "6.12.107-1",
        "source": {"kind": "local-tree", "tree_digest": "1" * 64, "path": "linux"},
        "config": {"mode": "fragments", "sha256": "2" * 64,
                   "fragments": [{"path": "common/9p.conf", "sha256": "3" * 64},
                                 {"path": "extra/mine.conf", "sha256": "4" * 64},
                                 {"path": "extra/debug.conf", "sha256": "5" * 64},
                                 {"path": "extra/mine.conf", "sha256": "6" * 64}],
                   "skipped_by_tag": ["confidential/x86_64/tdx.conf", "extra/arm.conf"]}}
    assert _kernel_inputs({"config": {"mode": "file", "file": "/home/someone/.config", "file_sha256": "6" * 64}}) == \
        {"config": {"mode": "file", "file": ".config", "file_sha256": "6" * 64}}
    assert record["source"]["path"] == "/home/someone/src/linux"  # the kernel's own record is left alone


def test_matrix_lists_every_variant_with_stable_keys() -> None:
    first = run_cli("matrix", "--json")
    assert first.returncode == 0, first.stderr
    include = json.loads(first.stdout)["include"]
    ids = {variant["id"] for variant in include}
    assert {"kernel-x86_64-default", "kernel-aarch64-default", "kernel-x86_64-confidential", "image-x86_64-default",
            "image-x86_64-measured", "initrd-x86_64-default", "bundle-x86_64", "bundle-aarch64"} <= ids
    assert "kernel-aarch64-confidential" not in ids
    keys = [variant["key"] for variant in include]
    assert len(set(keys)) == len(keys) and all(len(key) == 64 for key in keys)
    bundle = next(variant for variant in include if variant["id"] == "bundle-x86_64")
    assert set(bundle["needs"]) == {"kernel-x86_64-default", "image-x86_64-default", "image-x86_64-measured",
                                    "initrd-x86_64-default"}
    again = json.loads(run_cli("matrix", "--json").stdout)["include"]
    assert [variant["key"] for variant in again] == keys
    # Each names the command that builds it (what a pipeline's job runs), its output among its words.
    subcommands = {"kernel": "build-kernel", "image": "build-image", "initrd": "build-initrd",
                   "bundle": "bundle --from-cache"}
    for variant in include:
        assert variant["command"].startswith(f"osbuilder {subcommands[variant['asset']]} "), variant
        assert f"-o {variant['outputs'][0].rsplit('/kata-static-', 1)[0]}" in variant["command"], variant


def test_bundle_from_cache_names_the_commands_of_the_missing_parts(tmp_path: Path) -> None:
    from tests.helpers.runtime import make_runtime_tarball

    runtime = make_runtime_tarball(tmp_path / "runtime", "4.1.0")
    matrix = {v["id"]: v for v in json.loads(run_cli("matrix", "--arch", "x86_64", "--json").stdout)["include"]}
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("--cache-dir", tmp_path / "empty-cache", "bundle", "--from-cache", "--arch", "x86_64",
                     "--runtime", runtime, "-o", out)
    assert result.returncode == 1, result.stderr
    for part in matrix["bundle-x86_64"]["needs"]:
        assert f"{part} ({matrix[part]['key'][:16]})" in result.stderr
        assert matrix[part]["command"] in result.stderr
    assert list(out.iterdir()) == []


def test_matrix_keys_follow_their_inputs(tmp_path: Path) -> None:
    from tests.conftest import REPO

    versions = tmp_path / "versions.yaml"
    # The kernel's source pin is an input of the kernel (and so of the bundle), not of the image. (A
    # note is nobody's input: the keys are the builds' own cache keys now, not a digest of the pins.)
    versions.write_text((REPO / "versions.yaml").read_text().replace(
        'sha256: "775b9ef84d7fa7927ccebfec33fbbe9aeb2482ebf9a92c771aafd33fb6e2ee27"', 'sha256: "' + "0" * 64 + '"'))
    base = {v["id"]: v["key"] for v in json.loads(run_cli("matrix", "--json").stdout)["include"]}
    changed = {v["id"]: v["key"] for v in json.loads(run_cli("--versions", versions, "matrix", "--json").stdout)["include"]}
    assert changed["kernel-x86_64-default"] != base["kernel-x86_64-default"]
    assert changed["image-x86_64-default"] == base["image-x86_64-default"]
    assert changed["bundle-x86_64"] != base["bundle-x86_64"]
    # The bundle ships versions.yaml whole: a change no part reads (a description) changes its key alone.
    described = tmp_path / "described.yaml"
    described.write_text((REPO / "versions.yaml").read_text().replace(
        'description: "Kata Containers runtime', 'description: "The Kata Containers runtime', 1))
    redone = {v["id"]: v["key"] for v in json.loads(run_cli("--versions", described, "matrix", "--json").stdout)["include"]}
    assert {name for name in base if redone[name] != base[name]} == {"bundle-x86_64", "bundle-aarch64"}
