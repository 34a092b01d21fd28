"""Operations of tag `providers` (/api/v1/admin/integrations...): super admin only."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, Provider
from server.app import load_spec
from tests import factories
from tests.assertions import assert_error

BASE = "/api/v1/admin/integrations"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
SLOW_SECONDS = 4  # longer than HUB_OUTBOUND_TIMEOUT (3 s in conftest), bounded to keep the run short


def item_url(provider: dict, suffix: str = "", *, category: str | None = None) -> str:
    return f"{BASE}/{category or provider['category']}/{provider['id']}{suffix}"


def db_provider(provider_id: str) -> Provider | None:
    with transaction() as session:
        return session.get(Provider, uuid.UUID(provider_id))


def db_provider_by_key(key: str) -> Provider | None:
    with transaction() as session:
        return session.exec(select(Provider).where(Provider.provider == key)).first()


def audit_entries(provider_id: str, action: str) -> list[AuditEntry]:
    with transaction() as session:
        stmt = select(AuditEntry).where(AuditEntry.resource_id == provider_id, AuditEntry.action == action)
        return list(session.exec(stmt).all())


def assert_audited(response, provider_id: str, action: str, admin: factories.Account, *,
                   outcome: str = "success") -> AuditEntry:
    """Assert exactly one `action` entry for the provider, by the super admin, in this response's request."""
    entries = audit_entries(provider_id, action)
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry.tenant_id is None
    assert entry.actor_id == uuid.UUID(admin.user_id)
    assert entry.actor_role == "super_admin"
    assert entry.resource_type == "provider"
    assert entry.request_id == response.headers["X-Request-ID"]
    assert entry.outcome == outcome
    return entry


def forbidden_body(scope: str) -> dict:
    return {"message": f"This operation requires the scope(s) '{scope}'", "details": {"requiredScopes": [scope]}}


def full_body(**overrides) -> dict:
    """A ProviderCreate body with every field set to a non-default value."""
    return factories.provider_body(
        name="Full Provider",
        apiKeyHeader="X-Full-Key",
        displayName="Full Provider Display",
        description="Every field is set.",
        category="communication",
        status="beta",
        audience="system",
        capabilities=["read", "write", "webhooks"],
        supportedSyncDirections=["pull", "push"],
        supportsRealtime=True,
        supportsWebhooks=True,
        supportsNotifications=True,
        supportsSearch=True,
        searchableEntities=["Message"],
        searchCapabilities={"fullText": True, "fieldSpecific": True, "filtered": False},
        requiresUserScoping=True,
        authType="oauth2",
        oauthConfig={"authorizationUrl": "https://auth.full.example/authorize", "tokenUrl": "https://auth.full.example/token",
                     "revocationUrl": "https://auth.full.example/revoke", "scopes": ["read", "write"],
                     "scopeSeparator": ",", "pkceRequired": False},
        availableEntities=[{"name": "Message", "displayName": "Messages", "description": "Chat messages",
                            "fields": [{"name": "text", "type": "string", "description": "Body"}],
                            "sync": {"path": "/messages", "itemsPath": "items", "idField": "id", "paging": {"type": "none"},
                                     "fetch": {"method": "GET", "path": "/messages/{id}", "itemPath": "message"}}}],
        webhookVerification={"scheme": "hmac_sha256", "signatureHeader": "X-Full-Signature", "signatureEncoding": "base64",
                             "signaturePrefix": "v1=", "signedPayload": "{timestamp}:{body}",
                             "timestampHeader": "X-Full-Timestamp", "toleranceSeconds": 120, "eventIdField": "event.id",
                             "routes": [{"entity": "Message", "matchHeader": "X-Full-Event", "matchValue": "message",
                                         "externalIdField": "message.id"}]},
        entityMappings=[{"entity": "Message", "shardType": "message", "fieldMappings": {"text": "body"}}],
        icon="full",
        color="#A1B2C3",
        version="2024-01-01",
        isPremium=True,
        requiredPlan="professional",
        apiBaseUrl="https://api.full.example",
        testRequest={"method": "HEAD", "path": "/health", "expectedStatus": 204},
    ) | overrides


@pytest.fixture(params=["tenant_admin", "member"])
def tenant_caller(request) -> factories.Account:
    """A tenant_admin, then a plain user: callers without any providers:* scope."""
    return request.getfixturevalue(request.param)


# --- a real HTTP server for POST .../test ---------------------------------------------------------


