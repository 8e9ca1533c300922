"""The remote cache's settings: where (--remote-cache), how (--remote-cache-mode), and as whom.

`oci://HOST[:PORT]/REPO` is a registry over HTTPS (`--remote-cache-ca FILE` trusts a private CA);
`oci+http://HOST[:PORT]/REPO` one over plain HTTP (a registry on a trusted network, or the tests').
Credentials never come from the command line, where other users and logs would see them: they come
from OSBUILDER_REGISTRY_AUTH (USER:PASSWORD) or from the docker configuration file
($DOCKER_CONFIG/config.json, else ~/.docker/config.json, as `docker login` writes it), and no message
or report ever contains them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from osbuilder.errors import UsageError

ENV_URL = "OSBUILDER_REMOTE_CACHE"
ENV_MODE = "OSBUILDER_REMOTE_CACHE_MODE"
ENV_AUTH = "OSBUILDER_REGISTRY_AUTH"
ENV_TIMEOUT = "OSBUILDER_REMOTE_CACHE_TIMEOUT"
DEFAULT_TIMEOUT = 30.0  # seconds without an answer before the registry counts as down
SCHEMES = {"oci": False, "oci+http": True}  # scheme -> plain HTTP
_URL = re.compile(r"(?P<scheme>[a-z+]+)://(?P<host>[^/]+)/(?P<repository>.+)")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
# The OCI distribution specification's repository names.
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")


class Mode(enum.StrEnum):
    PULL = "pull"  # only download
    PUSH = "push"  # only upload what is built (or found here and missing there)
    READWRITE = "readwrite"

    @property
    def pulls(self) -> bool:
        return self in (Mode.PULL, Mode.READWRITE)

    @property
    def pushes(self) -> bool:
        return self in (Mode.PUSH, Mode.READWRITE)


@dataclass(frozen=True)
class Endpoint:
    host: str  # HOST[:PORT]
    repository: str
    plain_http: bool

    @property
    def url(self) -> str:
        return f"{'oci+http' if self.plain_http else 'oci'}://{self.host}/{self.repository}"

    def reference(self, tag: str) -> str:
        return f"{self.host}/{self.repository}:{tag}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str  # where they came from (never what they are)


@dataclass(frozen=True)
class RemoteSettings:
    endpoint: Endpoint
    mode: Mode = Mode.READWRITE
    required: bool = False
    ca: Path | None = None
    timeout: float = DEFAULT_TIMEOUT

    def to_json(self) -> dict[str, object]:
        return {"url": self.endpoint.url, "mode": str(self.mode), "required": self.required}


def _redacted(value: str) -> str:
    """A URL as errors may show it: user information (which may hold a password) replaced."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", value)


def parse_endpoint(value: str, where: str = "--remote-cache") -> Endpoint:
    shown = _redacted(value)
    match = _URL.fullmatch(value.strip())
    if match is None or match["scheme"] not in SCHEMES:
        raise UsageError(problem=f"'{shown}' is not an OCI repository URL", where=f"{where} {shown}",
                         fix="give oci://HOST[:PORT]/REPO (HTTPS) or oci+http://HOST[:PORT]/REPO (plain HTTP)")
    host, repository = match["host"], match["repository"]
    if "@" in host:
        raise UsageError(problem="credentials do not belong in the URL, where logs and other users see them",
                         where=f"{where} {shown}",
                         fix=f"drop them from the URL; set {ENV_AUTH}=USER:PASSWORD or run `docker login "
                             f"{host.rpartition('@')[2]}`")
    hostname = _HOST.fullmatch(host)
    if hostname is None or (hostname["port"] is not None and not 0 < int(hostname["port"]) < 65536):
        raise UsageError(problem=f"'{host}' is not a host name with an optional port", where=f"{where} {shown}",
                         fix="e.g. oci://ghcr.io/owner/osbuilder-cache or oci+http://127.0.0.1:5000/cache")
    if not _REPOSITORY.fullmatch(repository):
        raise UsageError(problem=f"'{repository}' is not a repository name (lowercase letters, digits, '.', '_', "
                                 "'-' and '/' between components)", where=f"{where} {shown}",
                         fix="e.g. oci://ghcr.io/owner/osbuilder-cache")
    return Endpoint(host, repository, SCHEMES[match["scheme"]])


