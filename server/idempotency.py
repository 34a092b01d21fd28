"""Idempotent POSTs (as Stripe does), for the operations whose spec declares `Idempotency-Key`.

A retry with the same key and body replays the stored status and body (with
`Idempotent-Replayed: true`); the same key with another body answers 422; a retry while the
first is still running answers 409. Keys are scoped per principal, as Stripe scopes them per
API key: the API token when the caller is one, else the signed-in user, else (anonymous calls:
register) the client IP; a key one principal used means nothing to another, so nobody can
replay somebody else's answer. Kept 24 hours, answer bodies sealed at rest
(persistence/idempotency.py). Server errors are not stored, so a retry after a 5xx runs the
request again.
"""

from __future__ import annotations

import hashlib

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from persistence import idempotency
from persistence.db import transaction
from persistence.vault import VaultError
from server import runtime
from server.errors import error_response
from server.raw_body import read_body

HEADER = b"idempotency-key"
REPLAYED_HEADERS = ("location", "content-type")


def declared_operations(spec: dict) -> set[str]:
    """The operationIds whose parameters include the `Idempotency-Key` header."""
    found = set()
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and any(p.get("in") == "header" and p.get("name") == "Idempotency-Key"
                                                   for p in operation.get("parameters", [])):
                found.add(operation["operationId"])
    return found


class IdempotencyMiddleware:
    """Claim, replay or refuse an Idempotency-Key before the operation runs; store its answer after."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions") or {}
        operation_id = (extensions.get("connexion_routing") or {}).get("operation_id")
        key = dict(scope.get("headers") or []).get(HEADER) if scope["type"] == "http" else None
        if not key or operation_id not in runtime.get().idempotent_operations or not 0 < len(key) <= 255:
            await self.app(scope, receive, send)  # an over-long key is refused by validation
            return
        key_text = key.decode("latin-1")
        body, receive = await _read_body(receive)
        token_info = (extensions.get("connexion_context") or {}).get("token_info") or {}
        owner = principal(token_info, scope)
        fingerprint = hashlib.sha256(b"|".join([scope["method"].encode(), scope["path"].encode(), body])).hexdigest()
        claim = await run_in_threadpool(_claim, owner, key_text, fingerprint)
        if claim.outcome != "new":
            await _answer_claim(claim, scope, receive, send)
            return
        captured: dict = {"status": 500, "headers": [], "body": b""}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"], captured["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await run_in_threadpool(_settle, owner, key_text, captured)


def principal(token_info: dict, scope: Scope) -> str:
    """The scope of an Idempotency-Key: `token:<id>`, `user:<id>`, or `ip:<address>` when anonymous."""
    if token_info.get("tokenId"):
        return f"token:{token_info['tokenId']}"
    if token_info.get("userId"):
        return f"user:{token_info['userId']}"
    return f"ip:{(scope.get('client') or ('unknown',))[0]}"


def _claim(owner: str, key: str, fingerprint: str) -> idempotency.Claim:
    with transaction() as session:
        return idempotency.claim(session, scope=owner, key=key, request_hash=fingerprint)


def _settle(owner: str, key: str, captured: dict) -> None:
    with transaction() as session:
        if captured["status"] >= 500:
            idempotency.release(session, scope=owner, key=key)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in captured["headers"]}
        idempotency.complete(session, scope=owner, key=key, status=captured["status"],
                             body=captured["body"].decode("utf-8", "replace"),
                             headers={k: v for k, v in headers.items() if k in REPLAYED_HEADERS})


async def _answer_claim(claim: idempotency.Claim, scope: Scope, receive: Receive, send: Send) -> None:
    body = None
    if claim.outcome == "replay":
        try:
            body = idempotency.stored_body(claim.record)
        except VaultError:  # sealed under a key no longer configured: cannot replay, must not re-run
            body = None
    if body is not None:
        record = claim.record
        headers = {**(record.response_headers or {}), "idempotent-replayed": "true"}
        response = Response(body, record.response_status, headers=headers)
    else:
        status, message = ((422, "This Idempotency-Key was used with a different request") if claim.outcome == "mismatch"
                           else (409, "A request with this Idempotency-Key is still in progress")
                           if claim.outcome == "in_progress"
                           else (409, "The answer stored for this Idempotency-Key can no longer be replayed"))
        code = "VALIDATION_ERROR" if status == 422 else "CONFLICT"
        error = error_response(status, code, message, {"field": "Idempotency-Key"})
        response = Response(error.body, status, media_type="application/json")
    await response(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    body, sent = await read_body(receive), False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay
