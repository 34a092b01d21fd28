"""A real webhook receiver for the tests: a threaded HTTP server on loopback that verifies every
delivery with the `standardwebhooks` package, as a partner's receiver would.

`script` queues the answers to give (status, headers, body), first in first out; once empty it
answers 200. Each delivery is kept with its headers, parsed body and which of `secrets` its
signature verified with.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    headers: dict[str, str]
    raw: bytes
    body: dict | None
    verified_with: list[str]
    answered: int
    complete: bool = True  # False: the sender vanished mid-request (a killed worker)


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    script: list[tuple[int, dict, bytes]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                expected = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(expected)
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = []
                for secret in list(receiver.secrets):
                    try:
                        Webhook(secret).verify(raw, headers)
                        verified.append(secret)
                    except WebhookVerificationError:
                        pass
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    status, extra, body = receiver.script.pop(0) if receiver.script else (200, {}, b"ok")
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        parsed = None
                    receiver.deliveries.append(Delivery(headers, raw, parsed, verified, status, len(raw) == expected))
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def fail(self, times: int, status: int = 500, headers: dict | None = None, body: bytes = b"nope") -> None:
        """Answer the next `times` deliveries with `status`."""
        with self.lock:
            self.script.extend([(status, headers or {}, body)] * times)

    def ids(self) -> Counter:
        """How many times each webhook-id arrived whole."""
        with self.lock:
            return Counter(d.headers.get("webhook-id") for d in self.deliveries if d.complete)

    def of_type(self, event_type: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.body and d.body.get("type") == event_type]
