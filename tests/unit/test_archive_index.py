"""A foreign --arch against an archive without that architecture's index: the error names the
archive and the suite. From a known mirror it is found before anything is built (the suite's
signed InRelease, served here on 127.0.0.1 and signed with a throwaway key); from mmdebstrap's
default mirrors, apt's report of what it could not fetch is turned into the same error."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from osbuilder import binfmt
from osbuilder.arch import ARCHES, host_arch
from osbuilder.cache import Cache
from osbuilder.context import Context
from osbuilder.errors import CommandError, FetchError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS
from osbuilder.rootfs.bootstrappers.archive_index import (
    explained_index_failures,
    missing_indexes,
    require_architecture_index,
)
from osbuilder.rootfs.plan import Request, plan
from osbuilder.rootfs.prepare import prepare
from tests.helpers.binfmt import fake_binfmt
from tests.helpers.fakearchive import make_key, private_distros, publish_release
from tests.helpers.httpserver import FixtureServer

ON_X86_64 = pytest.mark.skipif(host_arch().name != "x86_64", reason="the foreign architecture here is aarch64")

# apt's own lines (mmdebstrap 1.3, apt 2.6), with the archive's host name replaced.
APT_OUTPUT = """\
I: running apt-get update...
Err:1 http://archive.invalid/ubuntu-ports noble InRelease
  Could not resolve 'archive.invalid'
