"""A local HTTP server on 127.0.0.1 for sources that cannot be reached from the test machines.

Files are registered with a behaviour: normal (with Range support), slow (sleeps before the body),
truncate-once (the first response promises the whole length but closes half-way), or missing
(404). Every request is recorded so tests can assert what was transferred.
"""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Served:
    data: bytes
    behaviour: str = "normal"  # normal | slow | truncate-once | no-range
    delay: float = 0.0
    served_full: int = 0
    served_ranges: list[str] = field(default_factory=list)
    truncated: bool = False


class FixtureServer:
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, name: str, data: bytes, behaviour: str = "normal", delay: float = 0.0) -> str:
        self.files[name] = Served(data, behaviour, delay)
        return self.url(name)

    def start(self) -> FixtureServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        name = handler.path.lstrip("/")
        with self.lock:
            self.requests.append(("GET", name, dict(handler.headers.items())))
        served = self.files.get(name)
        if served is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data = served.data
        range_header = handler.headers.get("Range")
        start = 0
        if range_header and served.behaviour != "no-range" and range_header.startswith("bytes="):
            start = int(range_header[len("bytes="):].split("-", 1)[0] or 0)
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            with self.lock:
                served.served_ranges.append(range_header)
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        body = data[start:]
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        if served.behaviour == "slow":
            time.sleep(served.delay)
        if served.behaviour == "truncate-once" and not served.truncated and start == 0:
            served.truncated = True
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        try:
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return
        if start == 0:
            with self.lock:
                served.served_full += 1
