"""An OCI registry through ORAS's Python SDK (`oras`): manifests and blobs of one repository.

oras handles what registries differ in: authentication challenges (basic, or bearer tokens from the
registry's token service, as GHCR and Harbor use), upload sessions and their Location headers,
chunked uploads. Two of its defaults do not suit a build cache, and are changed here: it retries a
failed request five times with sleeps that add up to about two minutes, and it sets no timeout, so
a registry that is down or hangs would stall every build; here each request is made once, with a
timeout, and its failure is reported (osbuilder.remote.store). Blobs are verified by their digest
as they are read: oras does not.

Errors never carry credentials: they name the registry, the request and its status.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import oras.container
import oras.provider
import requests

from osbuilder.remote.settings import ENV_AUTH, ENV_TIMEOUT, Credentials, RemoteSettings

log = logging.getLogger(__name__)

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST = 4 << 20  # bytes: a manifest lists one layer per file of an entry
CHUNK = 16 << 20  # blobs larger than this are uploaded in chunks of this size (bounded memory)
READ = 1 << 20
# oras' do_request without its retry decorator (functools.wraps keeps the original).
_ONE_TRY: Callable[..., requests.Response] = getattr(oras.provider.Registry.do_request, "__wrapped__",
                                                     oras.provider.Registry.do_request)


class RegistryError(Exception):
    """A registry operation failed. `unavailable`: the registry as a whole cannot be used (down, slow,
    credentials refused, server errors); otherwise one entry was refused (missing or bad content)."""

    def __init__(self, problem: str, fix: str = "", *, status: int | None = None, unavailable: bool = True) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.status = status
        self.unavailable = unavailable


def refused(problem: str, fix: str = "") -> RegistryError:
    return RegistryError(problem, fix, unavailable=False)


@dataclass(frozen=True)
class Manifest:
    data: dict[str, Any]
    digest: str  # sha256:<hex> of the bytes the registry sent
    size: int


class _Session(requests.Session):
    """A session whose every request has a timeout (oras passes none)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        # Some registries set cookies and then expect a browser's CSRF dance (oras ignores them too).
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


