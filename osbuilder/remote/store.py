"""The cache's Remote (osbuilder.cache.Remote): pull on a local miss, push what is built.

A registry that is down, too slow, refuses the credentials or answers with server errors is said
once, with what to do, and the remote cache is left alone for the rest of the run: the build goes on
locally. With --remote-cache-required (and in `osbuilder cache push|pull`) that is an error instead.
An entry the remote has but that does not verify (a damaged blob, a tag that points at another
entry) is refused and said; the step builds it here. Nothing half-pushed can be pulled: the blobs go
first and the manifest, which the tag names, last.

`report()` is what a command's --json shows under "remote_cache": the registry, the mode, what was
pulled, pushed, already there or refused, bytes each way, and the error if there was one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from osbuilder import staging
from osbuilder.cache import ENTRY_META
from osbuilder.errors import BuildError
from osbuilder.remote import artifact
from osbuilder.remote.client import RegistryClient, RegistryError
from osbuilder.remote.settings import Mode, RemoteSettings, credentials

log = logging.getLogger(__name__)


class RemoteStore:
    def __init__(self, settings: RemoteSettings, cache_root: Path, *, strict: bool = False,
                 environment: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.root = cache_root
        self.strict = strict or settings.required  # every failure is an error, not a note
        self.mode = settings.mode
        self.environment = environment
        self._client: RegistryClient | None = None
        self.unavailable: RegistryError | None = None
        self.pulled: list[dict[str, Any]] = []
        self.pushed: list[dict[str, Any]] = []
        self.present: list[dict[str, Any]] = []
        self.missing: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.bytes_down = 0
        self.bytes_up = 0

    @property
    def url(self) -> str:
        return self.settings.endpoint.url

    # --- the cache's Remote ------------------------------------------------------------------------

    def fetch(self, kind: str, key: str, staging_dir: Path) -> bool:
        if not self.mode.pulls or self.unavailable is not None:
            return False
        try:
            return self.pull(kind, key, staging_dir)
        except RegistryError as error:
            self._failed(error, kind, key, "pull")
            return False

    def publish(self, kind: str, key: str, entry: Path) -> None:
        if not self.mode.pushes or self.unavailable is not None:
            return
        try:
            self.push(kind, key, entry)
        except RegistryError as error:
            self._failed(error, kind, key, "push")

    def explicit(self) -> None:
        """For `osbuilder cache push|pull`: both directions whatever the mode, and failures are errors."""
        self.mode = Mode.READWRITE
        self.strict = True

    # --- the operations (raise RegistryError) -------------------------------------------------------

    def client(self) -> RegistryClient:
        if self.unavailable is not None:
            raise self.unavailable
        if self._client is None:
            client = RegistryClient(self.settings, credentials(self.settings.endpoint.host, self.environment))
            client.connect()
            self._client = client
        return self._client

    def kind_of(self, key: str) -> str | None:
        """The step of the entry tagged `key` in the remote (None: no such tag)."""
        manifest = self.client().manifest(key)
        if manifest is None:
            return None
        step, _config, _layers = artifact.read_manifest(manifest.data, None, key)
        return step

    def pull(self, kind: str, key: str, staging_dir: Path) -> bool:
        """The entry into staging_dir, every byte verified; False when the remote has no such tag."""
        started = time.monotonic()
        client = self.client()
        manifest = client.manifest(key)
        if manifest is None:
            self.missing.append({"kind": kind, "key": key})
            return False
        _step, config, layers = artifact.read_manifest(manifest.data, kind, key)
        body = client.blob_bytes(config["digest"], config["size"], artifact.MAX_CONFIG)
        entry = artifact.read_config(body, kind, key, layers)
        received = len(body)
        downloads = staging_dir / ".downloads"
        downloads.mkdir()
        for index, (layer, record) in enumerate(zip(layers, entry.files, strict=True)):
            blob = downloads / str(index)
            client.download(layer["digest"], layer["size"], blob)
            received += layer["size"]
            artifact.place_file(blob, layer.get("mediaType"), record, staging_dir)
        downloads.rmdir()
        artifact.place_symlinks(entry, staging_dir)
        artifact.write_meta(entry, staging_dir, {"from": self.url, "manifest": manifest.digest})
        self.bytes_down += received + manifest.size
        seconds = time.monotonic() - started
        self.pulled.append({"kind": kind, "key": key, "bytes": received + manifest.size, "seconds": round(seconds, 3)})
        log.info("remote cache: pulled %s %s (%.1f MiB in %.1f s)", kind, key[:16], received / 2**20, seconds)
        return True

    def push(self, kind: str, key: str, entry: Path) -> bool:
        """The entry, unless the remote has it already (True: pushed). Blobs first, the manifest last."""
        client = self.client()
        if client.has_manifest(key):
            self.present.append({"kind": kind, "key": key})
            return False
        meta = json.loads((entry / ENTRY_META).read_text())
        if not isinstance(meta.get("inputs"), dict):
            raise RegistryError(f"the {kind} entry {key[:16]} records no inputs (built by an older osbuilder), so "
                                "no other machine could check it", "rebuild it: osbuilder cache prune, then build",
                                unavailable=False)
        started = time.monotonic()
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        with staging.temporary_directory(self.root / "tmp", "remote-push") as workdir:
            packed = artifact.pack(entry, kind, key, workdir, self.environment)
            sent = 0
            for layer in packed.layers:
                if client.upload(layer.blob, layer.descriptor):
                    sent += int(layer.descriptor["size"])
            if client.upload(packed.config, packed.config_descriptor):
                sent += int(packed.config_descriptor["size"])
            client.put_manifest(packed.manifest, key)
        self.bytes_up += sent
        seconds = time.monotonic() - started
        self.pushed.append({"kind": kind, "key": key, "bytes": sent, "artifact_bytes": packed.size,
                            "seconds": round(seconds, 3)})
        log.info("remote cache: pushed %s %s (%.1f MiB sent in %.1f s)", kind, key[:16], sent / 2**20, seconds)
        return True

    # --- failures and the report --------------------------------------------------------------------

    def error(self, error: RegistryError, kind: str, key: str, action: str = "transfer") -> BuildError:
        """A failure as an error (recorded for the report)."""
        if error.unavailable:
            self.unavailable = error
            return BuildError(problem=f"the remote cache cannot be used: {error.problem}", where=self.url,
                              fix=error.fix or "check the registry")
        self.refused.append({"kind": kind, "key": key, "action": action, "problem": error.problem})
        return BuildError(problem=f"the remote cache's {kind} entry {key[:16]} was refused: {error.problem}",
                          where=self.url, fix=error.fix or "see the registry")

    def _failed(self, error: RegistryError, kind: str, key: str, action: str) -> None:
        """Said once (the registry) or per entry (a refusal), and the build goes on; or, when the
        remote cache is required, an error."""
        failure = self.error(error, kind, key, action)
        if self.strict:
            raise failure
        if error.unavailable:
            log.warning("remote cache %s is not usable, the build goes on without it: %s%s", self.url,
                        error.problem, f"\n  fix: {error.fix}" if error.fix else "")
        else:
            verb = "refused the remote" if action == "pull" else "could not push the"
            log.warning("remote cache: %s %s entry %s: %s%s", verb, kind, key[:16], error.problem,
                        "; building it here" if action == "pull" else "")

    def report(self) -> dict[str, Any]:
        return {**self.settings.to_json(), "pulled": self.pulled, "pushed": self.pushed, "present": self.present,
                "missing": self.missing, "refused": self.refused, "bytes_down": self.bytes_down,
                "bytes_up": self.bytes_up,
                "error": None if self.unavailable is None else {"problem": self.unavailable.problem,
                                                                "fix": self.unavailable.fix,
                                                                "status": self.unavailable.status}}