E: Failed to fetch http://archive.invalid/ubuntu-ports/dists/noble/InRelease  Could not resolve 'archive.invalid'
W: Failed to fetch http://archive.invalid/ubuntu-ports/dists/noble-updates/InRelease  Could not resolve 'archive.invalid'
E: Failed to fetch http://mirror.invalid/dists/debian/dists/noble-backports/main/binary-arm64/Packages.xz  Hash Sum mismatch
E: Some index files failed to download. They have been ignored, or old ones used instead.
N: Skipping acquire of configured file 'main/binary-arm64/Packages' as repository 'http://mirror.invalid/ubuntu noble-security InRelease' doesn't support architecture 'arm64'
E: mmdebstrap failed to run
"""


def _job(tmp_path: Path, distro: str, release: str, mirror: str | None,
         distros_dir: Path = DEFAULT_DISTROS_DIR) -> tuple[Any, Context]:
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=distros_dir, cache_dir=tmp_path / "cache")
    request = Request(output=tmp_path / "rootfs", distro=distro, release=release, arch="aarch64", agent_init=True,
                      mirror=mirror)
    return plan(request, context.versions, context.recipe, context.cache.root), context


def test_apts_report_names_each_archive_and_suite() -> None:
    found = missing_indexes(APT_OUTPUT, "arm64")
    assert [(entry.archive, entry.suite) for entry in found] == [
        ("http://archive.invalid/ubuntu-ports", "noble"), ("http://archive.invalid/ubuntu-ports", "noble-updates"),
        ("http://mirror.invalid/dists/debian", "noble-backports"),  # the last /dists/ ends the archive
        ("http://mirror.invalid/ubuntu", "noble-security")]
    assert found[0].reason == "Could not resolve 'archive.invalid'" and found[2].reason == "Hash Sum mismatch"
    assert found[3].reason == "it has no arm64 index"
    # another architecture's refusal is not ours
    assert [(entry.archive, entry.suite) for entry in missing_indexes(APT_OUTPUT, "riscv64")] == [
        ("http://archive.invalid/ubuntu-ports", "noble"), ("http://archive.invalid/ubuntu-ports", "noble-updates"),
        ("http://mirror.invalid/dists/debian", "noble-backports")]
    assert missing_indexes("E: mmdebstrap failed to run\n", "arm64") == []


@ON_X86_64
def test_a_failed_bootstrap_says_which_archive_had_no_index(tmp_path: Path) -> None:
    planned, _context = _job(tmp_path, "ubuntu", "noble", None)
    with pytest.raises(CommandError) as explained, explained_index_failures(planned.job):
        raise CommandError(problem="mmdebstrap failed", argv=["mmdebstrap"], returncode=25, stderr_tail=APT_OUTPUT)
    error = explained.value
    assert error.exit_code == 1 and error.where == "mmdebstrap's default mirrors"
    assert error.problem.startswith("no arm64 index is reachable: http://archive.invalid/ubuntu-ports suite noble "
                                    "(Could not resolve 'archive.invalid')")
    assert "OSBUILDER_UBUNTU_MIRROR" in error.fix and "ports archive" in error.fix
    assert (error.stderr_tail, error.returncode) == (APT_OUTPUT, 25)  # mmdebstrap's own lines are kept
    lacking = "\n".join(line for line in APT_OUTPUT.splitlines() if "Failed to fetch" not in line)
    with pytest.raises(CommandError) as refused, explained_index_failures(planned.job):
        raise CommandError(problem="mmdebstrap failed", stderr_tail=lacking)
    assert refused.value.exit_code == 2  # only "doesn't support architecture": bad input, as beforehand
    assert refused.value.problem == ("no arm64 index is reachable: http://mirror.invalid/ubuntu suite noble-security "
                                     "(it has no arm64 index)")
    other = CommandError(problem="mmdebstrap failed", stderr_tail="E: dpkg was interrupted\n")
    with pytest.raises(CommandError) as kept, explained_index_failures(planned.job):
        raise other
    assert kept.value is other


@pytest.fixture
def signing_home(tmp_path: Path) -> Path:
    home = tmp_path / "gnupg"
    make_key(home, "archive")
    return home


@ON_X86_64
def test_a_mirror_without_the_architecture_is_refused_before_any_work(
        tmp_path: Path, signing_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = FixtureServer().start()
    try:
        mirror = publish_release(server, suite="bookworm", architectures="amd64 i386", signing_home=signing_home)
        # A recipe of a private archive: its keyring is the one that signed the InRelease.
        distros = private_distros(tmp_path / "distros", signing_home / "keyring.gpg")
        planned, context = _job(tmp_path, "debian", "bookworm", mirror, distros)
        monkeypatch.setattr(binfmt, "BINFMT_DIR", fake_binfmt(tmp_path))
        monkeypatch.setattr(binfmt, "find_tool", lambda name: f"/usr/bin/{name}")
        with pytest.raises(UsageError) as refused:
            prepare(planned, context.versions, context.cache, context.fetcher, {})
        error = refused.value
        assert error.exit_code == 2 and error.where == f"mirror {mirror}"
        assert error.problem == f"the archive {mirror} has no arm64 index for suite bookworm (it lists amd64 i386)"
        assert "pass --mirror URL (or set OSBUILDER_DEBIAN_MIRROR)" in error.fix
        # Nothing was built: the agent is compiled after the archive was asked.
        assert not (tmp_path / "rootfs").exists() and not (context.cache.root / "agent").exists()
        assert [path for _method, path, _headers in server.requests] == ["debian/dists/bookworm/InRelease"]

        carries = publish_release(server, suite="bookworm", architectures="amd64 arm64", signing_home=signing_home,
                                  prefix="debian-ports")
        with_arm64 = dataclasses.replace(planned.job, mirror=carries)
        require_architecture_index(with_arm64, signing_home / "keyring.gpg", context.fetcher)

        unreachable = "http://127.0.0.1:9/debian"  # the discard port: nothing serves HTTP there
        with pytest.raises(FetchError) as unreadable:
            require_architecture_index(dataclasses.replace(with_arm64, mirror=unreachable),
                                       signing_home / "keyring.gpg", context.fetcher)
        assert unreadable.value.problem.startswith(f"no arm64 index is reachable: the archive {unreachable} "
                                                   "cannot be read for suite bookworm: cannot reach the archive")
        assert unreadable.value.exit_code == 1
        # No InRelease (an archive with Release and Release.gpg only): mmdebstrap judges it.
        require_architecture_index(dataclasses.replace(with_arm64, mirror=f"{carries}-gone"),
                                   signing_home / "keyring.gpg", context.fetcher)
        offline = Fetcher(Cache(tmp_path / "offline"), offline=True)
        require_architecture_index(dataclasses.replace(with_arm64, mirror=f"{carries}-gone"),
                                   signing_home / "keyring.gpg", offline)  # --offline: nothing is asked
        x86 = dataclasses.replace(planned.job, arch=ARCHES["x86_64"])
        require_architecture_index(x86, signing_home / "keyring.gpg", context.fetcher)  # the host's own: not asked
        for form in (f"deb {carries}-gone bookworm main", "file:///srv/mirror"):  # left to mmdebstrap
            require_architecture_index(dataclasses.replace(with_arm64, mirror=form), signing_home / "keyring.gpg",
                                       context.fetcher)
        require_architecture_index(dataclasses.replace(with_arm64, mirror=f"{carries}-gone"), None, context.fetcher)
        assert len(server.requests) == 3  # bookworm without arm64, with arm64, -gone (404)

        # No Architectures field: apt takes every architecture, so does the check.
        unlisted = publish_release(server, suite="bookworm", architectures="", signing_home=signing_home,
                                   prefix="unlisted")
        require_architecture_index(dataclasses.replace(with_arm64, mirror=unlisted), signing_home / "keyring.gpg",
                                   context.fetcher)
        # Signed by another key: the signature error as it is, not a missing index.
        other_home = tmp_path / "other-gnupg"
        make_key(other_home, "other")
        forged = publish_release(server, suite="bookworm", architectures="amd64", signing_home=other_home,
                                 prefix="forged")
        with pytest.raises(FetchError) as forgery:
            require_architecture_index(dataclasses.replace(with_arm64, mirror=forged), signing_home / "keyring.gpg",
                                       context.fetcher)
        assert "does not verify" in forgery.value.problem and "index" not in forgery.value.problem
    finally:
        server.stop()