class RegistryClient:
    """One repository of one registry; `connect()` first (it checks that the registry answers and
    takes the credentials)."""

    def __init__(self, settings: RemoteSettings, credentials: Credentials | None) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self.credentials = credentials
        self.prefix = "http" if self.endpoint.plain_http else "https"
        self.verify: bool | str = str(settings.ca) if settings.ca is not None else True
        self.session = _Session(settings.timeout)
        self._registry: Any = None

    @property
    def url(self) -> str:
        return self.endpoint.url

    # --- connecting --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Ask the registry's API root (GET /v2/), choose the authentication its challenge asks for,
        and check the credentials where the scheme allows it (basic)."""
        answer = self._guarded("connect", lambda: self.session.get(f"{self.prefix}://{self.endpoint.host}/v2/",
                                                                    verify=self.verify))
        challenge = answer.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if answer.status_code == 401 and self.credentials is None:
            raise RegistryError(f"{self.url} asks for credentials (401) and none are configured",
                                f"run `docker login {self.endpoint.host}`, or set {ENV_AUTH}=USER:PASSWORD",
                                status=401)
        if answer.status_code not in (200, 401):
            # Whatever answers there (a 404 from a web server, a 500), it is not a registry this run can use.
            raise self._status_error("connect", answer, unavailable=True)
        registry = oras.provider.Registry(hostname=self.endpoint.host, insecure=self.endpoint.plain_http,
                                          tls_verify=self.verify, auth_backend="basic" if scheme == "basic" else "token")
        registry.session = self.session
        registry.auth.session = self.session
        # Each request once, failures reported by the caller (see the module's docstring).
        registry.do_request = types.MethodType(_ONE_TRY, registry)
        if self.credentials is not None:
            registry.auth.set_basic_auth(self.credentials.username, self.credentials.password)
        self._registry = registry
        if answer.status_code == 401 and scheme == "basic":
            again = self._guarded("log in", lambda: self.session.get(
                f"{self.prefix}://{self.endpoint.host}/v2/", headers=registry.auth.get_auth_header(),
                verify=self.verify))
            if again.status_code != 200:
                raise self._status_error("log in", again)

    # --- reading -----------------------------------------------------------------------------------

    def manifest(self, tag: str) -> Manifest | None:
        """The manifest tagged `tag`, or None when there is none."""
        answer = self._request("get the manifest", "GET", self._container(tag).manifest_url(),
                               headers={"Accept": MANIFEST_TYPE}, stream=True)
        with answer:
            if answer.status_code == 404:
                return None
            if answer.status_code != 200:
                raise self._status_error(f"get the manifest {tag[:16]}", answer)
            body = self._read_limited(answer, MAX_MANIFEST, f"the manifest {tag[:16]}")
        try:
            data = json.loads(body)
        except ValueError:
            raise refused(f"the manifest {tag[:16]} is not JSON") from None
        if not isinstance(data, dict):
            raise refused(f"the manifest {tag[:16]} is not a JSON object")
        return Manifest(data, "sha256:" + hashlib.sha256(body).hexdigest(), len(body))

    def has_manifest(self, tag: str) -> bool:
        answer = self._request("look for the manifest", "HEAD", self._container(tag).manifest_url(),
                               headers={"Accept": MANIFEST_TYPE})
        if answer.status_code in (200, 404):
            return answer.status_code == 200
        raise self._status_error(f"look for the manifest {tag[:16]}", answer)

    def blob_bytes(self, digest: str, size: int, limit: int) -> bytes:
        """A small blob (a config), verified."""
        if size > limit:
            raise refused(f"the blob {digest} claims {size} bytes, more than the {limit} a config may have")
        answer = self._get_blob(digest)
        with answer:
            body = self._read_limited(answer, limit, f"the blob {digest}")
        _check_digest(digest, size, hashlib.sha256(body).hexdigest(), len(body))
        return body

    def download(self, digest: str, size: int, target: Path) -> None:
        """A blob streamed into `target`, verified by its digest and size as it is read (a blob that
        does not match is refused and `target` removed)."""
        answer = self._get_blob(digest)
        hasher = hashlib.sha256()
        count = 0
        try:
            with answer, target.open("wb") as handle, self._translating(f"download {digest}"):
                for block in answer.iter_content(READ):
                    count += len(block)
                    if count > size:
                        break
                    hasher.update(block)
                    handle.write(block)
            _check_digest(digest, size, hasher.hexdigest(), count)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    # --- writing -----------------------------------------------------------------------------------

    def upload(self, path: Path, descriptor: dict[str, Any]) -> bool:
        """A blob (unless the registry has it already); True if its bytes were sent."""
        container = self._container("upload")
        if self._guarded("look for a blob", lambda: self._registry.blob_exists(descriptor, container)):
            return False
        size = int(descriptor["size"])
        answer = self._guarded(f"upload {descriptor['digest']}", lambda: self._registry.upload_blob(
            str(path), container, descriptor, do_chunked=size > CHUNK, chunk_size=CHUNK))
        if answer.status_code not in (200, 201, 202):
            raise self._status_error(f"upload {descriptor['digest']}", answer)
        return True

    def put_manifest(self, manifest: dict[str, Any], tag: str) -> None:
        container = self._container(tag)
        answer = self._guarded("put the manifest", lambda: self._registry.upload_manifest(manifest, container))
        if answer.status_code not in (200, 201):
            raise self._status_error(f"put the manifest {tag[:16]}", answer)

    # --- helpers -----------------------------------------------------------------------------------

    def _container(self, tag: str) -> oras.container.Container:
        return oras.container.Container(self.endpoint.reference(tag))

    def _request(self, what: str, method: str, url: str, **kwargs: Any) -> requests.Response:
        response: requests.Response = self._guarded(what, lambda: self._registry.do_request(
            f"{self.prefix}://{url}", method, **kwargs))
        return response

    def _get_blob(self, digest: str) -> requests.Response:
        answer: requests.Response = self._guarded(f"download {digest}", lambda: self._registry.get_blob(
            self._container("blob"), digest, stream=True))
        if answer.status_code == 404:
            answer.close()
            raise refused(f"the registry has no blob {digest} (the entry is incomplete)")
        if answer.status_code != 200:
            answer.close()
            raise self._status_error(f"download {digest}", answer)
        return answer

    def _read_limited(self, answer: requests.Response, limit: int, what: str) -> bytes:
        body = bytearray()
        with self._translating(f"read {what}"):
            for block in answer.iter_content(READ):
                body += block
                if len(body) > limit:
                    raise refused(f"{what} is larger than {limit} bytes")
        return bytes(body)

    def _guarded(self, what: str, call: Callable[[], Any]) -> Any:
        """Run one request; the failures of the network and of oras become RegistryErrors."""
        with self._translating(what):
            return call()

    @contextlib.contextmanager
    def _translating(self, what: str) -> Iterator[None]:
        try:
            yield
        except RegistryError:
            raise
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"{self.url}: TLS failed ({_reason(exc)})",
                                "give the CA that signed the registry's certificate with --remote-cache-ca FILE, "
                                "or use oci+http:// for a plain-HTTP registry") from None
        except requests.exceptions.Timeout:
            raise RegistryError(f"{self.url} did not answer within {self.settings.timeout:g} s ({what})",
                                f"check the registry, or allow more time with {ENV_TIMEOUT}=SECONDS") from None
        except requests.exceptions.ConnectionError as exc:
            raise RegistryError(f"cannot reach {self.url} ({what}: {_reason(exc)})",
                                "check that the registry runs and the host and port are right") from None
        except (requests.exceptions.RequestException, ValueError, KeyError, AttributeError) as exc:
            # oras raises ValueError for a status it does not accept (with the URL and the reason).
            raise RegistryError(f"{self.url}: {what} failed ({exc})", "see the registry's logs") from None

    def _status_error(self, what: str, answer: requests.Response, *, unavailable: bool = False) -> RegistryError:
        status = answer.status_code
        if status in (401, 403):
            source = self.credentials.source if self.credentials is not None else "no credentials"
            return RegistryError(f"{self.url} refused the credentials ({status} {answer.reason}; from {source}) "
                                 f"to {what}", f"check them: `docker login {self.endpoint.host}`, or set "
                                 f"{ENV_AUTH}=USER:PASSWORD", status=status)
        return RegistryError(f"{self.url} answered {status} {answer.reason} to {what}",
                             "check the URL (oci://HOST[:PORT]/REPO names a registry's repository) and the "
                             "registry's logs", status=status,
                             unavailable=unavailable or status >= 500 or status == 429)


def _check_digest(digest: str, size: int, actual_hex: str, actual_size: int) -> None:
    if actual_size != size or f"sha256:{actual_hex}" != digest:
        raise refused(f"the blob {digest} does not match its digest ({actual_size} bytes with sha256 {actual_hex}, "
                      f"expected {size} bytes)", "the registry's copy is damaged: delete the tag, or push it again")


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, short (no URL: the caller names the registry)."""
    inner: BaseException = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(inner) or type(inner).__name__
    return text.split(": ", 1)[-1][:200] if "Errno" in text or "]" in text else text[:200]
