"""The version line of a tool whose release shapes a step's output bytes (mkfs, the initrd's
compressor), for that step's cache key. Unlike runner.tool_version it reads stderr too: mke2fs -V and
older pigz print their version there."""

from __future__ import annotations

from collections.abc import Sequence

from osbuilder import runner


def version_line(tool: str, args: Sequence[str] = ("--version",), step: str = "") -> str:
    path = runner.require_tool(tool, step)
    result = runner.run([path, *args], check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"
