"""The content-addressed cache under the user's cache directory.

Layout (all under the cache root):
  downloads/sha256/<hex>     verified downloads, named by their sha256
  downloads/partial/         downloads in progress (resumable)
  <kind>/<key>/              finished build outputs (rootfs, kernel, agent, ...), named by content key
  locks/                     flock files: one builder per entry; readers share an entry's use lock
  tmp/                       staging areas; an entry appears only by an atomic rename when complete

An interrupted build leaves at most a staging directory, which the next build removes once its
owner process is gone. A cache entry is therefore either complete or absent.

A cache may have a `Remote` (osbuilder.remote: an OCI registry shared by several machines): a local
miss asks it before building, and what is built (or found here and missing there) is offered to it.
Only entries built with their `inputs` (what the key is the digest of, recorded in the entry) are
shared, since only they can be verified on another machine: the steps' outputs. Intermediate entries
(unpacked kernel sources, patched trees) stay on the machine that made them.

Whoever reads an entry holds its use lock shared for as long as it reads (`reading`, `using`), and
marks the entry used (its metadata file's mtime: the least recently used go first when the cache
is pruned, osbuilder.cachetool). Pruning takes the use lock exclusively and without waiting, so an
entry being read is never removed, and moves the entry out of place before deleting it, so a reader
that comes later finds no entry and builds it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from osbuilder import staging, userns
from osbuilder.errors import UsageError

log = logging.getLogger(__name__)

ENTRY_META = ".osbuilder-cache.json"


def content_key(inputs: Mapping[str, Any]) -> str:
    """A stable key for a build: sha256 of the canonical JSON of everything that determines it."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


BYTECODE = frozenset({"__pycache__"})


