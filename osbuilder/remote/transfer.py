"""`osbuilder cache push|pull KEY...`: entries moved by key between the local and the remote cache.

A key names an entry of any kind (keys are digests of inputs that include what makes the kinds
differ); KIND/KEY names it exactly. Push reads the local entry while holding it (prune leaves it
alone) and skips what the remote has; pull learns the kind from the artifact's annotations and
verifies everything (osbuilder.remote.store.RemoteStore.pull) before the entry appears here.
"""

from __future__ import annotations

from typing import Any

from osbuilder.cache import ENTRY_META, REMOTE, Cache
from osbuilder.errors import BuildError, UsageError
from osbuilder.remote import artifact
from osbuilder.remote.client import RegistryError
from osbuilder.remote.store import RemoteStore


def _split(name: str) -> tuple[str | None, str]:
    kind, slash, key = name.rpartition("/")
    if slash and not artifact.KIND.fullmatch(kind):
        raise UsageError(problem=f"'{kind}' is not a kind of cache entry", where=name,
                         fix="give KEY or KIND/KEY, e.g. kernel/<64 hex digits>")
    artifact.check_tag(key, name)
    return (kind if slash else None), key


def local_kind(cache: Cache, key: str) -> str | None:
    """The kind of the local entry with this key."""
    if cache.root.is_dir():
        for kind_dir in sorted(cache.root.iterdir()):
            if (kind_dir / key / ENTRY_META).is_file():
                return kind_dir.name
    return None


def push(cache: Cache, remote: RemoteStore, names: list[str]) -> list[dict[str, Any]]:
    return [_push_one(cache, remote, kind, key) for kind, key in _wanted(remote, names)]


def pull(cache: Cache, remote: RemoteStore, names: list[str]) -> list[dict[str, Any]]:
    return [_pull_one(cache, remote, kind, key) for kind, key in _wanted(remote, names)]


def _wanted(remote: RemoteStore, names: list[str]) -> list[tuple[str | None, str]]:
    """Every name checked before anything moves; the remote in both directions, failures errors."""
    remote.explicit()
    return [_split(name) for name in names]


def _push_one(cache: Cache, remote: RemoteStore, kind: str | None, key: str) -> dict[str, Any]:
    kind = kind or local_kind(cache, key) or "entry"
    with cache.reading(kind, key) as entry:
        if entry is None:  # never there, or pruned since: reading holds it from here on
            raise UsageError(problem=f"no entry {key[:16]} in the local cache", where=str(cache.root),
                             fix="build it first, or check the key (osbuilder cache list)")
        try:
            pushed = remote.push(kind, key, entry)
        except RegistryError as error:
            raise remote.error(error, kind, key) from None
    return {"kind": kind, "key": key, "result": "pushed" if pushed else "present"}


def _pull_one(cache: Cache, remote: RemoteStore, kind: str | None, key: str) -> dict[str, Any]:
    try:
        found_kind = remote.kind_of(key)
    except RegistryError as error:
        raise remote.error(error, kind or "entry", key) from None
    if found_kind is None:
        raise BuildError(problem=f"the remote cache has no entry {key[:16]}", where=remote.url,
                         fix="push it first (a build with --remote-cache, or osbuilder cache push)")
    if kind is not None and found_kind != kind:
        raise BuildError(problem=f"the remote entry {key[:16]} is a {found_kind} entry, not {kind}",
                         where=remote.url, fix=f"ask for {found_kind}/{key}")
    with cache.finding(found_kind, key) as hit:
        if hit is None:  # said by the store (strict): only a refusal ends here
            raise BuildError(problem=f"the remote entry {found_kind} {key[:16]} could not be pulled",
                             where=remote.url, fix="see the message above")
        source = hit.source
    return {"kind": found_kind, "key": key, "result": "pulled" if source == REMOTE else "already here"}
