"""Mirror choice: explicit, environment, then the host's apt sources (deb822 and one-line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbuilder.mirrors import archive_mirror, read_apt_sources


def test_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    sources_dir = tmp_path / "sources.list.d"
    sources_dir.mkdir()
    (sources_dir / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n")
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [signed-by=/k.gpg] http://other.invalid/ubuntu noble main\n")
    sources = read_apt_sources(one_line, sources_dir)
    assert archive_mirror("debian", "trixie", sources=sources) == "http://mirror.invalid/debian"
    assert archive_mirror("debian", "trixie-security", sources=sources) == "http://mirror.invalid/debian-security"
    assert archive_mirror("ubuntu", "noble", sources=sources) == "http://other.invalid/ubuntu"


def test_explicit_and_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSBUILDER_DEBIAN_MIRROR", "http://env.invalid/debian/")
    assert archive_mirror("debian", "bookworm", sources=[]) == "http://env.invalid/debian"
    assert archive_mirror("debian", "bookworm", explicit="http://cli.invalid/d/", sources=[]) == "http://cli.invalid/d"
    monkeypatch.delenv("OSBUILDER_DEBIAN_MIRROR")
    assert archive_mirror("ubuntu", "noble", sources=[]) is None
