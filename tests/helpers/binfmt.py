"""A binfmt_misc directory as the kernel shows it, in a temporary directory: each state of the
host's qemu-user registration that osbuilder.binfmt tells apart."""

from __future__ import annotations

from pathlib import Path

REGISTERED = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n"


def fake_binfmt(tmp_path: Path, *, mounted: bool = True, handler: str | None = REGISTERED) -> Path:
    directory = tmp_path / "binfmt_misc"
    directory.mkdir(parents=True)
    if mounted:
        (directory / "register").write_text("")
        (directory / "status").write_text("enabled\n")
    if handler is not None:
        (directory / "qemu-aarch64").write_text(handler)
    return directory
