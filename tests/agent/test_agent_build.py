"""agent/Makefile: a static, stripped, small, reproducible binary; warnings are errors."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Harness  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration

PT_DYNAMIC, PT_INTERP = 2, 3


def elf_program_header_types(data: bytes) -> list[int]:
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "expected ELF64 little-endian"
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    return [struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)]


def elf_section_names(data: bytes) -> list[str]:
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if e_shnum == 0:
        return []

    def sh(i: int) -> tuple[int, int, int]:
        base = e_shoff + i * e_shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, str_off, str_size = sh(e_shstrndx)
    strtab = data[str_off:str_off + str_size]
    return [strtab[n:strtab.index(b"\0", n)].decode() for n, _, _ in (sh(i) for i in range(e_shnum))]


def test_static_stripped_and_small(agent_binary: Path) -> None:
    data = agent_binary.read_bytes()
    assert len(data) < 1 << 20, f"{len(data)} bytes"
    types = elf_program_header_types(data)
    assert PT_INTERP not in types and PT_DYNAMIC not in types
    sections = elf_section_names(data)
    assert ".symtab" not in sections and ".debug_info" not in sections and ".comment" not in sections
    if shutil.which("file"):
        out = subprocess.run(["file", "-b", str(agent_binary)], capture_output=True, text=True).stdout
        assert "statically linked" in out and "stripped" in out and "not stripped" not in out


def test_two_builds_are_byte_identical(tmp_path: Path, agent_binary: Path, harness: type[Harness]) -> None:
    a = harness.build_agent(tmp_path / "one")
    b = harness.build_agent(tmp_path / "deeper" / "two")
    assert a.read_bytes() == b.read_bytes() == agent_binary.read_bytes()


def test_version_comes_from_the_version_file(agent_binary: Path, harness: type[Harness]) -> None:
    out = subprocess.run([str(agent_binary), "--version"], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == harness.agent_version_file() == "4.1.0"


def test_build_flags(tmp_path: Path, harness: type[Harness]) -> None:
    dry = subprocess.run(["make", "-n", "-B", "-C", str(harness.agent_dir), f"O={tmp_path}"],
                         capture_output=True, text=True, check=True, env=harness.make_env()).stdout
    compiles = [line for line in dry.splitlines() if " -c " in line]
    assert compiles, dry
    for line in compiles:
        assert line.startswith("musl-gcc ")
        for flag in ("-Wall", "-Wextra", "-Werror", "-Os", "-ffile-prefix-map="):
            assert flag in line, (flag, line)
    link = [line for line in dry.splitlines() if " -o " in line and " -c " not in line]
    assert link and "-static" in link[0]
    for src in (harness.agent_dir / "src").glob("*.[ch]"):
        assert not re.search(r"__(DATE|TIME|TIMESTAMP)__", src.read_text()), src


def test_bad_version_is_refused(tmp_path: Path, harness: type[Harness]) -> None:
    out = subprocess.run(["make", "-C", str(harness.agent_dir), f"O={tmp_path}", 'VERSION=1.0 "x'],
                         capture_output=True, text=True, env=harness.make_env())
    assert out.returncode != 0 and "VERSION" in out.stderr


def test_install_target(tmp_path: Path, agent_binary: Path, harness: type[Harness]) -> None:
    subprocess.run(["make", "-s", "-C", str(harness.agent_dir), f"O={tmp_path / 'b'}", "install",
                    f"DESTDIR={tmp_path / 'root'}"], check=True, capture_output=True, env=harness.make_env())
    installed = tmp_path / "root" / "usr" / "bin" / "kata-agent"
    assert installed.read_bytes() == agent_binary.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o755


def test_gcc_static_fallback(tmp_path: Path, harness: type[Harness]) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    probe = subprocess.run(["gcc", "-static", "-x", "c", "-o", str(tmp_path / "p"), "-"],
                           input="int main(void){return 0;}", capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("gcc cannot link statically here (no libc.a)")
    binary = harness.build_agent(tmp_path / "gcc", "CC=gcc")
    assert PT_INTERP not in elf_program_header_types(binary.read_bytes())
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == harness.agent_version_file()
