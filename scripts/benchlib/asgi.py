"""A minimal in-process ASGI client: a request costs the driver ~15 µs, so the CPU time measured
around it is the app's own (httpx's ASGITransport adds ~300 µs a request on the bench machine,
which would hide most of the difference between the hub and the floor)."""

from __future__ import annotations

import asyncio
from typing import Any, Self


class AsgiClient:
    """Drive an ASGI app directly: lifespan on enter/exit, then `request()` one at a time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Self:
        self._queue = asyncio.Queue()
        started, failed = asyncio.Event(), []

        async def receive() -> dict:
            return await self._queue.get()

        async def send(message: dict) -> None:
            if message["type"] == "lifespan.startup.failed":
                failed.append(message.get("message", "startup failed"))
            if message["type"].startswith("lifespan.startup"):
                started.set()

        await self._queue.put({"type": "lifespan.startup"})
        self._task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                  receive, send))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if failed:
            raise RuntimeError(f"lifespan startup failed: {failed[0]}")
        if self._task.done() and self._task.exception() is not None:
            raise self._task.exception()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            await self._queue.put({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except Exception:  # noqa: BLE001, S110 - a shutdown problem must not hide the results
                pass

    async def request(self, method: str, path: str, *, query: str = "", headers: list[tuple[bytes, bytes]] = (),
                      body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and return (status, body)."""
        status, content, _ = await self.request_with_headers(method, path, query=query, headers=headers, body=body)
        return status, content

    async def request_with_headers(self, method: str, path: str, *, query: str = "",
                                   headers: list[tuple[bytes, bytes]] = (),
                                   body: bytes = b"") -> tuple[int, bytes, dict[str, str]]:
        """Send one request and return (status, body, response headers with lower-case names)."""
        all_headers = [(b"host", b"bench"), *headers]
        if body:
            all_headers.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": query.encode(), "headers": all_headers, "client": ("127.0.0.1", 50000),
            "server": ("bench", 80), "state": {},
        }
        sent, done = False, asyncio.Event()
        status, chunks, response_headers = 0, [], {}

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.update((k.decode("latin-1").lower(), v.decode("latin-1"))
                                        for k, v in message.get("headers", ()))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        await self.app(scope, receive, send)
        done.set()
        return status, b"".join(chunks), response_headers
