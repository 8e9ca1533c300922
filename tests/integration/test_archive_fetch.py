"""The real Debian archive: a pinned package through signed metadata, and the CLI round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osbuilder.debarchive import extract_member
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_fetch_ubuntu_keyring_from_the_debian_archive(cache_dir: Path, tmp_path: Path) -> None:
    result = run_cli("--cache-dir", cache_dir, "fetch", "externals.ubuntu-keyring", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["downloaded"] is True
    deb = Path(report["cache_path"])
    keyring = extract_member(deb, "usr/share/keyrings/ubuntu-archive-keyring.gpg")
    assert keyring[:1] in (b"\x99", b"\xc6")  # an OpenPGP public-key packet
    # Offline, the pinned package comes from the cache without touching the archive.
    again = run_cli("--cache-dir", cache_dir, "--offline", "fetch", "externals.ubuntu-keyring", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["downloaded"] is False


def test_offline_without_cache_is_a_clear_error(cache_dir: Path) -> None:
    result = run_cli("--cache-dir", cache_dir, "--offline", "fetch", "externals.busybox")
    assert result.returncode == 1
    assert "--offline" in result.stderr
