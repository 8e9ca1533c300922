"""What every command gets: the global options and lazily loaded configuration."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder.cache import Cache
from osbuilder.fetch import Fetcher
from osbuilder.recipes import Recipe, find_recipe, load_all
from osbuilder.remote.settings import RemoteSettings
from osbuilder.versions import Versions, load_versions

if TYPE_CHECKING:
    from osbuilder.remote.store import RemoteStore


@dataclass
class Context:
    versions_path: Path
    distros_dir: Path
    cache_dir: Path
    offline: bool = False
    json: bool = False
    verbose: int = 0
    remote_settings: RemoteSettings | None = None  # --remote-cache (osbuilder.remote)

    @functools.cached_property
    def versions(self) -> Versions:
        return load_versions(self.versions_path)

    @functools.cached_property
    def remote(self) -> RemoteStore | None:
        """The remote cache, if one was given (its client connects when first used)."""
        if self.remote_settings is None:
            return None
        from osbuilder.remote.store import RemoteStore  # oras, only for runs that use a registry

        return RemoteStore(self.remote_settings, self.cache_dir)

    @functools.cached_property
    def cache(self) -> Cache:
        cache = Cache(self.cache_dir, remote=self.remote)
        cache.ensure()
        return cache

    @functools.cached_property
    def fetcher(self) -> Fetcher:
        return Fetcher(self.cache, offline=self.offline)

    def recipes(self) -> list[Recipe]:
        return load_all(self.distros_dir)

    def recipe(self, name: str) -> Recipe:
        return find_recipe(self.distros_dir, name)
