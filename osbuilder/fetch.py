"""Verified downloads into the content-addressed cache.

A download is named by the sha256 it must have. It is written to a partial file (resumed with an
HTTP Range request after a dropped connection), hashed as it arrives, and renamed into
downloads/sha256/<hex> only when the digest matches; on a mismatch nothing is kept. A lock per
digest makes concurrent builds download an input once and share it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder import progress
from osbuilder.cache import Cache, mark_used, sha256_file
from osbuilder.errors import FetchError, UsageError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

CHUNK = 1 << 16
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class FetchPolicy:
    attempts: int = 5
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time
    connect_timeout: float = 15.0
    read_timeout: float = 60.0


class Fetcher:
    def __init__(self, cache: Cache, *, offline: bool = False, policy: FetchPolicy | None = None,
                 session: requests.Session | None = None) -> None:
        self.cache = cache
        self.offline = offline
        self.policy = policy or FetchPolicy()
        self._session = session
        self.downloaded: list[str] = []  # digests actually transferred in this process (for reports/tests)

    @property
    def session(self) -> requests.Session:
        # Created (and requests imported) on first use: most runs are cache hits and fetch nothing.
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers.setdefault("User-Agent", "osbuilder")
        return self._session

    def cached(self, sha256: str) -> Path | None:
        """The verified file, if cached: in use (never pruned) for the rest of this process."""
        self.cache.hold(self.cache.DOWNLOADS, sha256)
        path = self.cache.blob(sha256)
        if not path.is_file():
            return None
        mark_used(path)
        return path

    def fetch(self, url: str, sha256: str, *, what: str = "") -> Path:
        """The cached file with this digest, downloading it from url if needed."""
        sha256 = _check_digest(sha256)
        found = self.cached(sha256)
        if found:
            log.debug("cache hit for %s (%s)", what or url, sha256[:12])
            return found
        if self.offline:
            raise FetchError(
                problem=f"{what or url} is not in the cache and --offline forbids downloading it",
                where=url,
                fix="run once without --offline (or `osbuilder fetch` it on a connected machine and copy the cache)",
            )
        self.cache.ensure()
        with self.cache.lock(f"download-{sha256}"):
            found = self.cached(sha256)  # another process may have finished it while we waited
            if found:
                return found
            return self._download(url, sha256, what or _basename(url))

    def _download(self, url: str, sha256: str, label: str) -> Path:
        partial = self.cache.root / "downloads" / "partial" / f"{sha256}.part"
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme == "file":
            shutil.copyfile(urllib.parse.unquote(parsed.path), partial)
        elif parsed.scheme in ("http", "https"):
            self._http(url, partial, label)
        else:
            partial.unlink(missing_ok=True)
            raise UsageError(problem=f"unsupported URL scheme in {url}", where=url, fix="use http(s):// or file://")
        actual = sha256_file(partial)
        if actual != sha256:
            partial.unlink(missing_ok=True)
            raise FetchError(
                problem=f"sha256 mismatch for {label}: expected {sha256}, got {actual}",
                where=url,
                fix="the download is not the pinned file; check the URL and the sha256 pin (nothing was kept)",
            )
        final = self.cache.blob(sha256)
        os.chmod(partial, 0o644)
        os.replace(partial, final)
        self.downloaded.append(sha256)
        log.info("downloaded %s (%s)", label, _size(final.stat().st_size))
        return final

    def _http(self, url: str, partial: Path, label: str) -> None:
        import requests

        policy = self.policy
        last_problem = ""
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1:
                delay = policy.backoff * 2 ** (attempt - 2)
                log.info("retrying %s in %.1f s (attempt %d of %d): %s", label, delay, attempt, policy.attempts,
                         last_problem)
                time.sleep(delay)
            offset = partial.stat().st_size if partial.exists() else 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with self.session.get(url, stream=True, headers=headers,
                                      timeout=(policy.connect_timeout, policy.read_timeout)) as response:
                    if response.status_code == 416 and offset:
                        # Our partial file is already complete (or longer than the file): start over.
                        partial.unlink()
                        last_problem = "range not satisfiable"
                        continue
                    if response.status_code in RETRYABLE_STATUS:
                        last_problem = f"HTTP {response.status_code}"
                        continue
                    if response.status_code >= 400:
                        partial.unlink(missing_ok=True)
                        raise FetchError(
                            problem=f"HTTP {response.status_code} {response.reason} for {label}",
                            where=url,
                            fix="check the URL (in versions.yaml or on the command line)",
                        )
                    append = response.status_code == 206 and offset > 0
                    if not append:
                        offset = 0
                    self._write_body(response, partial, append, offset, label)
                    return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    _Truncated) as exc:
                last_problem = _describe(exc)
                continue
        unreachable = not partial.exists()
        partial.unlink(missing_ok=True)
        raise FetchError(
            problem=f"could not download {label} after {policy.attempts} attempts: {last_problem}",
            where=url,
            fix=("the source is unreachable from here; use a reachable mirror or URL, or fill the cache "
                 "on a connected machine" if unreachable else "the server keeps failing; try again later"),
        )

    def _write_body(self, response: requests.Response, partial: Path, append: bool, offset: int,
                    label: str) -> None:
        total_header = response.headers.get("Content-Length")
        expected = int(total_header) + offset if total_header and total_header.isdigit() else None
        written = offset
        with partial.open("ab" if append else "wb") as handle, \
                progress.bar(expected, label, unit="B", initial=offset) as bar:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        if expected is not None and written < expected:
            raise _Truncated(f"connection closed after {written} of {expected} bytes")


class _Truncated(Exception):
    pass


def _describe(exc: Exception) -> str:
    import requests

    text = str(exc)
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError) and "Connection refused" in text:
        return "connection refused"
    return text.splitlines()[0] if text else type(exc).__name__


def _check_digest(value: str) -> str:
    digest = value.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UsageError(problem=f"'{value}' is not a sha256 digest", where="--sha256",
                         fix="give the 64 hex digits of the file's sha256")
    return digest


def _basename(url: str) -> str:
    return os.path.basename(urllib.parse.urlparse(url).path) or url


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
