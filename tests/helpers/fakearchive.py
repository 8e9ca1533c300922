"""A Debian-style archive signed with a throwaway key, served by the local fixture server.

It exercises the same verification as the real archive: gpgv on InRelease, the Packages index by
the digest the signed file lists, the .deb by the digest the index lists.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.httpserver import FixtureServer


@dataclass
class FakeArchive:
    mirror: str
    keyring: Path
    deb_sha256: str
    packages_path: str
    version: str


def _gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    """gpg with its own GNUPGHOME; the gpg-agent it starts for the secret key is stopped right after,
    so that no agent outlives the test (an agent stays up as long as its home exists)."""
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        return subprocess.run(["gpg", "--batch", *args], input=input, env=env, check=True, capture_output=True).stdout
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


def make_key(home: Path, name: str) -> Path:
    """A new signing key in its own GNUPGHOME; returns the exported (binary) public keyring."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.invalid>", "ed25519", "sign", "never")
    keyring = home / "keyring.gpg"
    keyring.write_bytes(_gpg(home, "--export"))
    return keyring


def build_deb(work: Path, package: str, version: str, files: dict[str, bytes]) -> bytes:
    root = work / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.invalid>\n"
        "Description: test package\n")
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    deb = work / f"{package}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb.read_bytes()


def publish(server: FixtureServer, work: Path, *, suite: str, package: str, version: str,
            files: dict[str, bytes], signing_home: Path, other_versions: tuple[str, ...] = ()) -> FakeArchive:
    deb = build_deb(work, package, version, files)
    deb_sha = hashlib.sha256(deb).hexdigest()
    pool = f"pool/main/{package[0]}/{package}/{package}_{version}_all.deb"
    server.add(pool, deb)
    stanzas = [f"Package: {package}\nVersion: {other}\nArchitecture: all\nFilename: pool/x.deb\n"
               f"Size: 1\nSHA256: {'0' * 64}\n" for other in other_versions]
    stanzas.append(f"Package: {package}\nVersion: {version}\nArchitecture: all\nFilename: {pool}\n"
                   f"Size: {len(deb)}\nSHA256: {deb_sha}\n")
    packages = lzma.compress("\n".join(stanzas).encode())
    packages_path = f"dists/{suite}/main/binary-amd64/Packages.xz"
    server.add(packages_path, packages)
    release = (f"Origin: Test\nCodename: {suite}\nSuite: {suite}\nArchitectures: amd64\nComponents: main\n"
               f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} main/binary-amd64/Packages.xz\n")
    signed = _gpg(signing_home, "--clearsign", "--output", "-", input=release.encode())
    server.add(f"dists/{suite}/InRelease", signed)
    return FakeArchive(f"http://127.0.0.1:{server.port}", signing_home / "keyring.gpg", deb_sha, packages_path,
                       version)


def publish_release(server: FixtureServer, *, suite: str, architectures: str, signing_home: Path,
                    prefix: str = "debian") -> str:
    """Only a suite's signed InRelease, listing `architectures` (none: no Architectures field);
    returns the archive's URL."""
    listed = f"Architectures: {architectures}\n" if architectures else ""  # "": no such field
    release = f"Origin: Test\nCodename: {suite}\nSuite: {suite}\n{listed}Components: main\nSHA256:\n"
    server.add(f"{prefix}/dists/{suite}/InRelease",
               _gpg(signing_home, "--clearsign", "--output", "-", input=release.encode()))
    return f"http://127.0.0.1:{server.port}/{prefix}"


DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def private_distros(destination: Path, keyring: Path) -> Path:
    """The repository's recipes, with Debian's verified by `keyring` (an archive of one's own)."""
    import shutil

    from osbuilder.paths import DEFAULT_DISTROS_DIR

    shutil.copytree(DEFAULT_DISTROS_DIR, destination)
    recipe = destination / "debian" / "recipe.yaml"
    text = recipe.read_text()
    assert f'host-path: "{DEBIAN_KEYRING}"' in text
    recipe.write_text(text.replace(DEBIAN_KEYRING, str(keyring)))
    return destination
