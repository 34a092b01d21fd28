"""Realtime: the WebSocket `/ws` protocol and the SSE stream, against the hub served over TCP.

A real client (`websockets`, httpx for SSE) talks to the session's app served by uvicorn on a
loopback port (tests/realtime_support.py); the changes are made through the API. Every message
received over the socket is validated against the AsyncAPI document (openapi/asyncapi.yaml).
The settings that take time (keep-alive, re-check, queue size) are compressed per test.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid

import httpx
import jsonschema
import pytest
import yaml

from persistence import events as event_log
from persistence.audit import Actor
from persistence.db import transaction
from server.asyncapi import bundle
from server.validation import draft4_schema
from tests import factories
from tests.realtime_support import ServedHub, Socket

UNKNOWN_EVENT_ID = "evt_01AAAAAAAAAAAAAAAAAAAAAAAA"


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


def _payload_schema(node):
    # AsyncAPI multi-format schemas: OpenAPI 3.0 ones become plain JSON Schema (nullable & co).
    if isinstance(node, dict):
        if "schemaFormat" in node and "schema" in node:
            return draft4_schema(_resolve_internal(node["schema"]), mode="response")
        return {key: _payload_schema(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_payload_schema(item) for item in node]
    return node


_DOCUMENT = None


def _resolve_internal(node):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = _DOCUMENT
            for part in ref[2:].split("/"):
                target = target[part]
            return _resolve_internal(target)
        return {key: _resolve_internal(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_internal(item) for item in node]
    return node


@pytest.fixture(scope="session")
def asyncapi_check():
    """Return check(message): the message must validate against the AsyncAPI message of its `type`."""
    global _DOCUMENT
    _DOCUMENT = bundle()
    by_type: dict[str, list] = {}
    for message in _DOCUMENT["components"]["messages"].values():
        schema = _payload_schema(_resolve_internal(message["payload"]))
        kind = schema["properties"]["type"]
        for name in ([kind["const"]] if "const" in kind else kind["enum"]):
            by_type.setdefault(name, []).append(jsonschema.Draft7Validator(schema))

    def check(message: dict) -> None:
        validators = by_type.get(message.get("type"))
        assert validators, f"no AsyncAPI message has type {message.get('type')!r}: {message}"
        errors = [list(v.iter_errors(message)) for v in validators]
        assert any(not e for e in errors), f"{message} does not validate: {errors}"

    return check


@pytest.fixture(scope="module")
def served(app):
    hub = ServedHub(app).start()
    yield hub
    hub.stop()


@pytest.fixture
def connect(served, asyncapi_check):
    """Open a socket to the served hub (`token=` in the query when given); closed after the test."""
    opened: list[Socket] = []

    def open_socket(token: str | None = None, **kwargs) -> Socket:
        url = served.ws_url + (f"?token={token}" if token is not None else "")
        sock = Socket.open(url, check=asyncapi_check, **kwargs)
        opened.append(sock)
        return sock

    yield open_socket
    for sock in opened:
        sock.close()


@pytest.fixture
def tuned(settings, monkeypatch):
    """Compress a realtime setting for one test: tuned(ws_ping_seconds=0.2, ...)."""

    def apply(**values) -> None:
        for name, value in values.items():
            monkeypatch.setattr(settings, name, value)

    return apply


def emit(client, super_admin, admin) -> dict:
    """Make one change in `admin`'s tenant (enable a new provider): one `integration.created` event."""
    provider = factories.create_provider(client, super_admin)
    return factories.enable_integration(client, admin, provider["id"])