def parse_timeout(value: str | None) -> float:
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise UsageError(problem=f"'{value}' is not a number of seconds", where=ENV_TIMEOUT,
                         fix=f"give seconds between 0 and 3600 (default {DEFAULT_TIMEOUT:.0f})")
    return seconds


def settings(url: str | None, mode: str | None, required: bool, ca: Path | None,
             environment: Mapping[str, str] | None = None) -> RemoteSettings | None:
    """The remote cache of the global options (falling back to the environment), or None."""
    env = os.environ if environment is None else environment
    origin = "--remote-cache" if url else ENV_URL
    url = url or env.get(ENV_URL) or None
    if url is None:
        if required:
            raise UsageError(problem="--remote-cache-required without a remote cache", where="--remote-cache-required",
                             fix=f"give --remote-cache oci://HOST/REPO (or set {ENV_URL})")
        return None
    chosen = mode or env.get(ENV_MODE) or Mode.READWRITE.value
    if chosen not in set(Mode):
        raise UsageError(problem=f"unknown mode '{chosen}'", where="--remote-cache-mode",
                         fix="one of: " + ", ".join(Mode))
    if ca is not None and not ca.is_file():
        raise UsageError(problem=f"{ca} is not a file", where=f"--remote-cache-ca {ca}",
                         fix="give the PEM file of the CA that signed the registry's certificate")
    endpoint = parse_endpoint(url, origin)
    if endpoint.plain_http and ca is not None:
        raise UsageError(problem="a CA is for HTTPS; oci+http:// is plain HTTP", where="--remote-cache-ca",
                         fix="use oci://HOST/REPO with --remote-cache-ca, or drop --remote-cache-ca")
    return RemoteSettings(endpoint, Mode(chosen), required, ca, parse_timeout(env.get(ENV_TIMEOUT)))


def docker_config_path(environment: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environment is None else environment
    directory = env.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def credentials(host: str, environment: Mapping[str, str] | None = None) -> Credentials | None:
    """The registry's credentials: OSBUILDER_REGISTRY_AUTH, else the docker configuration's entry for
    the host; None when neither has any (anonymous access)."""
    env = os.environ if environment is None else environment
    given = env.get(ENV_AUTH)
    if given:
        username, colon, password = given.partition(":")
        if not colon or not username:
            raise UsageError(problem=f"{ENV_AUTH} is not USER:PASSWORD", where=ENV_AUTH,
                             fix=f"export {ENV_AUTH}=USER:PASSWORD (or a token as the password)")
        return Credentials(username, password, ENV_AUTH)
    path = docker_config_path(env)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(problem=f"cannot read the docker configuration: {exc}", where=str(path),
                         fix="repair it (`docker login` rewrites it), or set OSBUILDER_REGISTRY_AUTH") from None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        return None
    for name in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/", f"https://{host}/v1/"):
        entry = auths.get(name)
        if isinstance(entry, dict):
            found = _entry_credentials(entry, path, name)
            if found is not None:
                return found
    return None


def _entry_credentials(entry: dict[str, object], path: Path, name: str) -> Credentials | None:
    where = f"{path} (auths.{name})"
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(str(entry["username"]), str(entry["password"]), where)
    encoded = entry.get("auth")
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        username, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        username, colon, password = "", "", ""
    if not colon or not username:
        raise UsageError(problem="the auth field is not base64 of USER:PASSWORD", where=where,
                         fix=f"log in again: docker login {name}")
    return Credentials(username, password, where)
