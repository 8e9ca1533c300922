"""A recording HTTP forward proxy on 127.0.0.1, so a test can see what apt really downloaded.

apt honours `http_proxy`; every request (an absolute URL) is forwarded upstream and recorded. Only
plain HTTP is proxied, which is what the archive mirrors are reached with.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
import urllib.parse
from typing import Any

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailers", "transfer-encoding", "upgrade"}


class RecordingProxy:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_HEAD(self) -> None:
                proxy._forward(self, "HEAD")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> RecordingProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def debs(self) -> list[str]:
        with self.lock:
            return [url for url in self.requests if url.endswith(".deb")]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        with self.lock:
            self.requests.append(handler.path)
        if url.scheme != "http" or not url.hostname:
            handler.send_error(501, "only absolute http:// URLs are proxied")
            return
        headers = {key: value for key, value in handler.headers.items() if key.lower() not in HOP_BY_HOP}
        path = url.path + (f"?{url.query}" if url.query else "")
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        try:
            upstream.request(method, path or "/", headers=headers)
            response = upstream.getresponse()
            body = response.read()
        except OSError as exc:
            handler.send_error(502, f"upstream: {exc}")
            return
        finally:
            upstream.close()
        handler.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                handler.wfile.write(body)
