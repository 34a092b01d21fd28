"""Operations of tag `events` (GET /events, GET /webhooks/event-types) and the events every
tenant mutation emits: each type, its `data` equal to the API's GET view, through the API (the
sandbox provider over loopback HTTP where a connection is involved)."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from sqlmodel import select

from persistence import connections
from persistence import events as event_log
from persistence.audit import Actor
from persistence.db import transaction
from persistence.models import AuditEntry, Event
from server.app import API_SPEC, load_spec
from tests import factories
from tests.assertions import assert_error
from tests.handlers.test_oauth_flow import CLIENT, authorize, callback, connect, short_lived_tokens  # noqa: F401
from tests.handlers.test_tenant_integrations import connect_api_key, item_url, static_provider

EVENTS = "/api/v1/events"
EVENT_TYPES = "/api/v1/webhooks/event-types"


def events_of(client, admin: factories.Account, **params) -> list[dict]:
    """Every event of `admin`'s tenant through GET /events (all pages), oldest first."""
    seen, after = [], None
    while True:
        response = client.get(EVENTS, params={**params, **({"after": after} if after else {}), "limit": 250},
                              headers=admin.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += page["events"]
        after = page["nextCursor"]
        if not page["hasMore"]:
            return seen


def last_event(client, admin: factories.Account, event_type: str) -> dict:
    """The tenant's newest event of `event_type` (exactly one is expected to be new since the last look)."""
    matching = [event for event in events_of(client, admin) if event["type"] == event_type]
    assert matching, f"no {event_type} event"
    return matching[-1]


def get(client, admin: factories.Account, path: str) -> dict:
    response = client.get(f"/api/v1{path}", headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def assert_envelope(event: dict, admin: factories.Account, event_type: str, *, actor: dict | None = None) -> None:
    """The envelope of one event of `admin`'s tenant: id, type, tenant, actor, request id and time."""
    assert set(event) == {"id", "type", "occurredAt", "tenantId", "data", "requestId", "actor"}
    assert event["type"] == event_type
    assert event["id"].startswith("evt_") and len(event["id"]) == 30
    assert event["tenantId"] == admin.tenant_id
    assert event["actor"] == (actor or {"type": "user", "id": admin.user_id, "role": "tenant_admin"})
    if event["actor"]["type"] == "user":
        assert event["requestId"].startswith("req_")
    else:
        assert event["requestId"] is None


def assert_audited_with(event: dict, action: str) -> None:
    """The event's audit entry exists: same request, same tenant, the audit action."""
    with transaction() as session:
        entries = session.exec(select(AuditEntry).where(AuditEntry.tenant_id == uuid.UUID(event["tenantId"]),
                                                        AuditEntry.action == action)).all()
    assert any(entry.request_id == event["requestId"] for entry in entries), (action, event["requestId"])


# -- every event type, its data the API's view ---------------------------------------------------


class TestIntegrationEvents:
    def test_each_change_emits_its_event_with_the_integration_view(self, client, tenant_admin, super_admin, sandbox):
        provider = static_provider(client, super_admin, sandbox, "api_key")
        created = factories.enable_integration(client, tenant_admin, provider["id"])
        path = f"/tenant/integrations/{created['id']}"
        event = last_event(client, tenant_admin, "integration.created")
        assert_envelope(event, tenant_admin, "integration.created")
        assert event["data"] == created == get(client, tenant_admin, path)

        response = client.patch(f"/api/v1{path}", json={"name": "Renamed"}, headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        event = last_event(client, tenant_admin, "integration.updated")
        assert_envelope(event, tenant_admin, "integration.updated")
        assert event["data"] == response.json() == get(client, tenant_admin, path)
        assert event["data"]["name"] == "Renamed"
        assert_audited_with(event, "integration.update")

        for action, event_type, status in (("deactivate", "integration.deactivated", "disabled"),
                                           ("activate", "integration.activated", "pending")):
            response = client.post(f"/api/v1{path}/{action}", headers=tenant_admin.headers)
            assert response.status_code == 200, response.text
            event = last_event(client, tenant_admin, event_type)
            assert_envelope(event, tenant_admin, event_type)
            assert event["data"] == get(client, tenant_admin, path)
            assert event["data"]["status"] == status

        before = get(client, tenant_admin, path)
        response = client.delete(f"/api/v1{path}", headers=tenant_admin.headers)
        assert response.status_code == 204, response.text
        event = last_event(client, tenant_admin, "integration.deleted")
        assert_envelope(event, tenant_admin, "integration.deleted")
        assert event["data"] == before
        assert_audited_with(event, "integration.delete")


class TestConnectionEvents:
    def test_api_key_connect_test_credentials_and_disconnect(self, client, tenant_admin, super_admin, sandbox):
        provider = static_provider(client, super_admin, sandbox, "api_key")
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        path = f"/tenant/integrations/{integration['id']}/connection"

        connect_api_key(client, tenant_admin, integration["id"])
        event = last_event(client, tenant_admin, "connection.connected")
        assert_envelope(event, tenant_admin, "connection.connected")
        assert event["data"] == get(client, tenant_admin, path)
        assert event["data"]["status"] == "active" and event["data"]["authType"] == "api_key"

        response = client.post(item_url(integration["id"], "/connection/test"), headers=tenant_admin.headers)
        assert response.status_code == 200 and response.json()["success"] is True, response.text
        event = last_event(client, tenant_admin, "connection.tested")
        assert_envelope(event, tenant_admin, "connection.tested")
        assert event["data"] == get(client, tenant_admin, path)
        assert event["data"]["lastValidatedAt"] is not None

        response = client.patch(item_url(integration["id"], "/credentials"), headers=tenant_admin.headers,
                                json={"credentialType": "api_key", "credentials": {"apiKey": "sandbox-api-key"}})
        assert response.status_code == 200, response.text
        event = last_event(client, tenant_admin, "connection.credentials_updated")
        assert_envelope(event, tenant_admin, "connection.credentials_updated")
        assert event["data"] == get(client, tenant_admin, path)
        assert event["data"]["credentialSecretName"] == response.json()["credentialSecretName"]
        assert "sandbox-api-key" not in str(events_of(client, tenant_admin))

        response = client.post(item_url(integration["id"], "/disconnect"), headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        event = last_event(client, tenant_admin, "connection.disconnected")
        assert_envelope(event, tenant_admin, "connection.disconnected")
        assert event["data"] == get(client, tenant_admin, path)
        assert event["data"]["status"] == "revoked"

    def test_oauth_callback_connects_or_fails(self, client, tenant_admin, sandbox_integration):
        path = f"/tenant/integrations/{sandbox_integration['id']}/connection"
        _, redirect = authorize(client, tenant_admin, sandbox_integration, deny="1")
        assert callback(client, redirect.headers["location"]).status_code == 302
        event = last_event(client, tenant_admin, "connection.failed")
        # The redirect has no signed-in caller: the user who started the flow, role unknown.
        assert_envelope(event, tenant_admin, "connection.failed",
                        actor={"type": "user", "id": tenant_admin.user_id, "role": None})
        assert event["data"] == get(client, tenant_admin, path)
        assert (event["data"]["status"], event["data"]["validationError"]) == (
            "error", "The user or the provider denied access")

        connect(client, tenant_admin, sandbox_integration)
        event = last_event(client, tenant_admin, "connection.connected")
        assert_envelope(event, tenant_admin, "connection.connected",
                        actor={"type": "user", "id": tenant_admin.user_id, "role": None})
        assert event["data"] == get(client, tenant_admin, path)
        assert (event["data"]["status"], event["data"]["authType"]) == ("active", "oauth2")

    @pytest.mark.usefixtures("short_lived_tokens")
    def test_refused_refresh_emits_expired_by_the_hub(self, client, tenant_admin, sandbox, sandbox_integration):
        connect(client, tenant_admin, sandbox_integration)
        path = f"/tenant/integrations/{sandbox_integration['id']}/connection"
        with transaction() as session:
            row = connections.get(session, tenant_id=uuid.UUID(tenant_admin.tenant_id),
                                  integration_id=uuid.UUID(sandbox_integration["id"]))
            refresh_token = connections.credentials(row)["refreshToken"]
        # Spend the refresh token at the provider first, so the hub's refresh gets invalid_grant.
        spent = httpx.post(f"{sandbox.base_url}/oauth/token", auth=CLIENT, timeout=10,
                           data={"grant_type": "refresh_token", "refresh_token": refresh_token})
        assert spent.status_code == 200, spent.text

        response = client.post(item_url(sandbox_integration["id"], "/connection/test"), headers=tenant_admin.headers)

        assert response.status_code == 200 and response.json()["success"] is False, response.text
        expired = last_event(client, tenant_admin, "connection.expired")
        assert_envelope(expired, tenant_admin, "connection.expired", actor={"type": "system", "id": None, "role": None})
        # The test that found it is recorded after the expiry, by the caller: it only adds lastValidatedAt.
        tested = last_event(client, tenant_admin, "connection.tested")
        assert_envelope(tested, tenant_admin, "connection.tested")
        assert tested["data"] == get(client, tenant_admin, path)
        assert expired["data"] == tested["data"] | {"lastValidatedAt": None}
        assert expired["data"]["status"] == "expired" and "invalid_grant" in expired["data"]["validationError"]
        types = [event["type"] for event in events_of(client, tenant_admin)]
        assert types[-2:] == ["connection.expired", "connection.tested"]

    def test_user_scoped_disconnect(self, client, tenant_admin, super_admin, sandbox, sandbox_provider):
        member = factories.add_user(client, tenant_admin, role="user")
        integration = factories.enable_integration(client, tenant_admin, sandbox_provider["id"], userScoped=True)
        started = client.post(f"/api/v1/user/integrations/{integration['id']}/connect/oauth", headers=member.headers,
                              json={"returnUrl": "https://app.example.com/integrations"})
        assert started.status_code == 200, started.text
        redirect = factories.follow_authorization(started.json()["authorizationUrl"])
        assert callback(client, redirect.headers["location"]).status_code == 302
        connected = last_event(client, tenant_admin, "connection.connected")
        assert connected["actor"] == {"type": "user", "id": member.user_id, "role": None}
        own = get(client, member, f"/user/integrations/{integration['id']}/connection")
        assert (connected["data"]["connectionId"], connected["data"]["status"]) == (own["connectionId"], own["status"])

        response = client.post(f"/api/v1/user/integrations/{integration['id']}/disconnect", headers=member.headers)
        assert response.status_code == 200, response.text
        event = last_event(client, tenant_admin, "connection.disconnected")
        assert event["actor"] == {"type": "user", "id": member.user_id, "role": "user"}
        assert event["data"] == connected["data"] | {"status": "revoked", "expiresAt": None,
                                                      "credentialSecretName": None}
        assert event["data"]["connectionId"] == get(client, member, f"/user/integrations/{integration['id']}/connection")["connectionId"]


class TestAccountEvents:
    def test_user_created_updated_deleted(self, client, tenant_admin):
        member = factories.add_user(client, tenant_admin, role="user")
        path = f"/tenant/users/{member.user_id}"
        event = last_event(client, tenant_admin, "user.created")
        assert_envelope(event, tenant_admin, "user.created")
        # Created before the member's first login: the view then had no lastLoginAt.
        assert event["data"] == get(client, tenant_admin, path) | {"lastLoginAt": None}
        assert "password" not in str(event)

        response = client.patch(f"/api/v1{path}", json={"active": False}, headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        event = last_event(client, tenant_admin, "user.updated")
        assert_envelope(event, tenant_admin, "user.updated")
        assert event["data"] == response.json() == get(client, tenant_admin, path)

        before = get(client, tenant_admin, path)
        assert client.delete(f"/api/v1{path}", headers=tenant_admin.headers).status_code == 204
        event = last_event(client, tenant_admin, "user.deleted")
        assert_envelope(event, tenant_admin, "user.deleted")
        assert event["data"] == before

    def test_api_token_created_and_revoked_never_carry_the_secret(self, client, tenant_admin):
        response = client.post("/api/v1/tenant/api-tokens", json={"name": "ci", "scopes": ["events:read"]},
                               headers=tenant_admin.headers)
        assert response.status_code == 201, response.text
        created = response.json()
        event = last_event(client, tenant_admin, "api_token.created")
        assert_envelope(event, tenant_admin, "api_token.created")
        listed = client.get("/api/v1/tenant/api-tokens", headers=tenant_admin.headers).json()["tokens"]
        assert event["data"] == {k: v for k, v in created.items() if k != "token"} == listed[0] | {"lastUsedAt": None}
        assert created["token"] not in str(events_of(client, tenant_admin))

        # The token itself can poll the log (events:read).
        polled = client.get(EVENTS, headers={"X-API-Key": created["token"]})
        assert polled.status_code == 200, polled.text

        assert client.delete(f"/api/v1/tenant/api-tokens/{created['id']}", headers=tenant_admin.headers).status_code == 204
        event = last_event(client, tenant_admin, "api_token.revoked")
        assert_envelope(event, tenant_admin, "api_token.revoked")
        revoked = client.get("/api/v1/tenant/api-tokens", params={"includeRevoked": "true"},
                             headers=tenant_admin.headers).json()["tokens"]
        assert event["data"] == revoked[0]
        assert event["data"]["revokedAt"] is not None

    def test_tenant_updated_by_the_platform_belongs_to_the_tenant(self, client, tenant_admin, super_admin):
        path = f"/admin/tenants/{tenant_admin.tenant_id}"
        response = client.patch(f"/api/v1{path}", json={"plan": "professional"}, headers=super_admin.headers)
        assert response.status_code == 200, response.text
        event = last_event(client, tenant_admin, "tenant.updated")
        assert_envelope(event, tenant_admin, "tenant.updated",
                        actor={"type": "user", "id": super_admin.user_id, "role": "super_admin"})
        assert event["data"] == response.json() == get(client, super_admin, path)
        assert event["data"]["plan"] == "professional"

    def test_login_logout_and_register_emit_nothing(self, client):
        admin = factories.register(client)
        factories.login(client, admin.email, admin.password)
        response = client.post("/api/v1/auth/logout", json={"refreshToken": admin.refresh_token}, headers=admin.headers)
        assert response.status_code in (200, 204), response.text
        with transaction() as session:
            assert session.exec(select(Event).where(Event.tenant_id == uuid.UUID(admin.tenant_id))).all() == []


# -- GET /events ---------------------------------------------------------------------------------


def make_events(client, admin: factories.Account, count: int) -> list[str]:
    """Create `count` users (one user.created event each); return the new events' ids, oldest first."""
    before = {event["id"] for event in events_of(client, admin)}
    for _ in range(count):
        body = {"email": f"{factories.unique('u')}@example.com", "name": "Uma", "role": "user",
                "password": factories.PASSWORD}
        assert client.post("/api/v1/tenant/users", json=body, headers=admin.headers).status_code == 201
    return [event["id"] for event in events_of(client, admin) if event["id"] not in before]


class TestListEvents:
    def test_pages_oldest_first_with_a_cursor_present_on_the_last_page(self, client, tenant_admin):
        ids = make_events(client, tenant_admin, 5)

        first = client.get(EVENTS, params={"limit": 2}, headers=tenant_admin.headers).json()
        assert [e["id"] for e in first["events"]] == ids[:2]
        assert (first["limit"], first["hasMore"], first["nextCursor"]) == (2, True, ids[1])
        second = client.get(EVENTS, params={"limit": 2, "after": ids[1]}, headers=tenant_admin.headers).json()
        assert [e["id"] for e in second["events"]] == ids[2:4]
        last = client.get(EVENTS, params={"limit": 2, "after": ids[3]}, headers=tenant_admin.headers).json()
        assert last == {"events": last["events"], "limit": 2, "hasMore": False, "nextCursor": ids[4]}
        assert [e["id"] for e in last["events"]] == ids[4:]
        empty = client.get(EVENTS, params={"after": ids[4]}, headers=tenant_admin.headers).json()
        assert empty == {"events": [], "limit": 50, "hasMore": False, "nextCursor": ids[4]}

    def test_an_empty_log_has_no_cursor(self, client):
        admin = factories.register(client)
        body = client.get(EVENTS, headers=admin.headers).json()
        assert body == {"events": [], "limit": 50, "hasMore": False, "nextCursor": None}

    def test_types_filter_repeated_or_comma_separated(self, client, tenant_admin, super_admin, sandbox):
        make_events(client, tenant_admin, 2)
        provider = static_provider(client, super_admin, sandbox, "api_key")
        factories.enable_integration(client, tenant_admin, provider["id"])
        everything = events_of(client, tenant_admin)
        wanted = [e for e in everything if e["type"] in ("integration.created", "user.created")]
        assert len(wanted) == 3 and len(everything) == 3
        for params in ({"types": ["integration.created", "user.created"]}, {"types": "integration.created,user.created"}):
            response = client.get(EVENTS, params=params, headers=tenant_admin.headers)
            assert response.status_code == 200, response.text
            assert response.json()["events"] == wanted
        only = client.get(EVENTS, params={"types": "integration.created"}, headers=tenant_admin.headers).json()
        assert [e["type"] for e in only["events"]] == ["integration.created"]
        assert only["nextCursor"] == only["events"][0]["id"]

    def test_unknown_types_are_refused(self, client, tenant_admin):
        response = client.get(EVENTS, params={"types": "user.created,user.exploded"}, headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR", message="types: unknown event types: user.exploded",
                     details={"field": "types", "unknown": ["user.exploded"]})

    @pytest.mark.parametrize("limit", [0, 251, -1])
    def test_limit_out_of_bounds_is_refused(self, client, tenant_admin, limit):
        response = client.get(EVENTS, params={"limit": limit}, headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR")

    def test_limit_bounds_are_served(self, client, tenant_admin):
        ids = make_events(client, tenant_admin, 3)
        one = client.get(EVENTS, params={"limit": 1}, headers=tenant_admin.headers).json()
        assert ([e["id"] for e in one["events"]], one["limit"], one["hasMore"]) == (ids[:1], 1, True)
        most = client.get(EVENTS, params={"limit": 250}, headers=tenant_admin.headers).json()
        assert ([e["id"] for e in most["events"]], most["limit"], most["hasMore"]) == (ids, 250, False)

    def test_another_tenant_never_sees_the_events_and_its_ids_are_refused_like_unknown(
            self, client, tenant_admin, other_tenant_admin):
        ids = make_events(client, tenant_admin, 2)
        make_events(client, other_tenant_admin, 1)
        theirs = events_of(client, other_tenant_admin)
        assert len(theirs) == 1 and not set(ids) & {e["id"] for e in theirs}
        assert {e["tenantId"] for e in theirs} == {other_tenant_admin.tenant_id}

        foreign = client.get(EVENTS, params={"after": ids[0]}, headers=other_tenant_admin.headers)
        unknown_id = "evt_01JD3Q4V9M7X2T8K5N6P0R1S2Z"
        unknown = client.get(EVENTS, params={"after": unknown_id}, headers=other_tenant_admin.headers)
        for response, event_id in ((foreign, ids[0]), (unknown, unknown_id)):
            assert_error(response, 400, "VALIDATION_ERROR", details={"field": "after"},
                         message=f"after: {event_id} is not an event of this tenant's log (unknown, or older than "
                                 "the retention period); start again without `after`")

    def test_malformed_cursor_is_refused(self, client, tenant_admin):
        response = client.get(EVENTS, params={"after": "evt_not-a-ulid"}, headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR")

    def test_a_member_may_not_read_the_log(self, client, member):
        response = client.get(EVENTS, headers=member.headers)
        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["events:read"]})

    def test_a_poller_never_misses_or_repeats_while_events_are_written(self, client, tenant_admin):
        """A writer thread records 60 events while the reader walks the log 7 at a time."""
        tenant_id, total = uuid.UUID(tenant_admin.tenant_id), 60
        actor = Actor(uuid.UUID(tenant_admin.user_id), "tenant_admin", tenant_id)
        view = get(client, tenant_admin, f"/tenant/users/{tenant_admin.user_id}")
        errors: list[Exception] = []

        def write() -> None:
            try:
                for _ in range(total):
                    with transaction() as session:
                        event_log.record_change(session, tenant_id=tenant_id, actor=actor, action="user.update",
                                                resource_type="user", resource_id=tenant_admin.user_id,
                                                event_type="user.updated", data=view)
            except Exception as exc:  # noqa: BLE001 - reported by the reader below
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        seen, after, rounds = [], None, 0
        while len(seen) < total and not errors:
            params = {"limit": 7, **({"after": after} if after else {})}
            page = client.get(EVENTS, params=params, headers=tenant_admin.headers).json()
            seen += page["events"]
            after = page["nextCursor"]
            rounds += 1
            assert rounds < 100_000
        writer.join()
        assert not errors, errors
        with transaction() as session:
            stored = session.exec(select(Event.id).where(Event.tenant_id == tenant_id).order_by(Event.seq)).all()
        assert [event["id"] for event in seen] == list(stored)


# -- GET /webhooks/event-types -------------------------------------------------------------------


class TestListEventTypes:
    def test_lists_the_declared_types_with_schema_and_example(self, client, tenant_admin):
        response = client.get(EVENT_TYPES, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        listed = response.json()["eventTypes"]
        schemas = load_spec(API_SPEC)["components"]["schemas"]
        declared = [schema for schema in schemas.values() if "x-event-type" in schema]
        assert [item["name"] for item in listed] == [schema["x-event-type"] for schema in declared]
        for item, schema in zip(listed, declared):
            assert item == {"name": schema["x-event-type"], "description": schema["description"], "schema": schema,
                            "example": schema["example"]}
            assert item["example"]["type"] == item["name"]
            errors = list(OAS30ReadValidator(item["schema"], format_checker=oas30_format_checker)
                          .iter_errors(item["example"]))
            assert errors == [], (item["name"], errors)
        required = {"integration.created", "integration.updated", "integration.deleted", "integration.activated",
                    "integration.deactivated", "connection.connected", "connection.disconnected",
                    "connection.expired", "connection.failed", "connection.credentials_updated",
                    "connection.tested", "user.created", "user.updated", "user.deleted", "api_token.created",
                    "api_token.revoked", "tenant.updated", "webhook_endpoint.created", "webhook_endpoint.updated",
                    "webhook_endpoint.deleted", "webhook_endpoint.disabled", "webhook.test", "records.changed",
                    "sync.started", "sync.succeeded", "sync.failed", "sync.settings_updated"}
        assert {item["name"] for item in listed} == required

    def test_a_member_may_not_list_them(self, client, member):
        assert_error(client.get(EVENT_TYPES, headers=member.headers), 403, "PERMISSION_DENIED",
                     details={"requiredScopes": ["events:read"]})
