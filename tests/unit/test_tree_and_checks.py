"""The tree walk, in-tree symlink resolution, Kata's rootfs checks and the id mappings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from osbuilder.errors import UsageError
from osbuilder.idmap import OVERFLOW_ID
from osbuilder.rootfs.check import check_rootfs
from osbuilder.tree import resolve_in_root, scan_tree, source_date_epoch
from osbuilder.userns import IDENTITY, caller_as_root
from tests.helpers.trees import NEW, make_rootfs


def test_scan_is_sorted_pre_order(tmp_path: Path) -> None:
    for name in ("b", "a", "a-b", "a/z", "a/c"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "a" / "c" / "file").write_text("x")
    paths = [entry.path for entry in scan_tree(tmp_path)]
    # A directory's subtree right after it; names in byte order ("a" < "a-b" < "b").
    assert paths == ["", "a", "a/c", "a/c/file", "a/z", "a-b", "b"]


def test_scan_rejects_missing_and_non_directories(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        scan_tree(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        scan_tree(tmp_path / "file")


def test_hard_links_are_counted_once(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    scan = scan_tree(root)
    unique = scan.unique_inodes()
    names = {entry.path for entry in unique}
    assert "usr/bin/hard-a" in names and "usr/bin/hard-b" not in names and "usr/share/hard-c" not in names
    assert len(unique) == len(scan.entries) - 1 - 2


def test_resolve_in_root_stays_inside_the_tree(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    # /sbin -> usr/sbin, /sbin/init -> /lib/systemd/systemd (absolute: relative to the tree), /lib -> usr/lib.
    resolved = resolve_in_root(root, "sbin/init")
    assert resolved is not None and resolved[0] == "usr/lib/systemd/systemd"
    os.symlink("../../../../../etc/hostname", root / "usr/share/escape")
    escape = resolve_in_root(root, "usr/share/escape")
    assert escape is not None and escape[0] == "etc/hostname"  # ".." stops at the tree's root
    os.symlink("loop", root / "loop")
    assert resolve_in_root(root, "loop") is None
    assert resolve_in_root(root, "usr/nothing") is None


def test_epoch_defaults_to_the_newest_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    scan = scan_tree(root)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert source_date_epoch(None, scan) == (NEW, "the newest mtime in the tree")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "12345")
    assert source_date_epoch(None, scan) == (12345, "SOURCE_DATE_EPOCH")
    assert source_date_epoch(7, scan) == (7, "--source-date-epoch")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        source_date_epoch(None, scan)


def test_systemd_and_agent_init_trees_pass(tmp_path: Path) -> None:
    systemd = check_rootfs(make_rootfs(tmp_path / "systemd"), agent_init=False, initrd=True)
    assert (systemd.init, systemd.init_target, systemd.agent) == ("systemd", "usr/lib/systemd/systemd",
                                                                  "usr/bin/kata-agent")
    agent = check_rootfs(make_rootfs(tmp_path / "agent", agent_init=True), agent_init=True)
    assert (agent.init, agent.agent) == ("agent", "usr/sbin/init")


def test_missing_init_is_bad_input(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs")
    (root / "usr/sbin/init").unlink()
    with pytest.raises(UsageError, match="no /sbin/init") as caught:
        check_rootfs(root, agent_init=False)
    assert caught.value.exit_code == 2


def test_agent_init_rejects_systemd_as_init(tmp_path: Path) -> None:
    # A symlink to systemd is not an agent...
    root = make_rootfs(tmp_path / "link", agent_init=False)
    with pytest.raises(UsageError, match="must not be systemd"):
        check_rootfs(root, agent_init=True)
    # ...nor is a copy of systemd's bytes.
    root = make_rootfs(tmp_path / "copy", agent_init=True)
    (root / "usr/sbin/init").unlink()
    shutil.copy(root / "usr/lib/systemd/systemd", root / "usr/sbin/init")
    with pytest.raises(UsageError, match="must not be systemd"):
        check_rootfs(root, agent_init=True)


def test_systemd_mode_needs_systemd_and_the_initrd_needs_the_agent(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs", agent_init=True)
    (root / "usr/lib/systemd/systemd").unlink()
    with pytest.raises(UsageError, match="needs systemd"):
        check_rootfs(root, agent_init=False)
    root = make_rootfs(tmp_path / "noagent")
    (root / "usr/bin/kata-agent").unlink()
    check_rootfs(root, agent_init=False)  # images: the rootfs builder checked the agent
    with pytest.raises(UsageError, match="kata-agent must be executable"):
        check_rootfs(root, agent_init=False, initrd=True)


def test_nvrc_init_is_accepted_without_systemd(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "rootfs", agent_init=True)
    (root / "usr/lib/systemd/systemd").unlink()
    (root / "usr/sbin/init").unlink()
    os.symlink("/usr/bin/NVRC", root / "usr/sbin/init")
    assert check_rootfs(root, agent_init=False).init == "nvrc"


def test_id_mappings() -> None:
    assert IDENTITY.wrap(["mkfs.ext4", "x"]) == ["mkfs.ext4", "x"] and IDENTITY.guest_uid(1000) == 1000
    caller = caller_as_root(1000, 1001)
    wrapped = caller.wrap(["mkfs.ext4", "x"])
    assert wrapped[0].endswith("unshare") and wrapped[1:] == ["--user", "--map-root-user", "--", "mkfs.ext4", "x"]
    assert (caller.guest_uid(1000), caller.guest_gid(1001), caller.guest_uid(0)) == (0, 0, OVERFLOW_ID)
    assert caller.covers(1000) and not caller.covers(4242)
