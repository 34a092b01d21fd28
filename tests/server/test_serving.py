"""The event loop `integration-hub serve` runs (`server.cli.SERVE_LOOP`) accepts waiting connections together.

Under load a loop iteration runs every ready request's work, the `@local_read` handlers
included. A loop that accepts one connection per iteration (uvloop: libuv/libuv#3696) then kept
a new connection waiting ~20 iterations, up to 3 s, before reading its first request. Here a
request holds the loop while ten clients connect and send a request each; once the loop is
free, a task counts the loop's iterations and the app notes the iteration in which each of the
ten requests arrived.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from server.cli import SERVE_LOOP, uvicorn_options
from tests.server.test_client_ip import served  # serves with `integration-hub serve`'s uvicorn options

CLIENTS = 10


class TickingApp:
    """ASGI app: `/hold` blocks the loop until `release` is set, then starts counting iterations;
    any other path records the current iteration and answers 204."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        self.tick = 0
        self.arrivals: list[int] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            self.holding.set()
            assert self.release.wait(timeout=30)  # holds the event loop, as a long iteration does
            asyncio.get_running_loop().create_task(self._count_iterations())
        else:
            self.arrivals.append(self.tick)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def _count_iterations(self) -> None:
        while len(self.arrivals) < CLIENTS and self.tick < 10_000:
            self.tick += 1
            await asyncio.sleep(0)  # exactly one loop iteration


def _request(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
    return sock


def test_serve_runs_a_loop_that_accepts_waiting_connections_in_one_iteration(settings):
    assert SERVE_LOOP == uvicorn_options(settings)["loop"]
    app = TickingApp()
    clients: list[socket.socket] = []
    with served(app, settings) as base:
        port = int(base.rsplit(":", 1)[1])
        try:
            clients.append(_request(port, "/hold"))
            assert app.holding.wait(timeout=30)
            # The kernel completes these handshakes and buffers the requests while the loop is held.
            clients += [_request(port, f"/c{i}") for i in range(CLIENTS)]
            app.release.set()
            for client in clients:
                assert client.recv(64).startswith(b"HTTP/1.1 204")
        finally:
            app.release.set()
            for client in clients:
                client.close()
    assert len(app.arrivals) == CLIENTS
    # asyncio's loop: all ten in the same few iterations. uvloop: one more iteration per
    # connection (its arrivals spread over 10+ iterations).
    assert max(app.arrivals) - min(app.arrivals) <= 2, app.arrivals
