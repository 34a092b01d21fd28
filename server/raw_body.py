"""Raw request bodies for the operation whose authentication is a signature over the exact bytes.

`POST /api/v1/webhooks/incoming/{integrationId}` verifies a provider's HMAC over the body as
received, whatever its media type. Connexion would parse a JSON or form body before the handler
(and a form parse consumes the stream), so this middleware hands Connexion the same bytes
labelled `application/octet-stream`: the operation then receives them untouched as `body`, and
no parser runs on unauthenticated input. The original media type stays in
`scope["state"]["raw_content_type"]`.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

RAW_BODY_PATH = re.compile(r"/webhooks/incoming/[^/]+$")  # the API base path may be stripped by routing


class RawBodyMiddleware:
    """Relabel the body of incoming-webhook requests as `application/octet-stream` (bytes kept as sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not RAW_BODY_PATH.search(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        original = next((value for name, value in headers if name.lower() == b"content-type"), None)
        scope.setdefault("state", {})["raw_content_type"] = original.decode("latin-1") if original else None
        scope["headers"] = [(name, value) for name, value in headers if name.lower() != b"content-type"]
        scope["headers"].append((b"content-type", b"application/octet-stream"))
        await self.app(scope, receive, send)


async def read_body(receive: Receive) -> bytes:
    """Read a request's whole body from `receive` (every `http.request` message until `more_body` is false)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)
