"""A cache entry as one OCI artifact, and back.

  manifest   tagged by the entry's content key; annotations: org.opencontainers.image.created (from
             SOURCE_DATE_EPOCH), the osbuilder version, the step (the entry's kind) and the key
  config     the entry's record (application/vnd.osbuilder.cache.entry.v1+json): kind, key, the
             inputs the key is the digest of (options, input digests, tool versions), what the build
             recorded, and every file with its size, sha256 and mode, and every symlink
  layers     one per file, zstd-compressed (…file.v1+zstd) unless that saves less than a tenth
             (…file.v1: stored as it is, e.g. an initrd or a bundle that is compressed already)

Reading an artifact back checks everything against the key before a byte is used: the config's
kind and key, and that the key is the digest of its recorded inputs (a tag that points at another
entry's artifact is refused); every layer's digest (as it is downloaded) and every file's sha256.
The same entry always packs to the same bytes (sorted, compact JSON; deterministic zstd), so two
machines that push one key push one manifest.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from osbuilder import __version__, runner
from osbuilder.cache import ENTRY_META, content_key, sha256_file
from osbuilder.errors import UsageError
from osbuilder.remote.client import MANIFEST_TYPE, refused
from osbuilder.tree import environment_epoch

CONFIG_TYPE = "application/vnd.osbuilder.cache.entry.v1+json"
FILE_TYPE = "application/vnd.osbuilder.cache.file.v1"
ZSTD_TYPE = f"{FILE_TYPE}+zstd"
CREATED = "org.opencontainers.image.created"
TITLE = "org.opencontainers.image.title"
STEP = "dev.osbuilder.step"
VERSION = "dev.osbuilder.version"
KEY = "dev.osbuilder.key"
FORMAT = 1
MAX_CONFIG = 16 << 20
ZSTD_LEVEL = 3
WORTH_COMPRESSING = 0.9  # keep the zstd blob only if it is below this fraction of the file
LOCAL_ONLY = ("created", "pulled")  # ENTRY_META fields about this machine, not the entry
KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
TAG = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to the entry, POSIX
    size: int
    sha256: str
    mode: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "mode": self.mode}


@dataclass(frozen=True)
class Layer:
    blob: Path  # what is uploaded (the file itself, or its zstd)
    descriptor: dict[str, Any]


@dataclass(frozen=True)
class Packed:
    manifest: dict[str, Any]
    config: Path
    config_descriptor: dict[str, Any]
    layers: tuple[Layer, ...]

    @property
    def size(self) -> int:
        return sum(int(layer.descriptor["size"]) for layer in self.layers) + int(self.config_descriptor["size"])


@dataclass(frozen=True)
class Entry:
    """An artifact's config, checked against the key it was asked for."""

    kind: str
    key: str
    meta: dict[str, Any]  # ENTRY_META as the building machine wrote it, less its local fields
    files: tuple[FileRecord, ...]
    symlinks: tuple[tuple[str, str], ...]


def created(environment: Mapping[str, str] | None = None) -> str:
    """org.opencontainers.image.created: SOURCE_DATE_EPOCH when set (reproducible), else now."""
    epoch = environment_epoch(environment)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if epoch is None else epoch))


def check_tag(key: str, where: str) -> None:
    if not TAG.fullmatch(key):
        raise UsageError(problem=f"'{key}' is not a cache key (64 hex digits)", where=where,
                         fix="give the key a build's --json reports (cache_key) or `osbuilder cache list` shows")


def pack(entry: Path, kind: str, key: str, workdir: Path, environment: Mapping[str, str] | None = None) -> Packed:
    """The artifact of a complete entry; blobs that need writing (zstd, the config) go to workdir."""
    meta = json.loads((entry / ENTRY_META).read_text())
    files, symlinks = _contents(entry)
    layers = []
    for index, record in enumerate(files):
        source = entry / record.path
        blob, media_type = _layer_blob(source, record.size, workdir / f"{index}.zst")
        layers.append(Layer(blob, {"mediaType": media_type, "digest": "sha256:" + sha256_file(blob),
                                   "size": blob.stat().st_size, "annotations": {TITLE: record.path}}))
    config = {
        "format": FORMAT, "osbuilder": __version__, "kind": kind, "key": key,
        "meta": {name: value for name, value in meta.items() if name not in LOCAL_ONLY},
        "files": [record.to_json() for record in files],
        "symlinks": [{"path": path, "target": target} for path, target in symlinks],
    }
    config_path = workdir / "config.json"
    config_path.write_bytes(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode())
    config_descriptor = {"mediaType": CONFIG_TYPE, "digest": "sha256:" + sha256_file(config_path),
                         "size": config_path.stat().st_size}
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config_descriptor,
        "layers": [layer.descriptor for layer in layers],
        "annotations": {CREATED: created(environment), VERSION: __version__, STEP: kind, KEY: key},
    }
    return Packed(manifest, config_path, config_descriptor, tuple(layers))


def _contents(entry: Path) -> tuple[list[FileRecord], list[tuple[str, str]]]:
    files: list[FileRecord] = []
    symlinks: list[tuple[str, str]] = []
    for path in sorted(entry.rglob("*")):
        relative = path.relative_to(entry).as_posix()
        if relative == ENTRY_META:
            continue
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            symlinks.append((relative, os.readlink(path)))
        elif stat.S_ISREG(info.st_mode):
            files.append(FileRecord(relative, info.st_size, sha256_file(path), stat.S_IMODE(info.st_mode)))
        elif not stat.S_ISDIR(info.st_mode):
            raise refused(f"{path} is neither a file, a directory nor a symlink: it cannot be pushed")
    return files, symlinks


