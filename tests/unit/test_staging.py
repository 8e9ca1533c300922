"""Staging entries carry their writer's pid; the next run removes those of dead processes, says so,
and leaves live ones, other files and entries of other conventions alone."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from osbuilder import runner, staging
from osbuilder.cache import Cache


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_sweep_removes_only_dead_processes_entries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = _dead_pid()
    left_tree = tmp_path / f".rootfs.osbuilder-new.{dead}"
    (left_tree / "usr/bin").mkdir(parents=True)
    left_file = tmp_path / f".kata-containers.img.osbuilder-tmp.{dead}"
    left_file.write_bytes(b"x" * 4096)
    left_dir = tmp_path / f".osbuilder-image.{dead}.abc123"
    left_dir.mkdir()
    live = staging.entry_path(tmp_path / "rootfs", "new")  # ours, running
    live.mkdir()
    other = tmp_path / ".config.tmp1"
    other.write_text("not ours")
    with caplog.at_level(logging.INFO, logger="osbuilder.staging"):
        removed = staging.sweep(tmp_path)
    assert sorted(removed) == sorted([left_tree, left_file, left_dir])
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])
    assert f"left by process {dead}, which is gone" in caplog.text and str(left_tree) in caplog.text


def test_the_cache_sweeps_its_tmp_and_names_staging_by_pid(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    cache.ensure()
    dead = _dead_pid()
    (cache.root / "tmp" / f".osbuilder-rootfs-abc.{dead}.xyz").mkdir()
    (cache.root / "tmp" / f"rootfs-0123456789abcdef.{dead}.1234567").mkdir()  # the convention before
    fresh = cache.staging_dir("rootfs-0123")
    assert staging.owner(fresh.name) == os.getpid()
    assert [child.name for child in (cache.root / "tmp").iterdir()] == [fresh.name]


def test_contained_commands_leave_nothing_running(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = runner.run(["sh", "-c", f"(exec -a {marker} sleep 300 &) ; echo started"], contained=True)
    assert result.stdout.strip() == "started"
    assert subprocess.run(["pgrep", "-f", str(marker)], capture_output=True).returncode == 1  # none left


def test_an_entry_that_cannot_be_removed_is_reported_and_the_sweep_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = _dead_pid()
    stuck, fine = tmp_path / f".a.osbuilder-new.{dead}", tmp_path / f".b.osbuilder-new.{dead}"
    stuck.mkdir()
    fine.mkdir()

    def remover(path: Path) -> None:
        if path == stuck:
            raise PermissionError("mounted, say")
        path.rmdir()

    with caplog.at_level(logging.WARNING, logger="osbuilder.staging"):
        assert staging.sweep(tmp_path, remover) == [fine]
    assert stuck.exists() and f"cannot remove {stuck}" in caplog.text
