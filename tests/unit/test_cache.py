"""The build cache: entries appear complete or not at all; concurrent builders build once."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from osbuilder.cache import Cache, content_key, sha256_tree


def test_content_key_is_order_independent() -> None:
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_get_or_build_then_hit(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    calls = []

    def build(staging: Path) -> dict[str, str]:
        calls.append(staging)
        (staging / "out").write_text("built")
        return {"note": "x"}

    first = cache.get_or_build("thing", "k1", build)
    second = cache.get_or_build("thing", "k1", build)
    assert (first.hit, second.hit) == (False, True)
    assert first.path == second.path == tmp_path / "thing" / "k1"
    assert (second.path / "out").read_text() == "built"
    assert cache.entry_meta("thing", "k1")["note"] == "x"
    assert len(calls) == 1


def test_failed_build_leaves_no_entry_and_no_staging(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def build(staging: Path) -> None:
        (staging / "half").write_text("half-written")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_build("thing", "k", build)
    assert cache.lookup("thing", "k") is None
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stale_staging_of_a_dead_process_is_swept(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.ensure()
    dead = multiprocessing.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    stale = tmp_path / "tmp" / f"thing-k.{dead.pid}.1"
    stale.mkdir()
    live = tmp_path / "tmp" / f"thing-k.{os.getpid()}.2"
    live.mkdir()
    cache.sweep_stale()
    assert not stale.exists()
    assert live.exists()


def _build_in_process(root: str, marker: str) -> None:
    def build(staging: Path) -> None:
        with open(marker, "a") as handle:
            handle.write("built\n")
        time.sleep(0.5)
        (staging / "out").write_text("ok")

    Cache(Path(root)).get_or_build("thing", "shared", build)


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    marker = tmp_path / "builds.log"
    processes = [multiprocessing.Process(target=_build_in_process, args=(str(tmp_path / "c"), str(marker)))
                 for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert marker.read_text() == "built\n"


def test_tree_digest_sees_content_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("one")
    base = sha256_tree(tmp_path)
    (tmp_path / "d" / "f").chmod(0o755)
    moded = sha256_tree(tmp_path)
    (tmp_path / "d" / "l").symlink_to("f")
    linked = sha256_tree(tmp_path)
    assert len({base, moded, linked}) == 3


def test_tree_digest_ignores_bytecode_caches(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    before = sha256_tree(tmp_path / "pkg")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"compiled, with an mtime")
    assert sha256_tree(tmp_path / "pkg") == before
    assert sha256_tree(tmp_path / "pkg", frozenset()) != before
    (tmp_path / "pkg" / "mod.py").write_text("x = 2\n")
    assert sha256_tree(tmp_path / "pkg") != before
