"""Packages from a Debian-style archive, verified through its signed metadata.

For a pinned (package, version, sha256): the suite's InRelease is checked with gpgv against the
archive keyring, the Packages index is fetched by the SHA256 that the signed file lists, the
package's stanza must carry the pinned version and sha256, and the .deb is fetched by that digest.
A .deb already in the cache with the pinned digest needs no network at all.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from osbuilder import runner, staging
from osbuilder.errors import BuildError, FetchError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.mirrors import archive_mirror
from osbuilder.versions import ArchivePackage

log = logging.getLogger(__name__)

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@dataclass(frozen=True)
class ResolvedDeb:
    package: str
    version: str
    sha256: str
    path: Path  # the verified .deb in the cache
    filename: str  # pool path in the archive
    mirror: str | None  # None when it came from the cache


def parse_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Deb822 paragraphs; continuation lines are joined with newlines."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif line[0].isspace() and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    if fields:
        yield fields


def release_sha256(release_text: str) -> dict[str, tuple[str, int]]:
    """path -> (sha256, size) from a Release file's SHA256 field."""
    for stanza in parse_stanzas(release_text):
        listing = stanza.get("SHA256", "")
        result = {}
        for line in listing.splitlines():
            parts = line.split()
            if len(parts) == 3:
                result[parts[2]] = (parts[0], int(parts[1]))
        return result
    return {}


class ArchiveClient:
    def __init__(self, fetcher: Fetcher, *, mirror: str | None = None, keyring: Path | None = None) -> None:
        self.fetcher = fetcher
        self.explicit_mirror = mirror
        self.keyring = keyring

    def resolve(self, pin: ArchivePackage, arch: str, debian_arch: str) -> ResolvedDeb:
        sha256 = pin.sha256_for(arch)
        cached = self.fetcher.cached(sha256)
        if cached:
            return ResolvedDeb(pin.package, pin.version, sha256, cached, "", None)
        mirror = archive_mirror(pin.archive, pin.suite, self.explicit_mirror)
        if mirror is None:
            raise UsageError(
                problem=f"no {pin.archive} mirror configured to fetch {pin.package}",
                where=f"versions.yaml ({pin.key})",
                fix=f"pass --mirror, set OSBUILDER_{pin.archive.upper()}_MIRROR, or add the archive to apt sources",
            )
        pool = pin.pool_path(debian_arch)
        if pool is not None:
            try:
                path = self.fetcher.fetch(f"{mirror}/{pool}", sha256, what=f"{pin.package}_{pin.version}")
                return ResolvedDeb(pin.package, pin.version, sha256, path, pool, mirror)
            except FetchError as error:
                log.info("%s is not at its pinned pool path (%s); looking it up in the signed index", pin.package,
                         error.problem)
        release = self.verified_release(mirror, pin.suite, pin.archive)
        index = self.packages_index(mirror, pin.suite, release, pin.component, debian_arch)
        stanza = _find_version(index, pin)
        if stanza.get("SHA256") != sha256:
            raise BuildError(
                problem=(f"the signed index lists {pin.package} {pin.version} with sha256 {stanza.get('SHA256')}, "
                         f"but versions.yaml pins {sha256}"),
                where=f"versions.yaml ({pin.key})",
                fix="the pin is wrong or the archive changed; re-check and update the sha256 pin",
            )
        url = f"{mirror}/{stanza['Filename']}"
        path = self.fetcher.fetch(url, sha256, what=f"{pin.package}_{pin.version}")
        return ResolvedDeb(pin.package, pin.version, sha256, path, stanza["Filename"], mirror)

    def verified_release(self, mirror: str, suite: str, archive: str) -> str:
        """The InRelease content after gpgv accepted its signature."""
        keyring = self.keyring or DEBIAN_KEYRING
        if not keyring.is_file():
            raise UsageError(problem=f"archive keyring {keyring} not found", where="keyring",
                             fix="apt-get install debian-archive-keyring")
        url = f"{mirror}/dists/{suite}/InRelease"
        with staging.temporary_directory(None, "release") as tmp:
            signed = tmp / "InRelease"
            _download_unpinned(self.fetcher, url, signed)
            verified = tmp / "Release"
            gpgv = runner.require_tool("gpgv", "verify archive signatures")
            result = runner.run([gpgv, "--keyring", keyring, "--output", verified, signed], check=False)
            if result.returncode != 0:
                raise FetchError(
                    problem=f"the signature of {suite}'s InRelease does not verify against {keyring}",
                    where=url,
                    fix="the mirror serves unsigned or tampered metadata; use another mirror",
                )
            text = verified.read_text(errors="replace")
        stanza = next(parse_stanzas(text), {})
        if suite not in (stanza.get("Codename"), stanza.get("Suite")):
            raise FetchError(problem=f"InRelease is for '{stanza.get('Codename')}', not '{suite}'", where=url,
                             fix="check the mirror URL")
        return text

    def packages_index(self, mirror: str, suite: str, release: str, component: str, debian_arch: str) -> str:
        """The decompressed Packages index, fetched by the digest the signed Release lists.

        Architecture-independent packages are listed in every architecture's index (the archive
        says so with No-Support-for-Architecture-all), so the host architecture's index is tried
        before binary-all.
        """
        listing = release_sha256(release)
        by_hash = re.search(r"^Acquire-By-Hash:\s*yes", release, re.MULTILINE) is not None
        for arch in dict.fromkeys([debian_arch, "all"]):
            for suffix, opener in ((".xz", lzma.decompress), (".gz", gzip.decompress)):
                path = f"{component}/binary-{arch}/Packages{suffix}"
                if path not in listing:
                    continue
                digest, _size = listing[path]
                urls = [f"{mirror}/dists/{suite}/{path}"]
                if by_hash:
                    urls.insert(0, f"{mirror}/dists/{suite}/{component}/binary-{arch}/by-hash/SHA256/{digest}")
                blob = self._fetch_first(urls, digest, f"{suite} {path}")
                return opener(blob.read_bytes()).decode(errors="replace")
        raise FetchError(problem=f"{suite} has no Packages index for {component}/{debian_arch}",
                         where=f"{mirror}/dists/{suite}", fix="check the suite, component and architecture")

    def _fetch_first(self, urls: list[str], digest: str, what: str) -> Path:
        # by-hash paths are the consistent choice during a mirror update, but not every mirror or
        # proxy serves them; the plain path is verified against the same signed digest.
        for url in urls[:-1]:
            try:
                return self.fetcher.fetch(url, digest, what=what)
            except FetchError as error:
                log.debug("falling back from %s: %s", url, error.problem)
        return self.fetcher.fetch(urls[-1], digest, what=what)