def _layer_blob(source: Path, size: int, compressed: Path) -> tuple[Path, str]:
    if size < 4096:
        return source, FILE_TYPE
    runner.run(["zstd", "-q", "-f", f"-{ZSTD_LEVEL}", "-T0", "--no-progress", source, "-o", compressed],
               what="compress a cache entry's file for the remote cache")
    if compressed.stat().st_size < size * WORTH_COMPRESSING:
        return compressed, ZSTD_TYPE
    compressed.unlink()
    return source, FILE_TYPE


def read_manifest(data: dict[str, Any], kind: str | None, key: str) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The step, the config descriptor and the layers of a manifest tagged `key` (refused unless it
    is an osbuilder cache entry, of `kind` when given)."""
    config = data.get("config")
    layers = data.get("layers")
    annotations = data.get("annotations") or {}
    if not isinstance(config, dict) or config.get("mediaType") != CONFIG_TYPE or not isinstance(layers, list):
        raise refused(f"the artifact tagged {key[:16]} is not an osbuilder cache entry")
    step = annotations.get(STEP) if isinstance(annotations, dict) else None
    if not isinstance(step, str) or not KIND.fullmatch(step):
        raise refused(f"the artifact tagged {key[:16]} names no step")
    if kind is not None and step != kind:
        raise refused(f"the artifact tagged {key[:16]} holds {_article(step)} {step} entry, not {_article(kind)} "
                      f"{kind} entry")
    for descriptor in [config, *layers]:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str) \
                or not isinstance(descriptor.get("size"), int) or descriptor["size"] < 0:
            raise refused(f"the artifact tagged {key[:16]} has a malformed descriptor")
    return step, config, layers


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def read_config(body: bytes, kind: str, key: str, layers: list[dict[str, Any]]) -> Entry:
    """The config, checked: its kind and key, the key as the digest of its inputs, its files."""
    try:
        config = json.loads(body)
    except ValueError:
        raise refused(f"the config of {kind} {key[:16]} is not JSON") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise refused(f"the config of {kind} {key[:16]} is not an entry record this osbuilder reads",
                      "push the entry again with this version of osbuilder")
    if config.get("kind") != kind or config.get("key") != key:
        raise refused(f"the artifact tagged {key[:16]} records {config.get('kind')} {str(config.get('key'))[:16]}, "
                      f"not {kind} {key[:16]}: the tag points at another entry")
    meta = config.get("meta")
    inputs = meta.get("inputs") if isinstance(meta, dict) else None
    if not isinstance(inputs, dict):
        raise refused(f"the {kind} entry {key[:16]} records no inputs, so it cannot be checked against its key")
    if content_key(inputs) != key:
        raise refused(f"the {kind} entry tagged {key[:16]} records inputs whose digest is {content_key(inputs)[:16]}: "
                      "the tag points at an entry built from other inputs",
                      "delete the tag from the registry; a build pushes the right entry again")
    assert isinstance(meta, dict)
    files = tuple(_file_record(item, kind, key) for item in config.get("files") or [])
    symlinks = tuple(_symlink(item, kind, key) for item in config.get("symlinks") or [])
    titles = [(layer.get("annotations") or {}).get(TITLE) for layer in layers]
    if titles != [record.path for record in files]:
        raise refused(f"the layers of {kind} {key[:16]} are not the files its config records")
    return Entry(kind, key, meta, files, symlinks)


def _safe_path(value: object, kind: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise refused(f"the config of {kind} {key[:16]} names a file without a path")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or path.as_posix() != value or value == ENTRY_META:
        raise refused(f"the config of {kind} {key[:16]} names the path {value!r}, which would leave the entry")
    return value


def _file_record(item: object, kind: str, key: str) -> FileRecord:
    if not isinstance(item, dict) or not isinstance(item.get("size"), int) or not isinstance(item.get("mode"), int) \
            or not isinstance(item.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", item["sha256"]):
        raise refused(f"the config of {kind} {key[:16]} has a malformed file record")
    return FileRecord(_safe_path(item.get("path"), kind, key), item["size"], item["sha256"], item["mode"] & 0o7777)


def _symlink(item: object, kind: str, key: str) -> tuple[str, str]:
    if not isinstance(item, dict) or not isinstance(item.get("target"), str):
        raise refused(f"the config of {kind} {key[:16]} has a malformed symlink")
    target = item["target"]
    if target.startswith("/") or ".." in PurePosixPath(target).parts:
        raise refused(f"the config of {kind} {key[:16]} has a symlink to {target!r}, outside the entry")
    return _safe_path(item.get("path"), kind, key), target


def place_file(blob: Path, media_type: object, record: FileRecord, staging: Path) -> None:
    """A downloaded (verified) layer as the entry's file, itself verified by the recorded sha256."""
    target = staging / record.path
    target.parent.mkdir(parents=True, exist_ok=True)
    if media_type == ZSTD_TYPE:
        runner.run(["zstd", "-d", "-q", "-f", "--no-progress", blob, "-o", target],
                   what="decompress a file of the remote cache")
        blob.unlink()
    elif media_type == FILE_TYPE:
        os.replace(blob, target)
    else:
        raise refused(f"{record.path} has the media type {media_type!r}, which osbuilder does not write")
    if target.stat().st_size != record.size or sha256_file(target) != record.sha256:
        raise refused(f"{record.path} does not match the sha256 its entry records")
    os.chmod(target, record.mode)


def place_symlinks(entry: Entry, staging: Path) -> None:
    for path, target in entry.symlinks:
        link = staging / path
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)


def write_meta(entry: Entry, staging: Path, pulled: dict[str, Any]) -> None:
    meta = {**entry.meta, "kind": entry.kind, "key": entry.key, "created": int(time.time()), "pulled": pulled}
    (staging / ENTRY_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