def api_token(client, admin, scopes: list[str]) -> dict:
    response = client.post("/api/v1/tenant/api-tokens", json={"name": "realtime", "scopes": scopes},
                           headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def subscribe(sock: Socket, channels: list[str], **extra) -> dict:
    sock.send({"type": "subscribe", "channels": channels, **extra})
    return sock.recv_skipping_pings()


def expect_event(sock: Socket, integration: dict) -> dict:
    message = sock.recv_skipping_pings()
    assert (message["type"], message["action"], message["data"]) == ("integration", "created", integration)
    assert message["id"].startswith("evt_") and message["timestamp"].endswith("Z")
    return message


# --------------------------------------------------------------------------------------------
# WebSocket: authentication
# --------------------------------------------------------------------------------------------


class TestAuthentication:
    def test_token_in_query(self, connect, tenant_admin):
        sock = connect(tenant_admin.access_token)
        sock.send({"type": "ping"})
        assert sock.recv() == {"type": "pong"}

    def test_first_message_auth(self, connect, tenant_admin):
        sock = connect()
        sock.send({"type": "auth", "token": tenant_admin.access_token})
        assert subscribe(sock, ["integrations"]) == {"type": "subscribed", "channels": ["integrations"]}

    def test_api_token(self, connect, client, tenant_admin):
        token = api_token(client, tenant_admin, ["integrations:read"])
        sock = connect(token["token"])
        assert subscribe(sock, ["integrations"]) == {"type": "subscribed", "channels": ["integrations"]}

    def test_handshake_carries_a_request_id(self, connect, tenant_admin):
        sock = connect(tenant_admin.access_token)
        assert sock.connection.response.headers["X-Request-ID"].startswith("req_")

    @pytest.mark.parametrize("token", ["not-a-token", "hub_" + "x" * 40, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"])
    def test_bad_token_closes_1008(self, connect, token):
        assert connect(token).close_code() == 1008

    def test_bad_first_message_closes_1008(self, connect):
        sock = connect()
        sock.send({"type": "subscribe", "channels": ["integrations"]})
        assert sock.close_code() == 1008

    def test_no_auth_in_time_closes_1008(self, connect, tuned):
        tuned(ws_auth_timeout_seconds=0.3)
        assert connect().close_code() == 1008

    def test_expired_token_closes_1008(self, connect, tenant_admin):
        import dataclasses

        import jwt

        from server import runtime
        from server.tokens import mint_access

        expired = mint_access(dataclasses.replace(runtime.get().tokens, access_ttl=-60),
                              user_id=uuid.UUID(tenant_admin.user_id), tenant_id=uuid.UUID(tenant_admin.tenant_id),
                              role="tenant_admin", family_id=uuid.UUID(jwt.decode(
                                  tenant_admin.access_token, options={"verify_signature": False})["fam"]))
        assert connect(expired).close_code() == 1008

    def test_platform_admin_has_no_stream(self, connect, super_admin):
        assert connect(super_admin.access_token).close_code() == 1008

    def test_suspended_tenant_closes_1008(self, connect, client, super_admin, tenant_admin):
        response = client.patch(f"/api/v1/admin/tenants/{tenant_admin.tenant_id}", json={"status": "suspended"},
                                headers=super_admin.headers)
        assert response.status_code == 200, response.text
        assert connect(tenant_admin.access_token).close_code() == 1008


# --------------------------------------------------------------------------------------------
# WebSocket: client messages
# --------------------------------------------------------------------------------------------


class TestMessages:
    def test_subscribe_and_unsubscribe(self, connect, tenant_admin):
        sock = connect(tenant_admin.access_token)
        assert subscribe(sock, ["integrations", "connections"]) == {
            "type": "subscribed", "channels": ["integrations", "connections"]}
        sock.send({"type": "unsubscribe", "channels": ["connections"]})
        assert sock.recv() == {"type": "unsubscribed", "channels": ["connections"]}

    def test_ping(self, connect, tenant_admin):
        sock = connect(tenant_admin.access_token)
        sock.send({"type": "ping"})
        assert sock.recv() == {"type": "pong"}

    def test_the_query_token_stays_out_of_uvicorns_log(self, connect, tenant_admin):
        # uvicorn logs each handshake's path with its query string at INFO on "uvicorn.error".
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append
        uvicorn_log = logging.getLogger("uvicorn.error")
        level = uvicorn_log.level
        uvicorn_log.addHandler(handler)
        uvicorn_log.setLevel(logging.INFO)
        try:
            sock = connect(tenant_admin.access_token)
            sock.send({"type": "ping"})
            assert sock.recv() == {"type": "pong"}
        finally:
            uvicorn_log.removeHandler(handler)
            uvicorn_log.setLevel(level)
        lines = [record.getMessage() for record in records]
        assert any('"WebSocket /ws?token=[redacted]" [accepted]' in line for line in lines), lines
        assert not any(tenant_admin.access_token in line for line in lines), lines

    def test_no_compression_even_when_the_client_offers_it(self, connect, tenant_admin):
        # permessage-deflate costs ~40 KiB per socket (README "Realtime"): the hub declines it.
        sock = connect(tenant_admin.access_token, compression="deflate")
        assert "permessage-deflate" in sock.connection.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in sock.connection.response.headers
        assert sock.connection.protocol.extensions == []
        sock.send({"type": "ping"})
        assert sock.recv() == {"type": "pong"}

    @pytest.mark.parametrize("message, text", [
        ("not json", "A message must be a JSON object with a type"),
        ("[1, 2]", "A message must be a JSON object with a type"),
        ({"type": "shout"}, "Unknown message type: expected subscribe, unsubscribe, ping, pong or auth"),
        ({"type": "subscribe"}, "channels must be a list of 1 to 50 channel names"),
        ({"type": "subscribe", "channels": []}, "channels must be a list of 1 to 50 channel names"),
        ({"type": "subscribe", "channels": ["incidents"]},
         "Unknown channel 'incidents': expected one of connections, integrations, sync, users, webhooks, "
         "integration:<id> or *"),
        ({"type": "subscribe", "channels": ["integrations"], "since": 42}, "since must be an event id (evt_...)"),
    ])
    def test_anything_else_is_an_error_not_a_close(self, connect, tenant_admin, message, text):
        sock = connect(tenant_admin.access_token)
        sock.send(message)
        assert sock.recv() == {"type": "error", "code": "VALIDATION_ERROR", "message": text}
        sock.send({"type": "ping"})
        assert sock.recv() == {"type": "pong"}

    def test_server_pings_and_drops_a_silent_peer(self, connect, tuned, tenant_admin):
        tuned(ws_ping_seconds=0.2, ws_idle_timeout_seconds=1.0)
        sock = connect(tenant_admin.access_token)
        assert sock.recv() == {"type": "ping"}
        assert sock.close_code() == 1001

    def test_answering_pings_keeps_the_socket(self, connect, tuned, tenant_admin):
        tuned(ws_ping_seconds=0.2, ws_idle_timeout_seconds=0.7)
        sock = connect(tenant_admin.access_token)
        for _ in range(8):  # 1.6 s, well past the idle timeout
            assert sock.recv() == {"type": "ping"}
            sock.send({"type": "pong"})
        sock.send({"type": "ping"})
        assert sock.recv_skipping_pings() == {"type": "pong"}


# --------------------------------------------------------------------------------------------
# WebSocket: delivery, isolation, scopes
# --------------------------------------------------------------------------------------------


class TestDelivery:
    @pytest.mark.parametrize("channel", ["integrations", "*"])
    def test_event_on_channel(self, connect, client, super_admin, tenant_admin, channel):
        sock = connect(tenant_admin.access_token)
        subscribe(sock, [channel])
        integration = emit(client, super_admin, tenant_admin)
        expect_event(sock, integration)

    def test_one_integration_channel(self, connect, client, super_admin, tenant_admin):
        first = emit(client, super_admin, tenant_admin)
        sock = connect(tenant_admin.access_token)
        subscribe(sock, [f"integration:{first['id']}"])
        emit(client, super_admin, tenant_admin)  # another integration: not on this channel
        sock.send({"type": "ping"})
        assert sock.recv_skipping_pings() == {"type": "pong"}

    def test_unsubscribed_channel_is_quiet(self, connect, client, super_admin, tenant_admin):
        sock = connect(tenant_admin.access_token)
        subscribe(sock, ["integrations", "users"])
        sock.send({"type": "unsubscribe", "channels": ["integrations"]})
        sock.recv()
        emit(client, super_admin, tenant_admin)
        assert sock.nothing_within(1.5)

    def test_other_tenant_sees_nothing(self, connect, client, super_admin, tenant_admin, other_tenant_admin):
        mine = emit(client, super_admin, tenant_admin)
        theirs = connect(other_tenant_admin.access_token)
        subscribe(theirs, ["*", f"integration:{mine['id']}"])
        emit(client, super_admin, tenant_admin)
        ours = emit(client, super_admin, other_tenant_admin)
        expect_event(theirs, ours)  # their own event, and nothing of the other tenant before it
        assert theirs.nothing_within(1.0)

    def test_member_may_not_read_integrations(self, connect, member):
        sock = connect(member.access_token)
        assert subscribe(sock, ["integrations"]) == {
            "type": "error", "code": "PERMISSION_DENIED",
            "message": "Channel 'integrations' requires the scope(s) integrations:read"}

    def test_api_token_scopes_filter_star(self, connect, client, super_admin, tenant_admin):
        token = api_token(client, tenant_admin, ["users:read"])
        sock = connect(token["token"])
        assert subscribe(sock, ["integrations"])["code"] == "PERMISSION_DENIED"
        assert subscribe(sock, ["*"]) == {"type": "subscribed", "channels": ["*"]}
        emit(client, super_admin, tenant_admin)  # an integration event: not readable with users:read
        assert sock.nothing_within(1.5)


# --------------------------------------------------------------------------------------------
# WebSocket: resume, resync, slow consumers, revocation
# --------------------------------------------------------------------------------------------


class TestResume:
    def test_resume_while_events_keep_coming(self, connect, client, super_admin, tenant_admin):
        providers = [factories.create_provider(client, super_admin) for _ in range(12)]
        created: list[str] = []

        def produce(batch):
            for provider in batch:
                created.append(factories.enable_integration(client, tenant_admin, provider["id"])["id"])

        sock = connect(tenant_admin.access_token)
        subscribe(sock, ["integrations"])
        produce(providers[:2])
        received = [sock.recv_skipping_pings() for _ in range(2)]
        sock.close()
        producer = threading.Thread(target=produce, args=(providers[2:],))
        producer.start()  # events keep coming while the client is away and while it resumes
        sock = connect(tenant_admin.access_token)
        assert subscribe(sock, ["integrations"], since=received[-1]["id"])["type"] == "subscribed"
        producer.join()
        while len(received) < 12:
            received.append(sock.recv_skipping_pings())
        assert [m["data"]["id"] for m in received] == created
        assert len({m["id"] for m in received}) == 12
        assert sock.nothing_within(1.0)

    def test_unknown_since_requires_resync(self, connect, client, super_admin, tenant_admin, other_tenant_admin):
        foreign = connect(other_tenant_admin.access_token)
        subscribe(foreign, ["integrations"])
        their_event = expect_event(foreign, emit(client, super_admin, other_tenant_admin))
        for since in (UNKNOWN_EVENT_ID, their_event["id"]):  # another tenant's id is unknown here
            sock = connect(tenant_admin.access_token)
            sock.send({"type": "subscribe", "channels": ["integrations"], "since": since})
            assert sock.recv() == {"type": "resync_required"}
            assert sock.recv() == {"type": "subscribed", "channels": ["integrations"]}
            expect_event(sock, emit(client, super_admin, tenant_admin))  # then live

    def test_slow_consumer_is_closed_1013_and_resumes(self, connect, tuned, client, super_admin, tenant_admin):
        tuned(realtime_queue_size=2)
        first = emit(client, super_admin, tenant_admin)
        sock = connect(tenant_admin.access_token)
        subscribe(sock, ["*"])
        tenant = uuid.UUID(tenant_admin.tenant_id)
        with transaction() as session:  # five events in one commit: one wake-up, five to queue
            for n in range(5):
                event_log.record_change(session, tenant_id=tenant, actor=Actor(user_id=None, role=None, tenant_id=tenant),
                                        action="integration.update", resource_type="integration",
                                        resource_id=first["id"], event_type="integration.updated",
                                        data={**first, "name": f"burst {n}"})
        assert sock.close_code() == 1013
        tuned(realtime_queue_size=1000)
        sock = connect(tenant_admin.access_token)
        sock.send({"type": "subscribe", "channels": ["*"], "since": created_event_id(tenant_admin, first)})
        assert sock.recv()["type"] == "subscribed"
        names = [sock.recv_skipping_pings()["data"]["name"] for _ in range(5)]
        assert names == [f"burst {n}" for n in range(5)]

    def test_revoked_api_token_closes_1008(self, connect, tuned, client, tenant_admin):
        tuned(realtime_recheck_seconds=0.3)
        token = api_token(client, tenant_admin, ["integrations:read"])
        sock = connect(token["token"])
        subscribe(sock, ["integrations"])
        response = client.delete(f"/api/v1/tenant/api-tokens/{token['id']}", headers=tenant_admin.headers)
        assert response.status_code in (200, 204), response.text
        assert sock.close_code() == 1008

    def test_suspension_while_connected_closes_1008(self, connect, tuned, client, super_admin, tenant_admin):
        tuned(realtime_recheck_seconds=0.3)
        sock = connect(tenant_admin.access_token)
        subscribe(sock, ["integrations"])
        response = client.patch(f"/api/v1/admin/tenants/{tenant_admin.tenant_id}", json={"status": "suspended"},
                                headers=super_admin.headers)
        assert response.status_code == 200, response.text
        assert sock.close_code() == 1008


def created_event_id(admin, integration: dict) -> str:
    """The id of the `integration.created` event of `integration` (read from the log)."""
    from sqlmodel import select

    from persistence.models import Event

    with transaction() as session:
        rows = session.exec(select(Event).where(Event.tenant_id == uuid.UUID(admin.tenant_id),
                                                Event.type == "integration.created")).all()
    (found,) = [row.id for row in rows if row.data["id"] == integration["id"]]
    return found


# --------------------------------------------------------------------------------------------
# Server-Sent Events
# --------------------------------------------------------------------------------------------


def read_sse(response: httpx.Response, count: int) -> list[dict]:
    """Read `count` events (id, event, data) from an open SSE response, skipping comments."""
    events, current = [], {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if current:
                events.append(current)
                current = {}
                if len(events) == count:
                    return events
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    raise AssertionError(f"stream ended after {events}")


class TestServerSentEvents:
    def test_live_events(self, served, client, super_admin, tenant_admin, asyncapi_check):
        with httpx.Client(base_url=served.http_url, timeout=15) as http, \
                http.stream("GET", "/api/v1/events/stream", headers=tenant_admin.headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-request-id"].startswith("req_")
            integration = emit(client, super_admin, tenant_admin)
            (event,) = read_sse(response, 1)
        message = json.loads(event["data"])
        asyncapi_check(message)
        assert (event["event"], event["id"], message["data"]) == ("integration.created", message["id"], integration)

    def test_last_event_id_resumes_with_exactly_what_followed(self, served, client, super_admin, tenant_admin):
        first = emit(client, super_admin, tenant_admin)
        with httpx.Client(base_url=served.http_url, timeout=15) as http:
            with http.stream("GET", f"/api/v1/events/stream?token={tenant_admin.access_token}",
                             headers={"Last-Event-ID": UNKNOWN_EVENT_ID}) as response:
                resync, *_ = read_sse(response, 1)
                assert resync == {"event": "resync_required", "data": '{"type": "resync_required"}'}
            with http.stream("GET", "/api/v1/events/stream", headers=tenant_admin.headers) as response:
                emit(client, super_admin, tenant_admin)
                (last_seen,) = read_sse(response, 1)
            two = [emit(client, super_admin, tenant_admin) for _ in range(2)]  # while nobody listens
            with http.stream("GET", "/api/v1/events/stream",
                             headers={**tenant_admin.headers, "Last-Event-ID": last_seen["id"]}) as response:
                replayed = read_sse(response, 2)
        assert [json.loads(e["data"])["data"] for e in replayed] == two

    def test_types_filter(self, served, client, super_admin, tenant_admin):
        timeout = httpx.Timeout(15, read=1.5)
        with httpx.Client(base_url=served.http_url, timeout=timeout) as http, \
                http.stream("GET", "/api/v1/events/stream?types=integration.deleted,user.created",
                            headers=tenant_admin.headers) as response:
            emit(client, super_admin, tenant_admin)  # integration.created: not asked for
            with pytest.raises(httpx.ReadTimeout):
                read_sse(response, 1)

    def test_member_is_denied(self, client, member):
        response = client.get("/api/v1/events/stream", headers=member.headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"

    def test_bad_query_token_is_401(self, client):
        response = client.get("/api/v1/events/stream?token=nope")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "INVALID_TOKEN"


# --------------------------------------------------------------------------------------------
# The AsyncAPI document
# --------------------------------------------------------------------------------------------


class TestAsyncApiDocument:
    def test_served_and_self_contained(self, client):
        response = client.get("/api/v1/asyncapi.yaml")
        assert response.status_code == 200
        document = yaml.safe_load(response.text)
        assert document["asyncapi"].startswith("3.") and document["channels"]["realtime"]["address"] == "/ws"
        assert "components/" not in json.dumps(document).replace("#/components/", "")

    def test_valid_for_the_official_asyncapi_parser(self):
        """@asyncapi/parser (package.json) accepts the source document, its OpenAPI $refs resolved."""
        import os
        import shutil
        import subprocess
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        if shutil.which("node") is None or not (root / "node_modules" / "@asyncapi" / "parser").is_dir():
            if os.environ.get("CI") == "true":
                pytest.fail("node and `npm ci` are needed for the AsyncAPI validation in CI", pytrace=False)
            pytest.skip("node or node_modules/@asyncapi/parser missing (run npm ci): AsyncAPI validation skipped")
        result = subprocess.run(["node", "scripts/asyncapi-validate.mjs", "openapi/asyncapi.yaml"], cwd=root,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "openapi/asyncapi.yaml: valid AsyncAPI 3.0.0 (16 messages)" in result.stdout
