"""Agent inputs: local binaries and release tarballs, every tarball member checked."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from osbuilder.errors import UsageError
from osbuilder.rootfs.agent import from_file, from_tarball

ELF = b"\x7fELF agent"


def _tarball(path: Path, members: list[tuple[str, bytes, bytes | str]], compress: str = "zstd") -> Path:
    """members: (name, tar type, data or link target); written with Python, compressed with the CLI."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755
            if kind == tarfile.REGTYPE:
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = str(payload)
                tar.addfile(info)
    plain = path.with_suffix("")
    plain.write_bytes(buffer.getvalue())
    subprocess.run([compress, "-q", "-f", str(plain)] if compress == "zstd" else [compress, "-f", str(plain)],
                   check=True)
    plain.unlink(missing_ok=True)
    return path


GOOD = [("./usr", tarfile.DIRTYPE, ""), ("./usr/bin", tarfile.DIRTYPE, ""),
        ("./usr/bin/kata-agent", tarfile.REGTYPE, ELF),
        ("./usr/lib/systemd/system/kata-agent.service", tarfile.REGTYPE, b"[Service]\n"),
        ("./usr/bin/agent-link", tarfile.SYMTYPE, "kata-agent"),
        ("./usr/bin/agent-hard", tarfile.LNKTYPE, "./usr/bin/kata-agent"),
        ("./VERSION", tarfile.REGTYPE, b"# release\n4.2.0\n")]


@pytest.mark.parametrize(("suffix", "compressor"), [(".tar.zst", "zstd"), (".tar.xz", "xz")])
def test_a_good_tarball(tmp_path: Path, suffix: str, compressor: str) -> None:
    source = from_tarball(_tarball(tmp_path / f"agent{suffix}", GOOD, compressor), "kata-agent")
    assert source.kind == "tarball" and source.binary == ELF
    assert source.version == "4.2.0"
    paths = [member.path for member in source.members]
    assert "VERSION" not in paths and "usr/lib/systemd/system/kata-agent.service" in paths
    assert [m.kind for m in source.members if m.path == "usr/bin/agent-hard"] == ["hardlink"]


@pytest.mark.parametrize(("member", "message"), [
    (("./../evil", tarfile.REGTYPE, b"x"), "contains '..'"),
    (("/etc/passwd", tarfile.REGTYPE, b"x"), "absolute path"),
    (("./usr/bin/up", tarfile.SYMTYPE, "../../../etc"), "points outside the rootfs"),
    (("./usr/bin/hard", tarfile.LNKTYPE, "/etc/shadow"), "absolute path"),
    (("./usr/bin/hard", tarfile.LNKTYPE, "./not/there"), "earlier member"),
    (("./dev/sda", tarfile.BLKTYPE, ""), "device"),
])
def test_unsafe_members_are_refused(tmp_path: Path, member: tuple[str, bytes, bytes | str], message: str) -> None:
    tarball = _tarball(tmp_path / "agent.tar.zst", [*GOOD, member])
    with pytest.raises(UsageError) as caught:
        from_tarball(tarball, "kata-agent")
    assert message in caught.value.problem
    assert caught.value.exit_code == 2
    assert str(tarball) in caught.value.where


def test_absolute_symlinks_stay_inside(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "agent.tar.zst", [*GOOD, ("./etc/x", tarfile.SYMTYPE, "/usr/bin/kata-agent")])
    assert any(member.path == "etc/x" for member in from_tarball(tarball, "kata-agent").members)


def test_tarball_without_the_agent(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "agent.tar.zst", GOOD)
    with pytest.raises(UsageError, match="no regular file usr/bin/other"):
        from_tarball(tarball, "other")


def test_not_a_tarball(tmp_path: Path) -> None:
    junk = tmp_path / "agent.tar.zst"
    junk.write_bytes(b"definitely not an archive" * 10)
    with pytest.raises(UsageError, match="cannot read the tarball"):
        from_tarball(junk, "kata-agent")


def test_local_binary(tmp_path: Path) -> None:
    binary = tmp_path / "kata-agent"
    binary.write_bytes(ELF)
    assert from_file(binary).binary == ELF
    with pytest.raises(UsageError, match="does not exist"):
        from_file(tmp_path / "missing")
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match="not an ELF"):
        from_file(script)
    with pytest.raises(UsageError, match="not a regular file"):
        from_file(tmp_path)
