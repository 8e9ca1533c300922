"""A TCP forwarder on 127.0.0.1 for the remote cache's fault tests: it passes bytes to a real
registry and can act when the client has sent a given number of bytes (stop the registry mid-push),
or, without a registry, accept connections and never answer (a registry that hangs) or answer every
request with the same response (a registry that fails with 500)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class TcpProxy:
    def __init__(self, upstream_port: int | None, *, after_bytes: int | None = None,
                 then: Callable[[], None] | None = None, answer: bytes | None = None) -> None:
        self.upstream_port = upstream_port  # None: accept and never answer (or give `answer`)
        self.answer = answer
        self.after_bytes = after_bytes
        self.then = then
        self.sent = 0
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._stopping = False

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        for sock in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.upstream_port is None:
                if self.answer is not None:
                    threading.Thread(target=self._respond, args=(client,), daemon=True).start()
                continue  # else hang: keep the connection open, never answer
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            self._sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _respond(self, client: socket.socket) -> None:
        assert self.answer is not None
        with contextlib.suppress(OSError):
            while client.recv(65536):
                client.sendall(self.answer)

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while block := source.recv(65536):
                if upstream:
                    with self._lock:
                        self.sent += len(block)
                        trigger = (self.after_bytes is not None and self.sent >= self.after_bytes
                                   and not self.fired.is_set())
                        if trigger:
                            self.fired.set()
                    if trigger and self.then is not None:
                        self.then()
                        break
                target.sendall(block)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
