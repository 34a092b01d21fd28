"""A real HTTP peer for the proxy tests: a threaded server on loopback that answers every request
with what it received, so a test can see exactly what the hub forwarded.

- any method, any path (a `/v1` prefix is ignored): 200 `{"method", "path", "query", "headers", "body"}` (headers lower-cased,
  body decoded as JSON when it is JSON, else text);
- `/status/<code>`: answers `<code>` with the same echo, plus a `<Name>: <value>` header for each
  query parameter `set:<Name>=<value>` (e.g. `?set:Retry-After=3`);
- `/bytes/<n>`: answers `n` bytes of `a` as text/plain.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class EchoProvider:
    requests: list[dict] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> "EchoProvider":
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                return None

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                route = parts.path.removeprefix("/v1")  # the tests' providers sit under /v1
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                echo = {"method": self.command, "path": parts.path, "query": parse_qsl(parts.query),
                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                peer.requests.append(echo)
                status, extra, payload, media = 200, {}, json.dumps(echo).encode(), "application/json"
                if route.startswith("/status/"):
                    status = int(route.split("/")[2])
                    extra = {k[4:]: v for k, v in parse_qsl(parts.query) if k.lower().startswith("set:")}
                elif route.startswith("/bytes/"):
                    payload, media = b"a" * int(route.split("/")[2]), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
