"""The CNCF distribution registry (Debian's docker-registry) on 127.0.0.1, for the remote cache tests.

`Registry` writes a configuration and a storage directory under a temporary directory and runs
`docker-registry serve CONFIG` itself (through osbuilder.runner, dying with the test process; the
package's systemd unit is not used). Plain HTTP by default; `tls=True` makes a throwaway CA and a
server certificate for 127.0.0.1 with openssl, and `users` an htpasswd file (bcrypt, htpasswd from
apache2-utils), so the registry demands basic authentication. `stop()` kills it (as a crash would);
`start()` again serves the same storage.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import requests

from osbuilder import runner

REGISTRY = "/usr/bin/docker-registry"
REPOSITORY = "osbuilder/cache"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Registry:
    def __init__(self, directory: Path, *, tls: bool = False, users: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.storage = directory / "storage"
        self.port = free_port()
        self.tls = tls
        self.users = users or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "registry.log"
        self.ca: Path | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        self.config = self._configure()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'oci' if self.tls else 'oci+http'}://{self.host}/{REPOSITORY}"

    def _configure(self) -> Path:
        lines = ["version: 0.1", "log:", "  level: info", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true", "http:",
                 f"  addr: {self.host}", "  secret: osbuilder-test-secret"]
        if self.tls:
            certificate, key = self._certificates()
            lines += ["  tls:", f"    certificate: {certificate}", f"    key: {key}"]
        if self.users:
            lines += ["auth:", "  htpasswd:", "    realm: osbuilder-test", f"    path: {self._htpasswd()}"]
        config = self.directory / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _certificates(self) -> tuple[Path, Path]:
        """A throwaway CA, and a certificate for 127.0.0.1 it signed."""
        d = self.directory
        self.ca = d / "ca.crt"
        runner.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=osbuilder test CA", "-keyout", d / "ca.key", "-out", self.ca])
        runner.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", d / "server.key", "-out", d / "server.csr"])
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        runner.run(["openssl", "x509", "-req", "-in", d / "server.csr", "-CA", self.ca, "-CAkey", d / "ca.key",
                    "-CAcreateserial", "-days", "2", "-extfile", d / "san.cnf", "-out", d / "server.crt"])
        return d / "server.crt", d / "server.key"

    def _htpasswd(self) -> Path:
        path = self.directory / "htpasswd"
        entries = []
        for user, password in self.users.items():
            # -i: the password on stdin, not on a command line other processes can read
            entries.append(runner.run(["htpasswd", "-B", "-i", "-n", user], input=password.encode()).stdout.strip())
        path.write_text("\n".join(entries) + "\n")
        return path

    def start(self) -> Registry:
        runner.require_tool(REGISTRY, "run the test registry (apt-get install docker-registry)")
        with self.log.open("ab") as log:
            self.process = runner.spawn([REGISTRY, "serve", self.config], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        scheme = "https" if self.tls else "http"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the registry exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(f"{scheme}://{self.host}/v2/", timeout=2, verify=str(self.ca) if self.ca else True)
                if answer.status_code in (200, 401):
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"the registry did not answer on {self.host}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGKILL, as a crash or a pulled plug would stop it."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def repository_dir(self) -> Path:
        return self.storage / "docker/registry/v2/repositories" / REPOSITORY

    def tags(self) -> set[str]:
        tags = self.repository_dir() / "_manifests/tags"
        return {path.name for path in tags.iterdir()} if tags.is_dir() else set()

    def blob_path(self, digest: str) -> Path:
        algorithm, hexdigest = digest.split(":")
        return self.storage / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"
