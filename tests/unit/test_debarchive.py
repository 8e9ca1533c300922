"""Packages resolved through signed archive metadata (a throwaway archive on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbuilder.cache import Cache
from osbuilder.debarchive import (
    ArchiveClient,
    extract_member,
    package_stanzas,
    parse_stanzas,
    release_sha256,
)
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


def _pin(sha256: str, version: str = "1.0-1", pool: str | None = None) -> ArchivePackage:
    return ArchivePackage(key="externals.test", archive="debian", package="test-keyring", version=version,
                          suite="testsuite", component="main", sha256_all=sha256, sha256_by_arch=(), pool=pool)


POOL = "pool/main/t/test-keyring/test-keyring_1.0-1_{arch}.deb"


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


def test_package_stanzas_finds_what_a_full_parse_finds() -> None:
    paragraphs = [
        "Package: ubuntu-keyring\nVersion: 1\nDescription: first paragraph\n continued\n .\n Package: not-a-field",
        "Package: ubuntu-keyring-extra\nVersion: 9",
        "Package: other\nVersion: 2\nDepends: ubuntu-keyring",
        "Package: ubuntu-keyring\nArchitecture: all\nVersion: 3",
        "Package:  ubuntu-keyring \nVersion: 4",  # stray spaces around the name
    ]
    for index in ("\n\n".join(paragraphs), "\n\n".join(paragraphs) + "\n", "\n\n".join(reversed(paragraphs))):
        for package in ("ubuntu-keyring", "ubuntu-keyring-extra", "other", "not-a-field", "keyring"):
            expected = [stanza for stanza in parse_stanzas(index) if stanza.get("Package") == package]
            assert list(package_stanzas(index, package)) == expected, (package, index)
    found = list(package_stanzas("\n\n".join(paragraphs), "ubuntu-keyring"))
    assert [stanza["Version"] for stanza in found] == ["1", "3", "4"]


def test_a_pinned_pool_path_skips_the_index(archive: FakeArchive, tmp_path: Path,
                                            http_server: FixtureServer) -> None:
    # The fixture archive names its file ..._all.deb; {arch} is replaced by the Debian architecture.
    resolved = _client(tmp_path, archive).resolve(_pin(archive.deb_sha256, pool=POOL), "x86_64", "all")
    assert extract_member(resolved.path, "usr/share/keyrings/test.gpg") == b"key material\n"
    assert [name for _method, name, _headers in http_server.requests] == [POOL.replace("{arch}", "all")]


def test_a_stale_pool_path_falls_back_to_the_signed_index(archive: FakeArchive, tmp_path: Path,
                                                          http_server: FixtureServer) -> None:
    stale = "pool/main/t/test-keyring/test-keyring_0.1-1_all.deb"
    resolved = _client(tmp_path, archive).resolve(_pin(archive.deb_sha256, pool=stale), "x86_64", "amd64")
    assert resolved.sha256 == archive.deb_sha256
    requested = [name for _method, name, _headers in http_server.requests]
    assert requested[0] == stale and "dists/testsuite/InRelease" in requested


def test_a_pool_path_serving_other_bytes_is_not_trusted(archive: FakeArchive, tmp_path: Path,
                                                        http_server: FixtureServer) -> None:
    # Same path, different content: the sha256 pin refuses it, and the index lists the pinned file.
    http_server.add("pool/main/t/test-keyring/evil.deb", b"not the pinned package")
    client = _client(tmp_path, archive)
    resolved = client.resolve(_pin(archive.deb_sha256, pool="pool/main/t/test-keyring/evil.deb"), "x86_64",
                              "amd64")
    assert http_server.requests[0][1] == "pool/main/t/test-keyring/evil.deb"
    assert resolved.path.read_bytes() != b"not the pinned package"
    assert resolved.filename != "pool/main/t/test-keyring/evil.deb"
