"""Test support for realtime: the hub served by uvicorn on a loopback port, and a WebSocket client.

`ServedHub` runs an already-built app (the session's `app`) in a thread with its own event loop,
so a real WebSocket/SSE client talks to it over TCP while the tests change state through the
in-process `client`: both share the process, so the commit hook wakes the served hub at once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from server.cli import SERVE_LOOP, WEBSOCKET_OPTIONS

HOST = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServedHub:
    """`app` served by uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        # The event loop and WebSocket options of `integration-hub serve`, so the tests see what
        # production serves.
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=self.port, lifespan="off",
                                                    log_level="warning", loop=SERVE_LOOP, **WEBSOCKET_OPTIONS))
        self.thread = threading.Thread(target=self.server.run, name="served-hub", daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def start(self) -> "ServedHub":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the served hub did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class Socket:
    """A `websockets` client connection speaking JSON, each received message checked by `check`."""

    def __init__(self, connection: ClientConnection, check=None) -> None:
        self.connection = connection
        self.check = check or (lambda message: None)

    @classmethod
    def open(cls, url: str, *, check=None, **kwargs: Any) -> "Socket":
        return cls(connect(url, open_timeout=10, **kwargs).__enter__(), check)

    def send(self, message: dict | str) -> None:
        self.connection.send(message if isinstance(message, str) else json.dumps(message))

    def recv(self, timeout: float = 10) -> dict:
        """The next message (ping messages of the server included)."""
        message = json.loads(self.connection.recv(timeout=timeout))
        self.check(message)
        return message

    def recv_skipping_pings(self, timeout: float = 10) -> dict:
        while True:
            message = self.recv(timeout)
            if message != {"type": "ping"}:
                return message

    def nothing_within(self, seconds: float) -> bool:
        """True when no message but server pings arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if self.recv(timeout=left) != {"type": "ping"}:
                    return False
        except TimeoutError:
            pass
        return True

    def close_code(self, timeout: float = 10) -> int | None:
        """Read until the server closes; return its close code."""
        try:
            while True:
                self.connection.recv(timeout=timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
