"""The verified downloader against a local server: ranges, slow and truncated bodies, bad digests, 404."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from osbuilder.cache import Cache
from osbuilder.errors import FetchError, UsageError
from osbuilder.fetch import Fetcher, FetchPolicy
from tests.conftest import REPO, run_cli
from tests.helpers.httpserver import FixtureServer

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FAST = FetchPolicy(attempts=3, backoff=0.05, connect_timeout=2, read_timeout=1)


def _fetcher(cache_dir: Path, **kwargs: object) -> Fetcher:
    return Fetcher(Cache(cache_dir), policy=FAST, **kwargs)  # type: ignore[arg-type]


def _cache_files(cache_dir: Path) -> list[Path]:
    return [path for path in (cache_dir / "downloads").rglob("*") if path.is_file()]


def test_download_verifies_and_is_content_addressed(http_server: FixtureServer, cache_dir: Path) -> None:
    url = http_server.add("blob", PAYLOAD)
    fetcher = _fetcher(cache_dir)
    path = fetcher.fetch(url, DIGEST)
    assert path == cache_dir / "downloads" / "sha256" / DIGEST
    assert path.read_bytes() == PAYLOAD
    # A second fetch is served from the cache: the server sees no new request.
    requests_before = len(http_server.requests)
    assert fetcher.fetch(url, DIGEST) == path
    assert len(http_server.requests) == requests_before


def test_wrong_checksum_keeps_nothing(http_server: FixtureServer, cache_dir: Path) -> None:
    url = http_server.add("blob", PAYLOAD)
    wrong = "0" * 64
    with pytest.raises(FetchError) as caught:
        _fetcher(cache_dir).fetch(url, wrong)
    assert f"expected {wrong}, got {DIGEST}" in str(caught.value)
    assert _cache_files(cache_dir) == []


def test_truncated_body_is_resumed_with_a_range_request(http_server: FixtureServer, cache_dir: Path) -> None:
    url = http_server.add("blob", PAYLOAD, behaviour="truncate-once")
    path = _fetcher(cache_dir).fetch(url, DIGEST)
    assert path.read_bytes() == PAYLOAD
    served = http_server.files["blob"]
    assert served.truncated
    # One resume, from where the received data ended (at most the half the server sent).
    assert len(served.served_ranges) == 1
    resumed_at = int(served.served_ranges[0].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(PAYLOAD) // 2


def test_server_without_range_support_restarts_cleanly(http_server: FixtureServer, cache_dir: Path) -> None:
    http_server.add("blob", PAYLOAD, behaviour="no-range")
    partial = cache_dir / "downloads" / "partial"
    partial.mkdir(parents=True)
    (partial / f"{DIGEST}.part").write_bytes(b"garbage from an earlier run")
    path = _fetcher(cache_dir).fetch(http_server.url("blob"), DIGEST)
    assert path.read_bytes() == PAYLOAD


def test_slow_server_times_out_and_reports(http_server: FixtureServer, cache_dir: Path) -> None:
    url = http_server.add("blob", PAYLOAD, behaviour="slow", delay=3)
    with pytest.raises(FetchError) as caught:
        _fetcher(cache_dir).fetch(url, DIGEST)
    assert "after 3 attempts" in str(caught.value)
    assert "timed out" in str(caught.value)
    assert _cache_files(cache_dir) == []


def test_404_is_not_retried(http_server: FixtureServer, cache_dir: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        _fetcher(cache_dir).fetch(http_server.url("missing"), DIGEST)
    assert len(http_server.requests) == 1


def test_unreachable_source(cache_dir: Path) -> None:
    with pytest.raises(FetchError) as caught:
        _fetcher(cache_dir).fetch("http://127.0.0.1:9/nothing", DIGEST)
    assert "unreachable" in caught.value.fix


def test_offline_uses_the_cache_only(http_server: FixtureServer, cache_dir: Path) -> None:
    url = http_server.add("blob", PAYLOAD)
    with pytest.raises(FetchError, match="--offline"):
        _fetcher(cache_dir, offline=True).fetch(url, DIGEST)
    assert http_server.requests == []
    _fetcher(cache_dir).fetch(url, DIGEST)
    assert _fetcher(cache_dir, offline=True).fetch(url, DIGEST).read_bytes() == PAYLOAD


def test_bad_digest_argument(cache_dir: Path) -> None:
    with pytest.raises(UsageError, match="not a sha256"):
        _fetcher(cache_dir).fetch("http://127.0.0.1:9/x", "WRONG")


def test_cli_fetch_wrong_sha_exits_non_zero_and_leaves_nothing(http_server: FixtureServer, cache_dir: Path) -> None:
    url = http_server.add("x", PAYLOAD)
    result = run_cli("--cache-dir", cache_dir, "fetch", "--url", url, "--sha256", "1" * 64, "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert DIGEST in error["problem"]
    assert _cache_files(cache_dir) == []
    malformed = run_cli("--cache-dir", cache_dir, "fetch", "--url", url, "--sha256", "WRONG")
    assert malformed.returncode == 2
    assert "not a sha256" in malformed.stderr


def test_cli_fetch_output_copy(http_server: FixtureServer, cache_dir: Path, tmp_path: Path) -> None:
    url = http_server.add("x", PAYLOAD)
    out = tmp_path / "copy.bin"
    result = run_cli("--cache-dir", cache_dir, "fetch", "--url", url, "--sha256", DIGEST, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PAYLOAD
    assert json.loads(result.stdout)["downloaded"] is True
    missing_dir = run_cli("--cache-dir", cache_dir, "fetch", "--url", url, "--sha256", DIGEST,
                          "-o", tmp_path / "nope" / "copy.bin")
    assert missing_dir.returncode == 2
    assert "does not exist" in missing_dir.stderr


def test_concurrent_fetches_download_once(http_server: FixtureServer, cache_dir: Path) -> None:
    # Slow enough that the second process arrives while the first holds the lock.
    url = http_server.add("shared", PAYLOAD, behaviour="slow", delay=0.8)
    command = [sys.executable, "-m", "osbuilder", "--cache-dir", str(cache_dir), "fetch", "--url", url,
               "--sha256", DIGEST, "--json"]
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = [(process.wait(timeout=60), process.stdout.read() if process.stdout else "") for process in processes]
    assert [code for code, _ in results] == [0, 0]
    downloaded = sorted(json.loads(out)["downloaded"] for _, out in results)
    assert downloaded == [False, True]
    assert http_server.files["shared"].served_full == 1
    assert (cache_dir / "downloads" / "sha256" / DIGEST).read_bytes() == PAYLOAD
