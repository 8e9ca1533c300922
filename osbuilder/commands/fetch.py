"""osbuilder fetch: download one pinned input, verify it and keep it in the cache."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from osbuilder.arch import host_arch, parse_arch
from osbuilder.cache import sha256_file
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.debarchive import ArchiveClient
from osbuilder.errors import UsageError
from osbuilder.outputs import atomic_output


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", nargs="?", metavar="KEY",
                        help="versions.yaml entry, e.g. assets.kernel.sources.tarball or externals.busybox")
    parser.add_argument("--url", help="download this URL instead of a versions.yaml entry (needs --sha256)")
    parser.add_argument("--sha256", metavar="HEX", help="the sha256 the download must have")
    parser.add_argument("--arch", help="architecture for per-architecture entries (default: the host's)")
    parser.add_argument("--mirror", metavar="URL", help="archive mirror for package entries")
    parser.add_argument("-o", "--output", type=Path, metavar="PATH", help="also copy the verified file here")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    if bool(args.key) == bool(args.url):
        raise UsageError(problem="give either KEY or --url URL --sha256 HEX", where="osbuilder fetch",
                         fix="e.g. osbuilder fetch assets.kernel.sources.tarball")
    if args.url and not args.sha256:
        raise UsageError(problem="--url needs --sha256", where="--sha256",
                         fix="pin the download: --sha256 <64 hex digits>")
    if args.output is not None and not args.output.parent.is_dir():
        raise UsageError(problem=f"directory {args.output.parent} does not exist", where=f"-o {args.output}",
                         fix="create it first or choose another output path")
    arch = parse_arch(args.arch) if args.arch else host_arch()
    fetcher = context.fetcher
    before = len(fetcher.downloaded)
    source: dict[str, Any]
    if args.url:
        path = fetcher.fetch(args.url, args.sha256)
        source = {"url": args.url}
    else:
        path, source = _fetch_key(context, args.key, arch.name, arch.debian, args.mirror)
    downloaded = len(fetcher.downloaded) > before
    if args.output is not None:
        _copy_atomically(path, args.output)
    digest = path.name
    data = {"ok": True, **source, "sha256": digest, "size": path.stat().st_size, "cache_path": str(path),
            "downloaded": downloaded, "output": str(args.output) if args.output else None}
    verb = "downloaded" if downloaded else "already cached"
    text = f"{verb}: {path} (sha256 {digest})" + (f"\ncopied to {args.output}" if args.output else "")
    return Outcome(data, text)


def _fetch_key(context: Context, key: str, arch: str, debian_arch: str, mirror: str | None) -> tuple[Path, dict[str, Any]]:
    versions = context.versions
    entry = versions.lookup(key)
    if key == "assets.runtime":
        download = versions.runtime_download(arch)
        return context.fetcher.fetch(download.url, download.sha256), {"key": key, "url": download.url}
    if isinstance(entry, dict) and "package" in entry:
        pin = versions.archive_package(key)
        resolved = ArchiveClient(context.fetcher, mirror=mirror).resolve(pin, arch, debian_arch)
        return resolved.path, {"key": key, "package": pin.package, "version": pin.version}
    download = versions.download(key)
    return context.fetcher.fetch(download.url, download.sha256), {"key": key, "url": download.url}


def _copy_atomically(source: Path, destination: Path) -> None:
    with atomic_output(destination) as temporary:
        shutil.copyfile(source, temporary)
        if sha256_file(temporary) != source.name:
            raise UsageError(problem="the copy does not match the cached file", where=str(destination))


COMMAND = Command("fetch", "download one input, verify its sha256 and keep it in the cache", configure, run,
                  order=13)
