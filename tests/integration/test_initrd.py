"""build-initrd with the real compressors, checked with GNU cpio and each codec's own decompressor."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from osbuilder.initrd.builder import InitrdOptions, build_initrd
from osbuilder.initrd.compression import CODECS
from tests.conftest import run_cli
from tests.helpers.make import make
from tests.helpers.trees import EPOCH, OLD, make_rootfs, tree_paths

pytestmark = pytest.mark.integration


def cpio_list(initrd: Path, codec: str, verbose: bool = False) -> list[str]:
    raw = subprocess.run([*CODECS[codec].decompress_argv()], stdin=initrd.open("rb"), capture_output=True,
                         check=True).stdout
    listing = subprocess.run(["cpio", "-t", *(["-v", "--numeric-uid-gid"] if verbose else []), "--quiet"],
                             input=raw, capture_output=True, check=True).stdout.decode()
    return listing.splitlines()


def build(rootfs: Path, output: Path, **options: object) -> object:
    options.setdefault("source_date_epoch", EPOCH)
    return build_initrd(rootfs, InitrdOptions(output=output, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("agent_init", [False, True], ids=["systemd", "agent-init"])
def test_file_list_equals_the_tree_and_init_is_right(tmp_path: Path, agent_init: bool) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs", agent_init=agent_init)
    initrd = tmp_path / "initrd.img"
    build(rootfs, initrd, agent_init=agent_init)
    names = cpio_list(initrd, "zstd")
    assert names[0] == "."
    assert {name.removeprefix("./") for name in names[1:]} == tree_paths(rootfs) | {"init"}
    assert len(names) == len(set(names))
    verbose = {line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]: line
               for line in cpio_list(initrd, "zstd", verbose=True)}
    expected = "/sbin/init" if agent_init else "/lib/systemd/systemd"
    assert verbose["./init"].endswith(f"./init -> {expected}")
    assert not (rootfs / "init").exists()  # added to the archive only


def test_contents_owners_times_and_hard_links(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    initrd = tmp_path / "initrd.img"
    build(rootfs, initrd, compression="gzip")
    extracted = tmp_path / "x"
    extracted.mkdir()
    raw = subprocess.run(["gzip", "-dc", initrd], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=raw, cwd=extracted, check=True)
    assert (extracted / "usr/share/size-1048576").read_bytes() == (rootfs / "usr/share/size-1048576").read_bytes()
    assert (extracted / "etc/machine-id").read_bytes() == (rootfs / "etc/machine-id").read_bytes()
    links = [os.stat(extracted / p) for p in ("usr/bin/hard-a", "usr/bin/hard-b", "usr/share/hard-c")]
    assert len({s.st_ino for s in links}) == 1 and links[0].st_nlink == 3 and links[0].st_size == 5000
    assert int(os.stat(extracted / "etc/new-file").st_mtime) == EPOCH  # clamped
    assert int(os.stat(extracted / "etc/hostname").st_mtime) == OLD  # kept
    assert os.stat(extracted / "usr/share/setuid").st_mode & 0o7777 == 0o4755
    assert (extracted / "run/initctl").is_fifo()
    assert os.readlink(extracted / "usr/sbin/init") == "/lib/systemd/systemd"
    # gzip header: no name, no time (reproducible)
    assert initrd.read_bytes()[3] & 0x08 == 0 and initrd.read_bytes()[4:8] == bytes(4)


def test_every_codec_gives_the_same_archive(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    archives = set()
    for codec in CODECS:
        initrd = tmp_path / f"initrd.{codec}"
        build(rootfs, initrd, compression=codec)
        assert initrd.read_bytes().startswith(CODECS[codec].magic)
        raw = subprocess.run(CODECS[codec].decompress_argv(), stdin=initrd.open("rb"), capture_output=True,
                             check=True).stdout
        archives.add(hashlib.sha256(raw).hexdigest())
    assert len(archives) == 1


def test_initrd_is_reproducible(tmp_path: Path) -> None:
    first = make_rootfs(tmp_path / "a" / "rootfs")
    build(first, tmp_path / "one.img")
    time.sleep(1.1)
    second = tmp_path / "b" / "c" / "copy"
    second.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", first, second], check=True)
    build(second, tmp_path / "two.img")
    assert (tmp_path / "one.img").read_bytes() == (tmp_path / "two.img").read_bytes()


def test_existing_init_is_kept(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs", agent_init=True)
    os.symlink("/usr/bin/kata-agent", rootfs / "init")
    result = build(rootfs, tmp_path / "i.img", agent_init=True)
    assert result.init_added is False  # type: ignore[attr-defined]
    lines = cpio_list(tmp_path / "i.img", "zstd", verbose=True)
    assert [line for line in lines if line.endswith("-> /usr/bin/kata-agent") and "./init" in line]


def test_bad_inputs_exit_2_without_output(tmp_path: Path) -> None:
    no_init = make_rootfs(tmp_path / "no-init")
    (no_init / "usr/sbin/init").unlink()
    systemd = make_rootfs(tmp_path / "systemd")
    no_agent = make_rootfs(tmp_path / "no-agent")
    (no_agent / "usr/bin/kata-agent").unlink()
    cases = [
        ([no_init], "no /sbin/init"),
        ([systemd, "--agent-init"], "must not be systemd"),
        ([no_agent], "kata-agent must be executable"),
        ([systemd, "--compression", "bzip2"], "invalid choice"),
        ([systemd, "--compression", "gzip", "--level", "12"], "not valid for gzip"),
    ]
    for args, message in cases:
        output = tmp_path / "out.img"
        result = run_cli("build-initrd", *args, "-o", output)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
        assert not output.exists() and not list(tmp_path.glob(".out.img*"))
    result = run_cli("build-initrd", systemd, "-o", tmp_path / "missing" / "i.img")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_cli_json(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    result = run_cli("build-initrd", rootfs, "-o", tmp_path / "i.img", "--json", "--compression", "lz4")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["compression"] == "lz4" and data["init"] == "/lib/systemd/systemd"
    assert data["compressor"][:2] == ["lz4", "-l"]
    made = make("initrd", f"ROOTFS_DIR={rootfs}", f"INITRD={tmp_path / 'm.img'}", "INITRD_COMPRESSION=gzip")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "m.img").read_bytes()[:2] == b"\x1f\x8b"
