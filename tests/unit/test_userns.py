"""Id maps of rootfs trees: parsing subordinate ranges, translating ids, wrapping commands."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from osbuilder import userns
from osbuilder.errors import BuildError
from osbuilder.userns import IDENTITY, IdMap, IdRange


@pytest.fixture
def subids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    me = pwd.getpwuid(os.geteuid()).pw_name
    subuid.write_text(f"someone:10000:500\n{me}:200000:65536\n{me}:900000:10\n")
    subgid.write_text(f"{os.geteuid()}:300000:65536\n")  # numeric entries count too
    monkeypatch.setattr(userns, "SUBUID", subuid)
    monkeypatch.setattr(userns, "SUBGID", subgid)
    return subuid, subgid


def test_subordinate_ranges_by_name_and_number(subids: tuple[Path, Path]) -> None:
    assert userns.subid_range("uid") == IdRange(0, 200000, 65536)  # the first entry of the user
    assert userns.subid_range("gid") == IdRange(0, 300000, 65536)
    assert userns.subid_range("uid", uid=123456789) is None
    mapping = userns.subid_map()
    assert mapping is not None and mapping.kind == userns.SUBID_KIND


def test_missing_files_mean_no_range(tmp_path: Path) -> None:
    assert userns.subid_range("uid", path=tmp_path / "absent") is None


def test_translation_both_ways() -> None:
    mapping = IdMap(userns.SUBID_KIND, (IdRange(0, 100000, 65536),), (IdRange(0, 200000, 65536),))
    assert mapping.to_guest(100000, 200000) == (0, 0)
    assert mapping.to_guest(100100, 200101) == (100, 101)
    assert mapping.to_guest(1000, 1000) == (userns.OVERFLOW_ID, userns.OVERFLOW_ID)
    assert mapping.to_host(42, 7) == (100042, 200007)
    assert IDENTITY.to_guest(5, 6) == (5, 6)
    me = IdMap(userns.SELF_KIND, (IdRange(0, 1000, 1),), (IdRange(0, 1000, 1),))
    assert me.to_guest(1000, 1000) == (0, 0)
    assert me.to_guest(0, 0) == (userns.OVERFLOW_ID, userns.OVERFLOW_ID)


def test_wrap_builds_the_unshare_command() -> None:
    assert userns.wrap(["tar", "-x"], IDENTITY) == ["tar", "-x"]
    mapping = IdMap(userns.SUBID_KIND, (IdRange(0, 100000, 65536),), (IdRange(0, 100000, 65536),))
    argv = userns.wrap(["tar", "-x"], mapping)
    assert argv[0].endswith("unshare")
    assert "--map-users=100000,0,65536" in argv and "--map-groups=100000,0,65536" in argv
    assert "--map-user=65536" in argv and "--setuid=0" in argv and "--setgid=0" in argv
    assert argv[-3:] == ["--", "tar", "-x"]
    mine = IdMap(userns.SELF_KIND, (IdRange(0, 4242, 1),), (IdRange(0, 4242, 1),))
    assert userns.wrap(["true"], mine)[1:] == ["--user", "--map-root-user", "--", "true"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to other ids needs root")
def test_detect_by_the_owner_of_the_top_directory(tmp_path: Path, subids: tuple[Path, Path]) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    assert userns.detect(tree) == IDENTITY
    os.chown(tree, 200000, 300000)
    detected = userns.detect(tree)
    assert detected.kind == userns.SUBID_KIND and detected.to_guest(200005, 300005) == (5, 5)
    os.chown(tree, 4321, 4321)
    with pytest.raises(BuildError, match="neither root"):
        userns.detect(tree)


def test_caller_map_as_root_is_identity() -> None:
    if os.geteuid() == 0:
        assert userns.caller_map() == IDENTITY
        assert userns.unshare_problem() is None
    else:
        assert userns.caller_map().kind in (userns.SUBID_KIND, userns.SELF_KIND)


def test_remove_tree_removes_what_it_can(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    userns.remove_tree(tree)
    assert not tree.exists()
    userns.remove_tree(tree)  # absent: nothing to do


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_tree_with_a_mount_inside_is_not_removed(tmp_path: Path) -> None:
    import subprocess

    tree = tmp_path / "chroot"
    (tree / "proc").mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(tree / "proc")], capture_output=True).returncode:
        pytest.skip("cannot mount here")
    try:
        assert userns.mounts_below(tree) == [str(tree / "proc")]
        with pytest.raises(BuildError, match="mounted"):
            userns.remove_tree(tree)
        assert (tree / "proc").is_dir()
    finally:
        subprocess.run(["umount", str(tree / "proc")], check=True)
    userns.remove_tree(tree)
    assert not tree.exists()


def test_an_id_map_is_what_the_image_and_initrd_builders_take() -> None:
    """The IdMapping protocol of osbuilder/idmap.py: name, wrap, guest_uid, guest_gid, covers."""
    mapping = IdMap(userns.SUBID_KIND, (IdRange(0, 100000, 65536),), (IdRange(0, 200000, 65536),))
    assert "100000" in mapping.name
    argv = mapping.wrap(["mkfs.ext4", "-d", "tree"])
    assert "--map-users=100000,0,65536" in argv and "--map-groups=200000,0,65536" in argv
    assert argv[-4:] == ["--", "mkfs.ext4", "-d", "tree"]
    assert (mapping.guest_uid(100042), mapping.guest_gid(200008)) == (42, 8)
    assert mapping.covers(100000) and mapping.covers(os.geteuid()) and not mapping.covers(99999)
    assert IDENTITY.wrap(["true"]) == ["true"] and IDENTITY.name == "identity"
    assert IDENTITY.covers(0) == (os.geteuid() == 0)
