"""Packages resolved through signed archive metadata (a throwaway archive on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbuilder.cache import Cache
from osbuilder.debarchive import ArchiveClient, extract_member, parse_stanzas, release_sha256
from osbuilder.errors import BuildError, FetchError
from osbuilder.fetch import Fetcher, FetchPolicy
from osbuilder.versions import ArchivePackage
from tests.helpers.fakearchive import FakeArchive, make_key, publish
from tests.helpers.httpserver import FixtureServer

CONTENT = {"usr/share/keyrings/test.gpg": b"key material\n"}


@pytest.fixture
def archive(http_server: FixtureServer, tmp_path: Path) -> FakeArchive:
    home = tmp_path / "gnupg"
    make_key(home, "archive")
    return publish(http_server, tmp_path, suite="testsuite", package="test-keyring", version="1.0-1",
                   files=CONTENT, signing_home=home, other_versions=("0.9-1",))


def _pin(sha256: str, version: str = "1.0-1") -> ArchivePackage:
    return ArchivePackage(key="externals.test", archive="debian", package="test-keyring", version=version,
                          suite="testsuite", component="main", sha256_all=sha256, sha256_by_arch=())


def _client(tmp_path: Path, archive: FakeArchive, keyring: Path | None = None) -> ArchiveClient:
    fetcher = Fetcher(Cache(tmp_path / "cache"), policy=FetchPolicy(attempts=1))
    return ArchiveClient(fetcher, mirror=archive.mirror, keyring=keyring or archive.keyring)


def test_resolves_through_signed_metadata(archive: FakeArchive, tmp_path: Path) -> None:
    resolved = _client(tmp_path, archive).resolve(_pin(archive.deb_sha256), "x86_64", "amd64")
    assert resolved.sha256 == archive.deb_sha256
    assert resolved.mirror == archive.mirror
    assert extract_member(resolved.path, "usr/share/keyrings/test.gpg") == b"key material\n"


def test_cached_pin_needs_no_network(archive: FakeArchive, tmp_path: Path, http_server: FixtureServer) -> None:
    client = _client(tmp_path, archive)
    client.resolve(_pin(archive.deb_sha256), "x86_64", "amd64")
    count = len(http_server.requests)
    again = client.resolve(_pin(archive.deb_sha256), "x86_64", "amd64")
    assert again.mirror is None
    assert len(http_server.requests) == count


def test_signature_from_another_key_is_refused(archive: FakeArchive, tmp_path: Path) -> None:
    stranger = make_key(tmp_path / "stranger", "stranger")
    with pytest.raises(FetchError, match="does not verify"):
        _client(tmp_path, archive, keyring=stranger).resolve(_pin(archive.deb_sha256), "x86_64", "amd64")


def test_tampered_index_is_refused(archive: FakeArchive, tmp_path: Path, http_server: FixtureServer) -> None:
    http_server.files[archive.packages_path].data += b"tampered"
    with pytest.raises(FetchError, match="sha256 mismatch"):
        _client(tmp_path, archive).resolve(_pin(archive.deb_sha256), "x86_64", "amd64")


def test_pin_that_disagrees_with_the_index(archive: FakeArchive, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="versions.yaml pins"):
        _client(tmp_path, archive).resolve(_pin("f" * 64), "x86_64", "amd64")


def test_version_not_in_the_index_lists_what_is(archive: FakeArchive, tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        _client(tmp_path, archive).resolve(_pin("e" * 64, version="2.0-1"), "x86_64", "amd64")
    assert "it lists 0.9-1, 1.0-1" in caught.value.problem


def test_stanza_and_release_parsing() -> None:
    text = "Package: a\nDescription: one\n two\n\nPackage: b\n"
    assert [s["Package"] for s in parse_stanzas(text)] == ["a", "b"]
    assert next(parse_stanzas(text))["Description"] == "one\ntwo"
    release = "Codename: x\nSHA256:\n " + "a" * 64 + " 12 main/binary-amd64/Packages.xz\n"
    assert release_sha256(release) == {"main/binary-amd64/Packages.xz": ("a" * 64, 12)}