def package_stanzas(index: str, package: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a Packages index for one package. A full index has some 65,000 paragraphs;
    finding the few for one package with a regular expression, and parsing only those, takes
    milliseconds instead of the second that parsing all of them takes."""
    for match in re.finditer(rf"^Package:[ \t]*{re.escape(package)}[ \t]*$", index, re.MULTILINE):
        start = index.rfind("\n\n", 0, match.start()) + 1  # 0 when it is the first paragraph
        end = index.find("\n\n", match.end())
        for stanza in parse_stanzas(index[start:end if end != -1 else len(index)]):
            if stanza.get("Package") == package:
                yield stanza


def _find_version(index: str, pin: ArchivePackage) -> dict[str, str]:
    versions = []
    for stanza in package_stanzas(index, pin.package):
        if stanza.get("Version") == pin.version:
            return stanza
        versions.append(stanza.get("Version", "?"))
    raise BuildError(
        problem=f"{pin.suite} does not list {pin.package} {pin.version}"
                + (f" (it lists {', '.join(versions)})" if versions else " at all"),
        where=f"versions.yaml ({pin.key}.version)",
        fix="pin a version the archive carries, with its sha256 from the index",
    )


def _download_unpinned(fetcher: Fetcher, url: str, dest: Path) -> None:
    """Signed metadata has no digest to pin; its signature is what we verify instead."""
    if fetcher.offline:
        raise FetchError(problem="archive metadata is needed but --offline is set", where=url,
                         fix="run once without --offline so the pinned packages reach the cache")
    try:
        response = fetcher.session.get(url, timeout=(fetcher.policy.connect_timeout, fetcher.policy.read_timeout))
    except Exception as exc:
        raise FetchError(problem=f"cannot reach the archive: {exc}", where=url,
                         fix="check the mirror (--mirror) and the network") from exc
    if response.status_code != 200:
        raise FetchError(problem=f"HTTP {response.status_code} for {url}", where=url,
                         fix="check the mirror and the suite name")
    dest.write_bytes(response.content)


def deb_members(deb: Path) -> Iterator[tuple[str, bytes]]:
    """(path, content) of regular files in a .deb's data archive."""
    import libarchive  # only fetched packages are read, so the common cache-hit path skips the import

    with libarchive.file_reader(str(deb)) as outer:
        for entry in outer:
            if not entry.pathname.startswith("data.tar"):
                continue
            data = b"".join(entry.get_blocks())
            with libarchive.memory_reader(data) as inner:
                for member in inner:
                    if member.isfile:
                        yield _normalise(member.pathname), b"".join(member.get_blocks())
            return
    raise BuildError(problem=f"{deb} has no data archive", where=str(deb), fix="the .deb is damaged")


def extract_member(deb: Path, member: str) -> bytes:
    wanted = _normalise(member)
    for path, content in deb_members(deb):
        if path == wanted:
            return content
    raise BuildError(problem=f"{deb.name} has no file {member}", where=str(deb),
                     fix="check the member path in the recipe or versions.yaml")


def _normalise(path: str) -> str:
    return str(PurePosixPath("/", path)).lstrip("/")
