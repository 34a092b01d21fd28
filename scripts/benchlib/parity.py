"""Before anything is timed: the FastAPI app answers every benchmarked request as the floor does.

An app doing less work (or more) than the floor would make its figures worthless, so the bench
sends the same requests to both in-process and compares status, JSON body and, for the limited
variant, the rate-limit headers. Bodies of a create differ only in what a new row makes
(ids, timestamps, the caller's tenant and user): those keys are compared for presence, not value.
A few refused requests (no token, a bad query, a bad body) check that both validate alike.
"""

from __future__ import annotations

import json

from benchlib.asgi import AsgiClient
from benchlib.fixture import Account, Fixture
from benchlib.ops import OPERATIONS

# A create's fields that a new row (or another tenant's caller) makes differ.
NEW_ROW_KEYS = {"id", "tenantId", "enabledBy", "enabledAt", "createdAt", "updatedAt", "incomingWebhookUrl"}
RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class ParityError(RuntimeError):
    """The FastAPI app answered a request differently from the floor."""


async def _send(client: AsgiClient, method: str, path: str, *, query: str = "", account: Account | None,
                body: bytes = b"") -> tuple[int, object, dict[str, str]]:
    headers = account.headers if account is not None else [(b"content-type", b"application/json")]
    status, raw, response_headers = await client.request_with_headers(method, path, query=query, headers=headers,
                                                                      body=body)
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw
    return status, parsed, response_headers


def _comparable(op_key: str, body: object) -> object:
    if op_key == "create" and isinstance(body, dict):
        return {k: ("<new>" if k in NEW_ROW_KEYS and v is not None else v) for k, v in body.items()}
    return body


async def check(floor: AsgiClient, fastapi: AsgiClient, fixture: Fixture) -> list[dict]:
    """Send each benchmarked operation and the refused cases to both apps; return [{"case", "status"}] compared.

    Raises ParityError at the first difference.
    """
    compared = []
    reader = fixture.take()
    writers = {"floor": fixture.take(), "fastapi": fixture.take()}
    cases = []
    for op in OPERATIONS:
        cases.append((op.key, op.method, op.floor_path, op.query, op.body(fixture.provider_id, "parity-1")))
    bad_create = json.dumps({"integrationId": fixture.provider_id, "name": "x", "colour": "red"}).encode()
    cases += [
        ("catalog: unknown parameter", "GET", "/api/v1/integrations", "limit=50&color=red", b""),
        ("catalog: limit out of bounds", "GET", "/api/v1/integrations", "limit=101", b""),
        ("catalog: sortBy not in the enum", "GET", "/api/v1/integrations", "sortBy=colour", b""),
        ("create: unknown field", "POST", "/api/v1/tenant/integrations", "", bad_create),
        ("create: name too long", "POST", "/api/v1/tenant/integrations", "",
         json.dumps({"integrationId": fixture.provider_id, "name": "n" * 201}).encode()),
        ("create: not JSON", "POST", "/api/v1/tenant/integrations", "", b"{"),
        ("me: no token", "GET", "/api/v1/auth/me", "", b""),
    ]
    for key, method, path, query, body in cases:
        answers = {}
        for name, client in (("floor", floor), ("fastapi", fastapi)):
            account = None if key.endswith("no token") else writers[name] if method == "POST" else reader
            answers[name] = await _send(client, method, path, query=query, account=account, body=body)
        (f_status, f_body, f_headers), (a_status, a_body, a_headers) = answers["floor"], answers["fastapi"]
        if f_status != a_status or _comparable(key, f_body) != _comparable(key, a_body):
            raise ParityError(f"{key}: floor {f_status} {f_body!r:.300} / FastAPI {a_status} {a_body!r:.300}")
        if key == "create" and f_headers.get("location", "").rsplit("/", 1)[0] != \
                a_headers.get("location", "").rsplit("/", 1)[0]:
            raise ParityError(f"create: Location {f_headers.get('location')} / {a_headers.get('location')}")
        if key == "me_limited":
            floor_limits = [f_headers.get(h) is not None for h in RATE_LIMIT_HEADERS]
            if floor_limits != [a_headers.get(h) is not None for h in RATE_LIMIT_HEADERS] or not all(floor_limits):
                raise ParityError(f"me_limited: rate-limit headers {f_headers} / {a_headers}")
        compared.append({"case": key, "status": f_status})
    return compared
