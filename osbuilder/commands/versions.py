"""osbuilder versions [KEY]: the pinned inputs of versions.yaml as a table (key, version, source, pin)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.versions import (
    Agent,
    ArchivePackage,
    DistroAsset,
    Download,
    Kernel,
    Runtime,
    Tool,
    Versions,
)


@dataclass(frozen=True)
class Row:
    key: str  # dotted path in versions.yaml
    version: str
    source: str  # where the input comes from
    pin: str  # what pins it (a sha256, a minimum version), or "" when nothing does

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "version": self.version, "source": self.source, "pin": self.pin}


def _archive_rows(key: str, entry: ArchivePackage) -> Iterator[Row]:
    source = f"{entry.archive} {entry.suite}/{entry.component} {entry.package}"
    if entry.sha256_all:
        yield Row(key, entry.version, source, f"sha256:{entry.sha256_all}")
    for pin in entry.sha256_by_arch:
        yield Row(f"{key}.{pin.arch}", pin.version or entry.version, source, f"sha256:{pin.sha256}")


def rows(versions: Versions) -> Iterator[Row]:
    """One row per pinned input, in the file's order."""
    kernel: Kernel = versions.assets.kernel
    yield Row("assets.kernel", kernel.version, f"default source: {kernel.default_source}", "")
    yield from _archive_rows("assets.kernel.sources.debian", kernel.sources.debian)
    tarball: Download = kernel.sources.tarball
    yield Row("assets.kernel.sources.tarball", tarball.version or "", tarball.url, f"sha256:{tarball.sha256}")
    for asset in ("image", "initrd"):
        pins: DistroAsset = getattr(versions.assets, asset)
        for pin in pins.architecture:
            yield Row(f"assets.{asset}.{pin.arch}", pin.release, f"distros/{pin.distro} ({pin.init} init)", "")
    agent: Agent = versions.assets.agent
    yield Row("assets.agent", agent.version, "agent/ (built from this checkout)", "")
    runtime: Runtime = versions.assets.runtime
    for download in runtime.architecture:
        yield Row(f"assets.runtime.{download.arch}", runtime.version, download.url, f"sha256:{download.sha256}")
    for external in versions.externals:
        yield from _archive_rows(f"externals.{external.name}", external)
    tool: Tool
    for tool in versions.tools:
        yield Row(f"tools.{tool.name}", tool.version, "host tool",
                  f"minimum {tool.minimum}" if tool.minimum else "")


def _under(row: Row, key: str) -> bool:
    if not key:
        return True
    # Rows of per-architecture pins are keyed without the file's `architecture` level.
    shortened = key.replace(".architecture.", ".").removesuffix(".architecture")
    return any(row.key == prefix or row.key.startswith(prefix + ".") for prefix in (key, shortened))


def _table(selected: list[Row]) -> str:
    def short(pin: str) -> str:
        return pin[:7 + 16] + "…" if pin.startswith("sha256:") else pin

    headers = Row("KEY", "VERSION", "SOURCE", "PIN")
    widths = [max(len(getattr(row, name)) for row in [headers, *selected]) for name in ("key", "version")]
    source_width = min(60, max(len(row.source) for row in [headers, *selected]))
    lines = []
    for row in [headers, *selected]:
        source = row.source if len(row.source) <= source_width else "…" + row.source[-(source_width - 1):]
        pin = row.pin if row is headers else short(row.pin)
        lines.append(f"{row.key:<{widths[0]}}  {row.version:<{widths[1]}}  {source:<{source_width}}  {pin}".rstrip())
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", nargs="?", default="", metavar="KEY",
                        help="dotted path of one entry or group, e.g. assets.kernel (default: everything); "
                             "a single value prints as it is")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    versions = context.versions
    value: Any = versions.lookup(args.key)
    selected = [row for row in rows(versions) if _under(row, args.key)]
    data = {"file": str(versions.path), "key": args.key or None, "value": value,
            "entries": [row.to_json() for row in selected]}
    if not isinstance(value, dict | list):  # one value: printed bare, for scripts
        text = value if isinstance(value, str) else json.dumps(value)
    else:
        text = _table(selected) if selected else json.dumps(value, indent=2)
    return Outcome(data, text)


COMMAND = Command("versions", "show the pinned inputs from versions.yaml", configure, run, order=10)