def sha256_tree(root: Path, exclude: frozenset[str] = BYTECODE) -> str:
    """Digest of a directory's names, modes, link targets and file contents (sorted, stable).
    Entries named in `exclude` are skipped with everything below them: by default Python's bytecode
    caches, which record their sources' mtimes and so differ between two checkouts of one commit."""
    digest = hashlib.sha256()
    if not root.exists():
        return digest.hexdigest()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if exclude.intersection(path.relative_to(root).parts):
            continue
        if path.is_symlink():
            digest.update(f"L {relative} {os.readlink(path)}\n".encode())
        elif path.is_dir():
            digest.update(f"D {relative}\n".encode())
        elif path.is_file():
            mode = path.stat().st_mode & 0o777
            digest.update(f"F {relative} {mode:o} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


# Where an entry came from (Hit.source, and `cache` in a step's --json).
LOCAL = "local"
REMOTE = "remote"
BUILT = "built"


@dataclass(frozen=True)
class Hit:
    path: Path
    hit: bool  # nothing was built here (found locally, or in the remote cache)
    source: str = LOCAL  # LOCAL, REMOTE or BUILT


class Remote(Protocol):
    """A cache beyond this machine (osbuilder.remote.store.RemoteStore)."""

    def fetch(self, kind: str, key: str, staging: Path) -> bool:
        """Fill `staging` with the entry's files and its ENTRY_META, every byte verified; False when the
        remote has no usable entry (absent, unreachable, or refused: said once, never raised unless
        the remote cache is required)."""
        ...

    def publish(self, kind: str, key: str, entry: Path) -> None:
        """Offer a complete local entry (pushed when the remote lacks it and the mode pushes)."""
        ...


class Cache:
    def __init__(self, root: Path, remote: Remote | None = None) -> None:
        self.root = root
        self.remote = remote
        self._held: dict[str, IO[str]] = {}  # use locks held for the rest of the process (hold())

    def ensure(self) -> None:
        try:
            for sub in ("downloads/sha256", "downloads/partial", "locks", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                problem=f"cannot create the cache directory: {exc.strerror}",
                where=f"--cache-dir {self.root}",
                fix="pass a writable --cache-dir or set OSBUILDER_CACHE_DIR",
            ) from exc

    def path(self, *parts: str) -> Path:
        target = self.root.joinpath(*parts)
        target.mkdir(parents=True, exist_ok=True)
        return target

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive flock held for the duration; concurrent osbuilder processes queue on it."""
        self.ensure()
        with _flocked(self.root / "locks" / f"{name}.lock", fcntl.LOCK_EX,
                      f"waiting for another osbuilder process to finish {name}"):
            yield

    def use_lock_path(self, kind: str, key: str) -> Path:
        return self.root / "locks" / f"{kind}-{key}.use"

    @contextlib.contextmanager
    def use_lock(self, kind: str, key: str) -> Iterator[None]:
        """The entry's use lock, shared: pruning leaves the entry alone while it is held."""
        self.ensure()
        with _flocked(self.use_lock_path(kind, key), fcntl.LOCK_SH, f"waiting for the cache to let {kind} go"):
            yield

    def hold(self, kind: str, key: str) -> None:
        """Keep an entry in use (never pruned) until this process ends: for entries whose path is
        handed on and read later (downloads, the reference agent, keyrings)."""
        name = f"{kind}-{key}"
        if name in self._held:
            return
        self.ensure()
        handle = self.use_lock_path(kind, key).open("a")
        fcntl.flock(handle, fcntl.LOCK_SH)
        self._held[name] = handle

    @contextlib.contextmanager
    def reading(self, kind: str, key: str) -> Iterator[Path | None]:
        """The entry if present, protected from pruning (and marked used) until the block ends."""
        with self.use_lock(kind, key):
            path = self.lookup(kind, key)
            if path is not None:
                mark_used(path)
            yield path

    @contextlib.contextmanager
    def using(self, kind: str, key: str, build: Callable[[Path], Mapping[str, Any] | None], *,
              remover: Callable[[Path], None] | None = None, force: bool = False,
              inputs: Mapping[str, Any] | None = None) -> Iterator[Hit]:
        """get_or_build, with the entry protected from pruning until the block ends."""
        with self.use_lock(kind, key):
            yield self.get_or_build(kind, key, build, remover=remover, force=force, inputs=inputs)

    @contextlib.contextmanager
    def finding(self, kind: str, key: str) -> Iterator[Hit | None]:
        """The entry here or, failing that, from the remote cache (never built), protected from
        pruning until the block ends; None when neither has it."""
        with self.use_lock(kind, key):
            existing = self.lookup(kind, key)
            if existing is not None:
                mark_used(existing)
                yield Hit(existing, True, LOCAL)
                return
            with self.lock(f"{kind}-{key}"):
                pulled = self._pull(kind, key, None)
            yield pulled

    DOWNLOADS = "downloads"  # the kind of download blobs, for use locks and pruning

    def blob(self, sha256: str) -> Path:
        return self.root / "downloads" / "sha256" / sha256

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, key: str) -> Path | None:
        path = self.entry(kind, key)
        return path if (path / ENTRY_META).is_file() else None

    def staging_dir(self, label: str) -> Path:
        """A fresh directory under tmp/ that carries our pid, so stale ones can be recognised."""
        self.ensure()
        self.sweep_stale()
        return staging.make_directory(self.root / "tmp", label)

    def get_or_build(
        self,
        kind: str,
        key: str,
        build: Callable[[Path], Mapping[str, Any] | None],
        *,
        remover: Callable[[Path], None] | None = None,
        force: bool = False,
        inputs: Mapping[str, Any] | None = None,
    ) -> Hit:
        """Return the entry for (kind, key): here, else from the remote cache, else built into a
        staging directory.

        `build(staging)` fills the directory and may return metadata to record with the entry;
        `inputs` (what the key is the digest of) are recorded too, so the entry can be verified on
        another machine. The entry appears by one rename, so readers never see a half-built one.
        `remover` deletes a staging directory whose contents the current user cannot remove directly
        (trees owned by subordinate ids). `force` rebuilds even if the entry exists, then replaces it.
        """
        shared = inputs is not None
        existing = self.lookup(kind, key)
        if existing and not force:
            mark_used(existing)
            if shared:
                self._offer(kind, key, existing)
            return Hit(existing, True, LOCAL)
        with self.lock(f"{kind}-{key}"):
            existing = self.lookup(kind, key)
            found: Hit | None = None
            if existing and not force:
                mark_used(existing)
                found = Hit(existing, True, LOCAL)
            elif shared and not force:
                found = self._pull(kind, key, remover)
            if found is None:
                workdir = self.staging_dir(f"{kind}-{key[:16]}")
                try:
                    meta = dict(build(workdir) or {})
                    if inputs is not None:
                        meta["inputs"] = dict(inputs)
                    meta.update(kind=kind, key=key, created=int(time.time()))
                    (workdir / ENTRY_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
                except BaseException:
                    _remove_tree(workdir, remover)
                    raise
                found = Hit(self._place(kind, key, workdir, remover), False, BUILT)
        if shared and found.source != REMOTE:
            self._offer(kind, key, found.path)
        return found

    def _pull(self, kind: str, key: str, remover: Callable[[Path], None] | None) -> Hit | None:
        """The entry from the remote cache, placed here (the caller holds the entry's build lock)."""
        if self.remote is None:
            return None
        workdir = self.staging_dir(f"{kind}-{key[:16]}-pull")
        try:
            pulled = self.remote.fetch(kind, key, workdir)
        except BaseException:
            _remove_tree(workdir, remover)
            raise
        if not pulled or not (workdir / ENTRY_META).is_file():
            _remove_tree(workdir, remover)
            return None
        return Hit(self._place(kind, key, workdir, remover), True, REMOTE)

    def _place(self, kind: str, key: str, workdir: Path, remover: Callable[[Path], None] | None) -> Path:
        """A complete staging directory becomes the entry, by one rename (replacing an old one)."""
        try:
            final = self.entry(kind, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # replaced (force), or a leftover without metadata
                retired = staging.make_directory(self.root / "tmp", f"{kind}-old")
                os.rename(final, retired / "entry")
                os.rename(workdir, final)
                _remove_tree(retired, remover)
            else:
                os.rename(workdir, final)
            return final
        except BaseException:
            _remove_tree(workdir, remover)
            raise

    def _offer(self, kind: str, key: str, entry: Path) -> None:
        if self.remote is not None:
            self.remote.publish(kind, key, entry)

    def entry_meta(self, kind: str, key: str) -> dict[str, Any]:
        path = self.lookup(kind, key)
        if path is None:
            return {}
        data: dict[str, Any] = json.loads((path / ENTRY_META).read_text())
        return data

    def sweep_stale(self, remover: Callable[[Path], None] | None = None) -> list[Path]:
        """Remove staging directories whose owning process no longer exists; return them."""
        return staging.sweep(self.root / "tmp", remover or _remover_of_last_resort, legacy=_legacy_owner)


@contextlib.contextmanager
def _flocked(path: Path, mode: int, waiting: str) -> Iterator[None]:
    """flock(path, mode) for the duration of the block; says so when it has to wait."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            log.info("%s", waiting)
            fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mark_used(entry: Path) -> None:
    """Record that an entry was used now (the LRU order of `osbuilder cache prune`)."""
    meta = entry / ENTRY_META
    with contextlib.suppress(OSError):
        os.utime(meta if meta.is_file() else entry)


def _legacy_owner(name: str) -> int | None:
    """The pid of a staging directory named by osbuilder before 0.1.0's staging names (label.pid.ns)."""
    parts = name.split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() and parts[-1].isdigit() else None


def _remover_of_last_resort(path: Path) -> None:
    _remove_tree(path, userns.remove_tree)


def _remove_tree(path: Path, remover: Callable[[Path], None] | None) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if path.is_file() or path.is_symlink():
        path.unlink()
        return
    try:
        shutil.rmtree(path)
    except PermissionError:
        if remover is None:
            raise
        remover(path)
