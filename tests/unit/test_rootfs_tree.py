"""The in-memory rootfs model: symlink resolution, edits, hard links, and the tarball it writes
(checked with GNU tar, independently of Python's tarfile)."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from osbuilder.errors import BuildError
from osbuilder.rootfs.tree import LNK, REG, SYM, RootfsTree, normalise
from tests.helpers.faketree import debian_like
from tests.helpers.rootfsinspect import disk_state


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return debian_like(tmp_path / "base.tar")


def _listing(tarball: Path) -> list[str]:
    """`tar -tv` lines without dates: mode, owner, size and name."""
    output = subprocess.run(["tar", "--numeric-owner", "-tvf", str(tarball)], capture_output=True, text=True,
                            check=True).stdout
    lines = []
    for line in output.splitlines():
        fields = line.split()
        name = fields[5] if fields[5] == "./" else fields[5].rstrip("/")  # directories end in a slash
        lines.append(" ".join([fields[0], fields[1], fields[2], name, *fields[6:]]))
    return lines


def _extract(tarball: Path, destination: Path) -> Path:
    destination.mkdir()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(destination), "--numeric-owner"], check=True)
    return destination


def test_names_are_normalised() -> None:
    assert normalise("./usr/bin/") == "usr/bin"
    assert normalise("./") == ""


def test_resolves_through_the_trees_own_symlinks(base: Path) -> None:
    with RootfsTree(base) as tree:
        assert tree.resolve("lib/systemd/system/chrony.service") == "usr/lib/systemd/system/chrony.service"
        assert tree.resolve("/sbin/init") == "usr/lib/systemd/systemd"
        assert tree.resolve("sbin/init", follow_last=False) == "usr/sbin/init"
        assert tree.resolve("usr/bin/../../etc/hostname") == "etc/hostname"
        assert tree.read("bin/perl5") == b"#!perl\n"  # through a symlink and a hard link
        tree.put_symlink("loop", "loop")
        with pytest.raises(BuildError, match="symlink"):
            tree.resolve("loop/x")


def test_new_members_land_where_the_guest_sees_them(base: Path, tmp_path: Path) -> None:
    with RootfsTree(base, mtime=1234) as tree:
        placed = tree.put_file("lib/modules/6.1/modules.dep", b"deps\n")
        assert placed == "usr/lib/modules/6.1/modules.dep"
        assert tree.entries["usr/lib/modules"].type == tarfile.DIRTYPE  # parents created
        tree.write(tmp_path / "out.tar")
    root = _extract(tmp_path / "out.tar", tmp_path / "root")
    assert (root / "usr/lib/modules/6.1/modules.dep").read_text() == "deps\n"
    assert (root / "lib").is_symlink()


def test_removing_a_hard_link_target_keeps_the_other_names(base: Path, tmp_path: Path) -> None:
    with RootfsTree(base) as tree:
        tree.remove("usr/share/doc")
        assert tree.entries["usr/bin/tool"].type == REG
        tree.write(tmp_path / "out.tar")
    root = _extract(tmp_path / "out.tar", tmp_path / "root")
    assert (root / "usr/bin/tool").read_text() == "the tool's content\n"
    assert not (root / "usr/share/doc").exists()


def test_sorted_output_puts_content_with_the_first_name(tmp_path: Path) -> None:
    from tests.helpers.faketree import TarBuilder

    tarball = TarBuilder().dir("").dir("b").file("b/z", "shared\n", mode=0o755).dir("a").hardlink("a/y", "b/z")
    with RootfsTree(tarball.save(tmp_path / "in.tar")) as tree:
        tree.write(tmp_path / "out.tar")
    listing = _listing(tmp_path / "out.tar")
    names = [line.split()[3] for line in listing]
    assert names == ["./", "./a", "./a/y", "./b", "./b/z"]
    assert listing[4].startswith("h") and "link to ./a/y" in listing[4]
    root = _extract(tmp_path / "out.tar", tmp_path / "root")
    assert (root / "a/y").stat().st_ino == (root / "b/z").stat().st_ino
    assert (root / "b/z").read_text() == "shared\n"


def test_ownership_modes_and_xattrs_survive(base: Path, tmp_path: Path) -> None:
    with RootfsTree(base) as tree:
        tree.write(tmp_path / "out.tar")
    listing = _listing(tmp_path / "out.tar")
    assert "drwxr-x--- 100/101 0 ./var/lib/chrony" in listing
    assert "drwxrwxrwt 0/0 0 ./tmp" in listing
    with tarfile.open(tmp_path / "out.tar") as written:
        ping = written.getmember("./usr/bin/ping")
        assert ping.pax_headers["SCHILY.xattr.security.capability"] == "cap"
        assert written.getmember("./usr/bin/perl5").type == LNK
        assert written.getmember("./sbin").type == SYM


def test_update_rewrites_like_sed_and_replacement_keeps_the_place(base: Path) -> None:
    with RootfsTree(base, mtime=99) as tree:
        order = list(tree.entries)
        assert tree.update("usr/bin/perl5", lambda text: text.upper())
        assert tree.read("usr/bin/perl5") == b"#!PERL\n"
        assert tree.read("usr/bin/perl") == b"#!perl\n"  # sed -i gives the edited name a new file
        assert not tree.update("etc/absent", str.upper)
        tree.put_file("etc/hostname", b"guest\n")
        assert list(tree.entries) == order
        assert tree.entries["etc/hostname"].mtime == 99


def test_writing_twice_gives_identical_bytes(base: Path, tmp_path: Path) -> None:
    outputs = []
    for index in range(2):
        with RootfsTree(base, mtime=1700000000) as tree:
            tree.put_file("etc/new", b"x")
            tree.remove("var/cache")
            tree.write(tmp_path / f"out{index}.tar")
        outputs.append((tmp_path / f"out{index}.tar").read_bytes())
    assert outputs[0] == outputs[1]


def test_a_file_where_a_directory_is_needed(base: Path) -> None:
    with RootfsTree(base) as tree, pytest.raises(BuildError, match="where a directory is needed"):
        tree.put_file("etc/hostname/x", b"")


def test_an_empty_tree_has_a_top_directory(tmp_path: Path) -> None:
    with RootfsTree(None, mtime=5) as tree:
        tree.put_file("sbin/init", b"\x7fELF", mode=0o755)
        tree.write(tmp_path / "out.tar")
    assert [line.split()[3] for line in _listing(tmp_path / "out.tar")] == ["./", "./sbin", "./sbin/init"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a tree with other owners needs root")
def test_a_directory_tree_edited_in_place_matches_its_tarball(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "usr/share/doc/tool").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "var/lib/chrony").mkdir(parents=True)
    os.chown(root / "var/lib/chrony", 100, 101)
    (root / "usr/share/doc/tool/README").write_text("content\n")
    os.link(root / "usr/share/doc/tool/README", root / "usr/bin/tool")  # outlives the trimmed target
    (root / "usr/bin/perl").write_text("#!perl\n")
    os.link(root / "usr/bin/perl", root / "usr/bin/perl5")
    os.symlink("/run/systemd/resolve/stub-resolv.conf", root / "etc/resolv.conf")
    (root / "etc/chrony.conf").write_text("pool x\n")
    os.mkfifo(root / "etc/fifo")
    os.setxattr(root / "usr/bin/perl", "user.note", b"\xff binary")
    with RootfsTree.from_directory(root, mtime=1700000000, clamp=1700000000) as tree:
        assert "etc/fifo" not in tree.entries and tree.entries["usr/bin/perl5"].type == LNK
        tree.remove("usr/share/doc")
        tree.remove("etc/resolv.conf")
        tree.put_file("etc/resolv.conf", b"")
        tree.update("usr/bin/perl5", str.upper)  # sed -i: a new file; perl keeps its content
        tree.put_symlink("var/tmp", "../tmp")
        tree.put_dir("tmp", mode=0o1777)
        tree.chmod("", 0o755)
        tree.apply_to()  # first, as the build does: the tarball is then read from the edited tree
        tree.write(tmp_path / "tree.tar")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(tmp_path / "tree.tar"), "-C",
                    str(unpacked), "--numeric-owner"], check=True)
    assert disk_state(root) == disk_state(unpacked)
    assert (root / "usr/bin/tool").read_text() == "content\n" and not (root / "etc/fifo").exists()
    assert (root / "usr/bin/perl").read_text() == "#!perl\n" and (root / "usr/bin/perl5").read_text() == "#!PERL\n"
    assert os.getxattr(root / "usr/bin/perl", "user.note") == b"\xff binary"
    assert os.getxattr(unpacked / "usr/bin/perl", "user.note") == b"\xff binary"
