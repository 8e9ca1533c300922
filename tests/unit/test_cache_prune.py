"""osbuilder cache list|prune: least recently used first, sizes per kind, and never an entry that
another process is reading (real locks, two processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from osbuilder.cachetool import parse_size
from osbuilder.errors import UsageError
from tests.conftest import REPO, run_cli

SDE = "1700000000"


def _build(cache: Path, output: Path, agent: Path, *extra: str) -> dict[str, Any]:
    result = run_cli("--cache-dir", cache, "build-rootfs", "--distro", "minimal", "--agent", agent, "-o", output,
                     "--json", *extra, env={"SOURCE_DATE_EPOCH": SDE})
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _cache(cache: Path, *args: str) -> dict[str, Any]:
    result = run_cli("--cache-dir", cache, "cache", *args, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _age(cache: Path, kind: str, key: str, days: float) -> None:
    """Make an entry look unused for `days` (its use mark is its metadata file's mtime)."""
    moment = time.time() - days * 86400
    os.utime(cache / kind / key / ".osbuilder-cache.json", (moment, moment))


def test_sizes(tmp_path: Path) -> None:
    assert parse_size("0") == 0 and parse_size("500M") == 500 << 20 and parse_size("1.5GiB") == 3 << 29
    assert parse_size("2GB") == 2_000_000_000 and parse_size("7") == 7
    with pytest.raises(UsageError, match="--max-size"):
        parse_size("lots")


def test_list_and_prune_least_recently_used_first(tmp_path: Path, test_agent: Path) -> None:
    cache = tmp_path / "cache"
    old = _build(cache, tmp_path / "old", test_agent, "--agent-name", "old-agent")["cache_key"]
    new = _build(cache, tmp_path / "new", test_agent)["cache_key"]
    _age(cache, "rootfs", old, 40)
    listing = _cache(cache, "list")
    rootfs = listing["kinds"]["rootfs"]
    assert rootfs["entries"] == 2 and rootfs["bytes"] > 0
    assert listing["total_bytes"] == sum(kind["bytes"] for kind in listing["kinds"].values())
    assert {entry["key"] for entry in listing["entries"] if entry["kind"] == "rootfs"} == {old, new}
    # --older-than: only what was unused for longer goes.
    pruned = _cache(cache, "prune", "--older-than", "30")
    assert [(entry["kind"], entry["key"]) for entry in pruned["removed"]] == [("rootfs", old)]
    assert not (cache / "rootfs" / old).exists() and (cache / "rootfs" / new).is_dir()
    # What is kept still serves hits; what went is built again.
    assert _build(cache, tmp_path / "again", test_agent)["cache_hit"] is True
    assert _build(cache, tmp_path / "old-again", test_agent, "--agent-name", "old-agent")["cache_hit"] is False
    # --max-size: least recently used first, until the cache fits.
    _age(cache, "rootfs", new, 2)
    listing = _cache(cache, "list")
    size_without_new = listing["total_bytes"] - listing["kinds"]["rootfs"]["bytes"] // 2
    pruned = _cache(cache, "prune", "--max-size", str(size_without_new))
    assert [entry["key"] for entry in pruned["removed"]][:1] == [new]
    assert pruned["total_bytes"] <= size_without_new
    assert list((cache / "tmp").iterdir()) == []  # nothing left half-removed


HOLDER = """
import sys
from pathlib import Path
from osbuilder.cache import Cache
with Cache(Path(sys.argv[1])).reading("rootfs", sys.argv[2]) as entry:
    print("holding" if entry else "absent", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_an_entry_another_process_reads_is_never_pruned(tmp_path: Path, test_agent: Path) -> None:
    cache = tmp_path / "cache"
    read = _build(cache, tmp_path / "read", test_agent)["cache_key"]
    other = _build(cache, tmp_path / "other", test_agent, "--agent-name", "other-agent")["cache_key"]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), read], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        pruned = _cache(cache, "prune", "--max-size", "0")
        removed = {(entry["kind"], entry["key"]) for entry in pruned["removed"]}
        assert ("rootfs", other) in removed and ("rootfs", read) not in removed
        assert ("rootfs", read) in {(entry["kind"], entry["key"]) for entry in pruned["in_use"]}
        assert (cache / "rootfs" / read / "rootfs.tar").is_file()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # Released, the kept entry still serves a hit, and it can go now.
    assert _build(cache, tmp_path / "hit", test_agent)["cache_hit"] is True
    assert ("rootfs", read) in {(entry["kind"], entry["key"])
                                for entry in _cache(cache, "prune", "--max-size", "0")["removed"]}


def test_prune_needs_a_limit(tmp_path: Path) -> None:
    result = run_cli("--cache-dir", tmp_path / "cache", "cache", "prune")
    assert result.returncode == 2 and "--max-size" in result.stderr