class _LoopbackHandler(BaseHTTPRequestHandler):
    """GET /ping 200, GET /slow 200 after SLOW_SECONDS, anything else 404."""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path == "/slow":
            time.sleep(SLOW_SECONDS)
        status = 200 if self.path in ("/ping", "/slow") else 404
        try:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the hub gave up (timeout test)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def loopback_url():
    """Base URL of a threaded HTTP server on 127.0.0.1:<free port>."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LoopbackHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def refused_url():
    """A URL on a port that is bound but not listening, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- operations ---------------------------------------------------------------------------------


class TestCreateProvider:
    def test_creates_and_echoes_every_field(self, client, super_admin):
        body = full_body()

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert response.status_code == 201, response.text
        document = response.json()
        assert set(document) == set(body) | {"id", "createdAt", "updatedAt"}
        assert {key: document[key] for key in body} == body
        uuid.UUID(document["id"])
        assert RFC3339_UTC.match(document["createdAt"]), document["createdAt"]
        assert RFC3339_UTC.match(document["updatedAt"]), document["updatedAt"]
        assert response.headers["Location"] == f"{BASE}/communication/{document['id']}"
        row = db_provider(document["id"])
        assert (row.provider, row.display_name, row.oauth_config) == (
            body["provider"], body["displayName"], body["oauthConfig"])

    def test_omitted_optional_fields_get_their_defaults(self, client, super_admin):
        defaults = {"description": None, "searchableEntities": [], "searchCapabilities": None, "oauthConfig": None,
                    "entityMappings": [], "isPremium": False, "requiredPlan": None, "apiBaseUrl": None, "testRequest": None,
                    "webhookVerification": None}
        body = {key: value for key, value in factories.provider_body().items() if key not in defaults}

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert response.status_code == 201, response.text
        assert {key: response.json()[key] for key in defaults} == defaults

    def test_writes_audit_entry(self, client, super_admin):
        response = client.post(BASE, json=factories.provider_body(), headers=super_admin.headers)

        assert response.status_code == 201, response.text
        entry = assert_audited(response, response.json()["id"], "provider.create", super_admin)
        assert entry.changes["provider"] == response.json()["provider"]

    def test_duplicate_provider_key_is_conflict(self, client, super_admin):
        existing = factories.create_provider(client, super_admin)

        response = client.post(BASE, json=factories.provider_body(provider=existing["provider"], name="Other"),
                               headers=super_admin.headers)

        assert_error(response, 409, "CONFLICT", message=f"A provider with key '{existing['provider']}' already exists",
                     details={"field": "provider"})
        with transaction() as session:
            rows = session.exec(select(Provider).where(Provider.provider == existing["provider"])).all()
        assert [row.name for row in rows] == ["Acme CRM"]

    def test_oauth2_without_oauth_config_is_rejected(self, client, super_admin):
        body = factories.provider_body(authType="oauth2", oauthConfig=None)

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="oauthConfig is required when authType is oauth2",
                     details={"field": "oauthConfig"})
        assert db_provider_by_key(body["provider"]) is None

    def test_required_plan_without_premium_is_rejected(self, client, super_admin):
        body = factories.provider_body(isPremium=False, requiredPlan="starter")

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="requiredPlan is only allowed when isPremium is true",
                     details={"field": "requiredPlan"})
        assert db_provider_by_key(body["provider"]) is None

    def test_test_request_without_api_base_url_is_rejected(self, client, super_admin):
        body = factories.provider_body(apiBaseUrl=None)

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="testRequest needs an apiBaseUrl", details={"field": "apiBaseUrl"})
        assert db_provider_by_key(body["provider"]) is None

    def test_unknown_field_is_rejected(self, client, super_admin):
        body = factories.provider_body(clientSecret="s3cr3t")

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert "clientSecret" in response.json()["error"]["message"]
        assert db_provider_by_key(body["provider"]) is None

    def test_missing_required_field_is_rejected(self, client, super_admin):
        body = factories.provider_body()
        del body["category"]

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert db_provider_by_key(body["provider"]) is None

    def test_without_token_is_unauthorized(self, client):
        response = client.post(BASE, json=factories.provider_body())

        assert_error(response, 401, "NO_TOKEN", message="Authorization header missing or not a Bearer token",
                     details=None)

    def test_tenant_roles_are_denied(self, client, tenant_caller):
        body = factories.provider_body()

        response = client.post(BASE, json=body, headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:write"))
        assert db_provider_by_key(body["provider"]) is None


class TestListProviders:
    def _list(self, client, admin, **params):
        response = client.get(BASE, params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def test_filters_by_category_status_and_audience(self, client, super_admin):
        term = factories.unique("flt")
        crm = factories.create_provider(client, super_admin, name=f"{term} crm", category="crm")
        storage_beta = factories.create_provider(client, super_admin, name=f"{term} storage", category="storage", status="beta")
        system = factories.create_provider(client, super_admin, name=f"{term} system", category="crm", audience="system")

        by_category = self._list(client, super_admin, search=term, category="crm")
        by_status = self._list(client, super_admin, search=term, status="beta")
        by_audience = self._list(client, super_admin, search=term, audience="system")
        combined = self._list(client, super_admin, search=term, category="crm", audience="tenant", status="active")

        assert [p["id"] for p in by_category["providers"]] == [crm["id"], system["id"]]
        assert [p["id"] for p in by_status["providers"]] == [storage_beta["id"]]
        assert [p["id"] for p in by_audience["providers"]] == [system["id"]]
        assert [p["id"] for p in combined["providers"]] == [crm["id"]]

    def test_lists_every_audience_and_status(self, client, super_admin):
        term = factories.unique("all")
        created = [factories.create_provider(client, super_admin, name=f"{term} {status}", status=status, audience=audience)
                   for status, audience in (("active", "system"), ("beta", "tenant"), ("deprecated", "tenant"),
                                            ("disabled", "system"))]

        page = self._list(client, super_admin, search=term)

        assert page["providers"] == sorted(created, key=lambda p: p["name"])
        assert page["total"] == 4

    def test_search_matches_name_display_name_key_and_description(self, client, super_admin):
        term = factories.unique("srch")
        by_name = factories.create_provider(client, super_admin, name=f"A {term}")
        by_display = factories.create_provider(client, super_admin, name="B", displayName=f"Display {term}")
        by_key = factories.create_provider(client, super_admin, name="C", provider=f"key_{term}")
        by_description = factories.create_provider(client, super_admin, name="D", description=f"About {term}.")

        page = self._list(client, super_admin, search=term.upper())

        assert [p["id"] for p in page["providers"]] == [by_name["id"], by_display["id"], by_key["id"], by_description["id"]]

    def test_paginates_with_has_more_and_next_offset(self, client, super_admin):
        term = factories.unique("page")
        created = [factories.create_provider(client, super_admin, name=f"{term} {i}") for i in range(3)]

        first = self._list(client, super_admin, search=term, limit=2)
        last = self._list(client, super_admin, search=term, limit=2, offset=2)

        assert first == {"providers": created[:2], "total": 3, "limit": 2, "offset": 0, "hasMore": True, "nextOffset": 2}
        assert last == {"providers": created[2:], "total": 3, "limit": 2, "offset": 2, "hasMore": False, "nextOffset": None}

    def test_offset_past_the_end_is_an_empty_page(self, client, super_admin):
        term = factories.unique("past")
        factories.create_provider(client, super_admin, name=f"{term} only")

        page = self._list(client, super_admin, search=term, offset=5)

        assert page == {"providers": [], "total": 1, "limit": 50, "offset": 5, "hasMore": False, "nextOffset": None}

    @pytest.mark.parametrize(("sort_by", "sort_order", "expected"), [
        ("name", "asc", ["b", "a", "c"]),
        ("name", "desc", ["c", "a", "b"]),
        ("provider", "asc", ["a", "c", "b"]),
        ("displayName", "desc", ["c", "b", "a"]),
        ("createdAt", "asc", ["a", "b", "c"]),
        ("createdAt", "desc", ["c", "b", "a"]),
    ])
    def test_sorts(self, client, super_admin, sort_by, sort_order, expected):
        term = factories.unique("sort")
        # label: (name, displayName, provider key) chosen so each sort gives a distinct order
        specs = {"a": ("2", "1", f"a_{term}"), "b": ("1", "2", f"z_{term}"), "c": ("3", "3", f"m_{term}")}
        ids = {}
        for label in ("a", "b", "c"):
            name, display, key = specs[label]
            ids[factories.create_provider(client, super_admin, name=f"{term} {name}", displayName=f"{term} {display}",
                                          provider=key)["id"]] = label

        page = self._list(client, super_admin, search=term, sortBy=sort_by, sortOrder=sort_order)

        assert [ids[p["id"]] for p in page["providers"]] == expected

    def test_unknown_sort_field_is_rejected(self, client, super_admin):
        response = client.get(BASE, params={"sortBy": "color"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_without_token_is_unauthorized(self, client):
        response = client.get(BASE)

        assert_error(response, 401, "NO_TOKEN", message="Authorization header missing or not a Bearer token",
                     details=None)

    def test_tenant_roles_are_denied(self, client, tenant_caller):
        response = client.get(BASE, headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:read"))


class TestGetProvider:
    def test_returns_the_provider(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.get(item_url(created), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json() == created

    def test_document_conforms_to_the_contract_under_openapi_3_0_3_rules(self, client, super_admin):
        # OAS 3.0.3, `nullable`: "Other Schema Object constraints retain their defined behavior, and
        # therefore may disallow the use of null as a value" -- an `enum` without null refuses null.
        created = factories.create_provider(client, super_admin)
        schema = load_spec()["components"]["schemas"]["IntegrationProvider"]

        response = client.get(item_url(created), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        validator = OAS30ReadValidator(schema, format_checker=oas30_format_checker)
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(response.json())]
        assert errors == []

    def test_wrong_category_is_not_found(self, client, super_admin):
        created = factories.create_provider(client, super_admin, category="crm")

        response = client.get(item_url(created, category="storage"), headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)

    def test_unknown_id_is_not_found(self, client, super_admin):
        unknown = str(uuid.uuid4())

        response = client.get(f"{BASE}/crm/{unknown}", headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {unknown} not found", details=None)

    def test_malformed_id_is_rejected(self, client, super_admin):
        response = client.get(f"{BASE}/crm/not-a-uuid", headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_unknown_category_is_rejected(self, client, super_admin):
        response = client.get(f"{BASE}/marketing/{uuid.uuid4()}", headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_tenant_roles_are_denied(self, client, super_admin, tenant_caller):
        created = factories.create_provider(client, super_admin)

        response = client.get(item_url(created), headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:read"))


class TestUpdateProvider:
    def test_partial_update_changes_only_the_given_fields(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={"description": "Changed.", "color": "#000000"},
                                headers=super_admin.headers)

        assert response.status_code == 200, response.text
        updated = response.json()
        assert datetime.fromisoformat(updated["updatedAt"]) > datetime.fromisoformat(created["updatedAt"])
        assert RFC3339_UTC.match(updated["updatedAt"])
        assert updated == created | {"description": "Changed.", "color": "#000000", "updatedAt": updated["updatedAt"]}
        assert client.get(item_url(created), headers=super_admin.headers).json() == updated
        row = db_provider(created["id"])
        assert (row.description, row.color) == ("Changed.", "#000000")

    def test_writes_audit_entry(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={"name": "Renamed"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, created["id"], "provider.update", super_admin)
        assert entry.changes == {"name": "Renamed"}

    def test_changing_the_key_to_an_existing_one_is_conflict(self, client, super_admin):
        taken = factories.create_provider(client, super_admin)
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={"provider": taken["provider"]}, headers=super_admin.headers)

        assert_error(response, 409, "CONFLICT", message=f"A provider with key '{taken['provider']}' already exists",
                     details={"field": "provider"})
        assert db_provider(created["id"]).provider == created["provider"]
        assert audit_entries(created["id"], "provider.update") == []

    def test_keeping_its_own_key_is_allowed(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={"provider": created["provider"], "name": "Same key"},
                                headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["provider"] == created["provider"]

    def test_breaking_a_cross_field_rule_is_rejected(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={"authType": "oauth2"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="oauthConfig is required when authType is oauth2",
                     details={"field": "oauthConfig"})
        assert db_provider(created["id"]).auth_type == "api_key"

    def test_empty_body_is_rejected(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_unknown_field_is_rejected(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={"id": str(uuid.uuid4())}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert db_provider(created["id"]) is not None

    def test_wrong_category_is_not_found(self, client, super_admin):
        created = factories.create_provider(client, super_admin, category="crm")

        response = client.patch(item_url(created, category="custom"), json={"name": "X"}, headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)
        assert db_provider(created["id"]).name == "Acme CRM"

    def test_tenant_roles_are_denied(self, client, super_admin, tenant_caller):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created), json={"name": "Hijacked"}, headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:write"))
        assert db_provider(created["id"]).name == "Acme CRM"


class TestUpdateProviderStatus:
    def test_sets_status_and_answers_id_status_updated_at(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/status"), json={"status": "deprecated"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        result = response.json()
        assert result == {"id": created["id"], "status": "deprecated", "updatedAt": result["updatedAt"]}
        assert RFC3339_UTC.match(result["updatedAt"])
        assert datetime.fromisoformat(result["updatedAt"]) > datetime.fromisoformat(created["updatedAt"])
        assert db_provider(created["id"]).status == "deprecated"

    def test_writes_audit_entry(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/status"), json={"status": "disabled"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, created["id"], "provider.status", super_admin)
        assert entry.changes == {"status": "disabled"}

    def test_unknown_status_is_rejected(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/status"), json={"status": "archived"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert db_provider(created["id"]).status == "active"

    def test_other_fields_are_rejected(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/status"), json={"status": "beta", "name": "Sneaky"},
                                headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert (db_provider(created["id"]).status, db_provider(created["id"]).name) == ("active", "Acme CRM")

    def test_unknown_id_is_not_found(self, client, super_admin):
        unknown = str(uuid.uuid4())

        response = client.patch(f"{BASE}/crm/{unknown}/status", json={"status": "beta"}, headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {unknown} not found", details=None)

    def test_tenant_roles_are_denied(self, client, super_admin, tenant_caller):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/status"), json={"status": "disabled"}, headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:write"))
        assert db_provider(created["id"]).status == "active"


class TestUpdateProviderAudience:
    def test_sets_audience_and_answers_id_audience_updated_at(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/audience"), json={"audience": "system"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        result = response.json()
        assert result == {"id": created["id"], "audience": "system", "updatedAt": result["updatedAt"]}
        assert RFC3339_UTC.match(result["updatedAt"])
        assert datetime.fromisoformat(result["updatedAt"]) > datetime.fromisoformat(created["updatedAt"])
        assert db_provider(created["id"]).audience == "system"

    def test_writes_audit_entry(self, client, super_admin):
        created = factories.create_provider(client, super_admin, audience="system")

        response = client.patch(item_url(created, "/audience"), json={"audience": "tenant"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, created["id"], "provider.audience", super_admin)
        assert entry.changes == {"audience": "tenant"}

    def test_unknown_audience_is_rejected(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/audience"), json={"audience": "everyone"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert db_provider(created["id"]).audience == "tenant"

    def test_wrong_category_is_not_found(self, client, super_admin):
        created = factories.create_provider(client, super_admin, category="crm")

        response = client.patch(item_url(created, "/audience", category="storage"), json={"audience": "system"},
                                headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)
        assert db_provider(created["id"]).audience == "tenant"

    def test_tenant_roles_are_denied(self, client, super_admin, tenant_caller):
        created = factories.create_provider(client, super_admin)

        response = client.patch(item_url(created, "/audience"), json={"audience": "system"}, headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:write"))
        assert db_provider(created["id"]).audience == "tenant"


class TestDeleteProvider:
    def test_deletes_then_get_is_not_found(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.delete(item_url(created), headers=super_admin.headers)

        assert response.status_code == 204, response.text
        assert response.content == b""
        assert_error(client.get(item_url(created), headers=super_admin.headers), 404, "PROVIDER_NOT_FOUND",
                     message=f"Provider {created['id']} not found", details=None)
        assert db_provider(created["id"]) is None

    def test_writes_audit_entry(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.delete(item_url(created), headers=super_admin.headers)

        assert response.status_code == 204, response.text
        entry = assert_audited(response, created["id"], "provider.delete", super_admin)
        assert entry.changes == {"provider": created["provider"]}

    def test_frees_the_provider_key(self, client, super_admin):
        created = factories.create_provider(client, super_admin)
        assert client.delete(item_url(created), headers=super_admin.headers).status_code == 204

        response = client.post(BASE, json=factories.provider_body(provider=created["provider"]), headers=super_admin.headers)

        assert response.status_code == 201, response.text

    def test_wrong_category_is_not_found(self, client, super_admin):
        created = factories.create_provider(client, super_admin, category="crm")

        response = client.delete(item_url(created, category="custom"), headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)
        assert db_provider(created["id"]) is not None

    def test_deleting_twice_is_not_found(self, client, super_admin):
        created = factories.create_provider(client, super_admin)
        assert client.delete(item_url(created), headers=super_admin.headers).status_code == 204

        response = client.delete(item_url(created), headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)
        assert len(audit_entries(created["id"], "provider.delete")) == 1

    def test_tenant_roles_are_denied(self, client, super_admin, tenant_caller):
        created = factories.create_provider(client, super_admin)

        response = client.delete(item_url(created), headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:write"))
        assert db_provider(created["id"]) is not None


class TestTestProvider:
    def _create(self, client, admin, base_url: str, path: str, expected_status: int = 200) -> dict:
        return factories.create_provider(client, admin, apiBaseUrl=base_url,
                                         testRequest={"method": "GET", "path": path, "expectedStatus": expected_status})

    def test_expected_status_is_success(self, client, super_admin, loopback_url):
        created = self._create(client, super_admin, loopback_url, "/ping")

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        result = response.json()
        assert set(result) == {"success", "message", "testedAt", "responseTime"}
        assert result["success"] is True
        assert result["message"] == f"GET {loopback_url}/ping answered 200 as expected"
        assert RFC3339_UTC.match(result["testedAt"])
        assert result["responseTime"] > 0

    def test_success_writes_audit_entry(self, client, super_admin, loopback_url):
        created = self._create(client, super_admin, loopback_url, "/ping")

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, created["id"], "provider.test", super_admin, outcome="success")
        assert entry.changes is None

    def test_other_status_is_failure_naming_both_statuses(self, client, super_admin, loopback_url):
        created = self._create(client, super_admin, loopback_url, "/nope")

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        result = response.json()
        assert set(result) == {"success", "error", "testedAt", "responseTime"}
        assert result["success"] is False
        assert "404" in result["error"] and "200" in result["error"]
        assert result["error"] == f"GET {loopback_url}/nope answered 404, expected 200"
        assert result["responseTime"] > 0

    def test_failure_writes_audit_entry(self, client, super_admin, loopback_url):
        created = self._create(client, super_admin, loopback_url, "/nope")

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, created["id"], "provider.test", super_admin, outcome="failure")
        assert entry.changes == {"error": response.json()["error"]}

    def test_refused_connection_is_failure_without_response_time(self, client, super_admin, refused_url):
        created = self._create(client, super_admin, refused_url, "/ping")

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        result = response.json()
        assert set(result) == {"success", "error", "testedAt", "responseTime"}
        assert result["success"] is False
        assert result["responseTime"] is None
        assert result["error"].startswith(f"GET {refused_url}/ping failed: ConnectError")
        assert_audited(response, created["id"], "provider.test", super_admin, outcome="failure")

    def test_timeout_is_failure(self, client, super_admin, loopback_url):
        created = self._create(client, super_admin, loopback_url, "/slow")
        started = time.perf_counter()

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert time.perf_counter() - started < SLOW_SECONDS
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["success"] is False
        assert result["responseTime"] is None
        assert result["error"] == f"GET {loopback_url}/slow timed out after 3 s"
        assert_audited(response, created["id"], "provider.test", super_admin, outcome="failure")

    def test_malformed_base_url_is_refused_at_creation(self, client, super_admin):
        response = client.post(BASE, json=factories.provider_body(apiBaseUrl="http://127.0.0.1:abc"),
                               headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="apiBaseUrl may not be called: malformed URL: invalid port",
                     details={"field": "apiBaseUrl"})

    @pytest.mark.parametrize(("base_url", "path"), [
        ("http://127.0.0.1:1", "/ping\nHost: elsewhere"),
    ], ids=["control-character-in-path"])
    def test_unusable_url_accepted_at_creation_is_failure_not_server_error(self, client, super_admin, base_url, path):
        created = self._create(client, super_admin, base_url, path)

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["success"], result["responseTime"]) == (False, None)
        assert_audited(response, created["id"], "provider.test", super_admin, outcome="failure")

    @pytest.mark.parametrize("missing", [
        {"apiBaseUrl": None, "testRequest": None},
        {"testRequest": None},
    ], ids=["no-api-base-url-nor-test-request", "no-test-request"])
    def test_provider_without_test_request_is_rejected(self, client, super_admin, missing):
        created = factories.create_provider(client, super_admin, **missing)

        response = client.post(item_url(created, "/test"), headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="The provider has no apiBaseUrl and testRequest to test with",
                     details={"field": "testRequest"})
        assert audit_entries(created["id"], "provider.test") == []

    def test_wrong_category_is_not_found(self, client, super_admin, loopback_url):
        created = self._create(client, super_admin, loopback_url, "/ping")

        response = client.post(item_url(created, "/test", category="storage"), headers=super_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)

    def test_tenant_roles_are_denied(self, client, super_admin, tenant_caller, loopback_url):
        created = self._create(client, super_admin, loopback_url, "/ping")

        response = client.post(item_url(created, "/test"), headers=tenant_caller.headers)

        assert_error(response, 403, "PERMISSION_DENIED", **forbidden_body("providers:write"))
        assert audit_entries(created["id"], "provider.test") == []
