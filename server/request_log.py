"""The outermost middleware of the hub: request id, body cap, CORS, security headers and the log line.

Added by the app factory at `MiddlewarePosition.BEFORE_EXCEPTION`, so it wraps Connexion's
exception handling: every response, errors included, passes through it. It used to be three
middlewares (request context, CORS, security headers); they are one pass now, which reads the
request headers once and stamps the answer's headers in one go (performance issue): the CORS
middleware runs only for requests that carry `Origin`, exactly where Starlette's would act.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starlette.responses import Response

from server.cors import EnvelopeCORSMiddleware
from server.errors import ApiError, error_response
from server.observability import request_duration
from server.request_context import adopt_request_id, set_request_id
from server.security import stamp_security_headers
from server.validation import normalize_media_type

logger = logging.getLogger("hub.request")
API_BASE = "/api/v1"


class BodyTooLarge(ApiError):
    """The request body exceeded the configured cap (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "VALIDATION_ERROR", f"Request body exceeds {limit} bytes", details={"maxBytes": limit})


class RequestContextMiddleware:
    """Give each request an id, cap its body, apply CORS, stamp the answer's headers and log one line.

    The id is taken from the request's `X-Request-ID` header when well-formed, else minted; it
    is bound to the context so error envelopes and log lines carry the same id. Every answer
    gets `X-Request-ID` and the rate-limit headers the operation noted; answers from inside
    the app also get the security headers (`server.security.stamp_security_headers`).
    `cors` holds the keyword arguments of Starlette's `CORSMiddleware` (None: no CORS), and
    `production` turns on HSTS.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = 1024 * 1024, *, cors: dict | None = None,
                 production: bool = False) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.production = production
        # Inside CORS, as the separate middlewares were: a preflight answer gets no security headers.
        self.cors = EnvelopeCORSMiddleware(self._secured, **cors) if cors is not None else None

    async def _secured(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamp(message: Message) -> None:
            if message["type"] == "http.response.start":
                stamp_security_headers(MutableHeaders(scope=message), message["status"], scope,
                                       production=self.production)
            await send(message)

        await self.app(scope, receive, stamp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        normalize_media_type(scope)
        headers = dict(scope.get("headers") or [])
        request_id = _bind_request_id(scope, headers)
        started = time.perf_counter()
        status_holder = {"status": 500}

        def stamp_request(headers: MutableHeaders) -> None:
            headers["X-Request-ID"] = request_id
            for key, value in (scope.get("state") or {}).get("response_headers", {}).items():
                headers.setdefault(key, value)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                stamp_request(MutableHeaders(scope=message))
            await send(message)

        async def send_secured(message: Message) -> None:
            # `_secured` then `send_with_id`, with one header view of the answer.
            if message["type"] == "http.response.start":
                status = status_holder["status"] = message["status"]
                headers = MutableHeaders(scope=message)
                stamp_security_headers(headers, status, scope, production=self.production)
                stamp_request(headers)
            await send(message)

        if scope.get("path") == API_BASE:
            # The versioned API's index is `/api/v1/` (openapi.yaml `/`); its bare base path
            # redirects there, as a directory does, instead of answering 404.
            query = scope.get("query_string", b"").decode("latin-1")
            location = API_BASE + "/" + (f"?{query}" if query else "")
            await Response(status_code=308, headers={"Location": location})(scope, receive, send_with_id)
            self._log(scope, request_id, 308, time.perf_counter() - started)
            return
        declared = headers.get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                receive = self._refuse_body(receive)
            elif declared is None and headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                receive = await self._buffer_chunked(scope, receive)
            else:
                receive = self._counted(receive)
        except BodyTooLarge as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.details)
            await Response(response.body, response.status_code, media_type="application/json")(scope, receive, send_with_id)
            return
        try:
            if self.cors is not None and b"origin" in headers:
                await self.cors(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_secured)
        finally:
            self._log(scope, request_id, status_holder["status"], time.perf_counter() - started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A socket gets a request id like a request (in the handshake answer's X-Request-ID) and
        # one log line when it ends: status 101 once accepted (403 when refused at handshake).
        request_id = _bind_request_id(scope, dict(scope.get("headers") or []))
        started = time.perf_counter()
        status_holder = {"status": 403}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "websocket.accept":
                status_holder["status"] = 101
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            scope.setdefault("state", {}).setdefault("operation_id", "websocket")
            self._log({**scope, "method": "WS"}, request_id, status_holder["status"], time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, request_id: str, status: int, elapsed: float) -> None:
        # The rate-limit middleware (after routing and security) noted the operation and tenant.
        state = scope.get("state") or {}
        operation_id = state.get("operation_id") or "unrouted"
        request_duration(operation_id, status).observe(elapsed)
        fields = {"requestId": request_id, "method": scope.get("method"), "path": scope.get("path"),
                  "operationId": operation_id, "status": status, "durationMs": round(elapsed * 1000, 1),
                  "tenantId": state.get("tenant_id")}
        logger.info("%s %s %s %.1fms", fields["method"], fields["path"], status, fields["durationMs"], extra=fields)

    async def _buffer_chunked(self, scope: Scope, receive: Receive) -> Receive:
        # Connexion's validators treat a request without Content-Length as bodiless, so a
        # chunked body is read here (up to the cap) and replayed with its length declared.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            more = message.get("more_body", False)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in (b"transfer-encoding", b"content-length")]
        scope["headers"].append((b"content-length", str(len(body)).encode()))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    def _refuse_body(self, receive: Receive) -> Receive:
        async def refuse() -> Message:
            raise BodyTooLarge(self.max_body_bytes)

        return refuse

    def _counted(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return counted


def _bind_request_id(scope: Scope, headers: dict[bytes, bytes]) -> str:
    """Adopt the request's well-formed `X-Request-ID` (else mint one), bind it to the context and
    the scope, and return it."""
    request_id = adopt_request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
    set_request_id(request_id)
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id
