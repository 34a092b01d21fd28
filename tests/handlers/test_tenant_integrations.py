"""Operations of tag `tenant-integrations` (/api/v1/tenant/integrations...): tenant admin only.

Also home of the helpers the connection and BOLA tests share (error envelope, DB reads, audit).
"""

from __future__ import annotations

import re
import uuid

import pytest
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, Connection, Integration
from tests import factories
from tests.assertions import assert_error

BASE = "/api/v1/tenant/integrations"
TENANTS = "/api/v1/admin/tenants"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
DOCUMENT_KEYS = {"id", "tenantId", "integrationId", "providerName", "providerCategory", "name", "description", "icon",
                 "settings", "allowedShardTypes", "searchEnabled", "searchableEntities", "userScoped", "status",
                 "connectionStatus", "enabledAt", "enabledBy", "lastConnectedAt", "lastError", "incomingWebhookUrl",
                 "webhookSecretSet", "createdAt", "updatedAt"}


def assert_forbidden(response, scope: str) -> None:
    """Assert the 403 of a caller whose role lacks `scope`."""
    assert_error(response, 403, "PERMISSION_DENIED", message=f"This operation requires the scope(s) '{scope}'",
                 details={"requiredScopes": [scope]})


def assert_integration_not_found(response, integration_id: str) -> None:
    assert_error(response, 404, "INTEGRATION_NOT_FOUND", message=f"Integration {integration_id} not found", details=None)


def item_url(integration_id: str, suffix: str = "") -> str:
    return f"{BASE}/{integration_id}{suffix}"


def integration_row(integration_id: str) -> Integration | None:
    with transaction() as session:
        return session.get(Integration, uuid.UUID(integration_id))


def tenant_integrations(tenant_id: str) -> list[Integration]:
    with transaction() as session:
        return list(session.exec(select(Integration).where(Integration.tenant_id == uuid.UUID(tenant_id))).all())


def connection_rows(integration_id: str) -> list[Connection]:
    with transaction() as session:
        stmt = select(Connection).where(Connection.integration_id == uuid.UUID(integration_id))
        return list(session.exec(stmt).all())


def audit_entries(resource_id: str, action: str) -> list[AuditEntry]:
    with transaction() as session:
        stmt = select(AuditEntry).where(AuditEntry.resource_id == str(resource_id), AuditEntry.action == action)
        return list(session.exec(stmt).all())


def tenant_audit(tenant_id: str) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.tenant_id == uuid.UUID(tenant_id))).all())


def assert_audited(response, resource_id: str, action: str, actor: factories.Account, *,
                   resource_type: str = "integration", outcome: str = "success") -> AuditEntry:
    """Assert exactly one `action` entry for the resource, by `actor`, written in this response's request."""
    entries = audit_entries(resource_id, action)
    assert len(entries) == 1, [(e.action, e.request_id) for e in entries]
    entry = entries[0]
    assert entry.tenant_id == uuid.UUID(actor.tenant_id)
    assert entry.actor_id == uuid.UUID(actor.user_id)
    assert entry.actor_role == actor.user["role"]
    assert entry.resource_type == resource_type
    assert entry.request_id == response.headers["X-Request-ID"]
    assert entry.outcome == outcome
    return entry


def static_provider(client, super_admin, sandbox, auth_type: str, **overrides) -> dict:
    """A tenant-catalog provider on the sandbox that connects with `auth_type` (api_key, basic, custom)."""
    fields = factories.sandbox_provider_fields(sandbox.base_url, authType=auth_type, oauthConfig=None)
    return factories.create_provider(client, super_admin, **(fields | overrides))


def connect_api_key(client, admin: factories.Account, integration_id: str, api_key: str = "sandbox-api-key") -> dict:
    """Connect an integration with an API key the sandbox accepts; return the Connected answer."""
    response = client.post(item_url(integration_id, "/connect/api-key"), json={"apiKey": api_key},
                           headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def full_body(provider_id: str, **overrides) -> dict:
    """An IntegrationCreate body with every field set."""
    return {
        "integrationId": provider_id,
        "name": factories.unique("Sales CRM "),
        "description": "The sales team's CRM",
        "icon": "crm-icon",
        "settings": {"region": "eu", "pageSize": 50, "nested": {"enabled": True}},
        "allowedShardTypes": ["contact", "account"],
        "searchEnabled": True,
        "searchableEntities": ["Contact"],
        "userScoped": True,
    } | overrides


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def api_key_provider(client, super_admin, sandbox) -> dict:
    return static_provider(client, super_admin, sandbox, "api_key")


@pytest.fixture
def api_key_integration(client, tenant_admin, api_key_provider) -> dict:
    """`tenant_admin`'s tenant with an API-key provider on the sandbox enabled (pending)."""
    return factories.enable_integration(client, tenant_admin, api_key_provider["id"])


@pytest.fixture
def second_admin(client, tenant_admin) -> factories.Account:
    """Another tenant_admin of `tenant_admin`'s tenant."""
    return factories.add_user(client, tenant_admin, role="tenant_admin")


# --- operations -----------------------------------------------------------------------------------


class TestCreateTenantIntegration:
    def test_creates_pending_and_echoes_every_field(self, client, tenant_admin, sandbox_provider):
        body = full_body(sandbox_provider["id"])

        response = client.post(BASE, json=body, headers=tenant_admin.headers)

        assert response.status_code == 201, response.text
        document = response.json()
        assert set(document) == DOCUMENT_KEYS
        assert {key: document[key] for key in body} == body
        assert response.headers["Location"] == item_url(document["id"])
        assert (document["tenantId"], document["providerName"], document["providerCategory"]) == (
            tenant_admin.tenant_id, sandbox_provider["provider"], sandbox_provider["category"])
        assert (document["status"], document["connectionStatus"], document["lastConnectedAt"], document["lastError"]) == (
            "pending", None, None, None)
        assert document["enabledBy"] == tenant_admin.user_id
        for key in ("enabledAt", "createdAt", "updatedAt"):
            assert RFC3339_UTC.match(document[key]), (key, document[key])
        row = integration_row(document["id"])
        assert (row.tenant_id, row.provider_id, row.name, row.settings, row.user_scoped, row.status) == (
            uuid.UUID(tenant_admin.tenant_id), uuid.UUID(sandbox_provider["id"]), body["name"], body["settings"],
            True, "pending")

    def test_omitted_optional_fields_get_their_defaults(self, client, tenant_admin, sandbox_provider):
        response = client.post(BASE, json={"integrationId": sandbox_provider["id"], "name": "Minimal"},
                               headers=tenant_admin.headers)

        assert response.status_code == 201, response.text
        document = response.json()
        assert {key: document[key] for key in ("description", "icon", "settings", "allowedShardTypes",
                                               "searchEnabled", "searchableEntities", "userScoped")} == {
            "description": None, "icon": None, "settings": {}, "allowedShardTypes": [], "searchEnabled": False,
            "searchableEntities": [], "userScoped": False}

    def test_writes_audit_entry(self, client, tenant_admin, sandbox_provider):
        body = full_body(sandbox_provider["id"])

        response = client.post(BASE, json=body, headers=tenant_admin.headers)

        assert response.status_code == 201, response.text
        entry = assert_audited(response, response.json()["id"], "integration.create", tenant_admin)
        assert entry.changes == body

    def test_unknown_provider_is_provider_not_found(self, client, tenant_admin):
        provider_id = str(uuid.uuid4())

        response = client.post(BASE, json={"integrationId": provider_id, "name": "Ghost"}, headers=tenant_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {provider_id} not found", details=None)
        assert tenant_integrations(tenant_admin.tenant_id) == []

    @pytest.mark.parametrize("hidden", [{"audience": "system"}, {"status": "beta"}, {"status": "disabled"},
                                        {"status": "deprecated"}], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
    def test_provider_outside_the_tenant_catalog_is_provider_not_found(self, client, super_admin, tenant_admin, hidden):
        provider = factories.create_provider(client, super_admin, **hidden)

        response = client.post(BASE, json={"integrationId": provider["id"], "name": "Hidden"},
                               headers=tenant_admin.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {provider['id']} not found", details=None)
        assert tenant_integrations(tenant_admin.tenant_id) == []
        assert audit_entries(provider["id"], "integration.create") == []

    def test_premium_provider_above_the_plan_is_denied_naming_the_plan(self, client, super_admin, tenant_admin):
        provider = factories.create_provider(client, super_admin, isPremium=True, requiredPlan="professional")

        response = client.post(BASE, json={"integrationId": provider["id"], "name": "Premium"},
                               headers=tenant_admin.headers)

        assert_error(response, 403, "PERMISSION_DENIED",
                     message=f"{provider['displayName']} requires the professional plan (the tenant is on free)",
                     details={"requiredPlan": "professional", "currentPlan": "free"})
        assert "professional" in response.json()["error"]["message"]
        assert tenant_integrations(tenant_admin.tenant_id) == []

    def test_premium_provider_is_allowed_once_the_plan_is_raised(self, client, super_admin, tenant_admin):
        provider = factories.create_provider(client, super_admin, isPremium=True, requiredPlan="professional")
        upgrade = client.patch(f"{TENANTS}/{tenant_admin.tenant_id}", json={"plan": "professional"},
                               headers=super_admin.headers)
        assert upgrade.status_code == 200, upgrade.text

        response = client.post(BASE, json={"integrationId": provider["id"], "name": "Premium"},
                               headers=tenant_admin.headers)

        assert response.status_code == 201, response.text
        assert [row.name for row in tenant_integrations(tenant_admin.tenant_id)] == ["Premium"]

    def test_duplicate_name_in_the_tenant_is_a_conflict(self, client, tenant_admin, sandbox_provider, api_key_provider):
        existing = factories.enable_integration(client, tenant_admin, sandbox_provider["id"])

        response = client.post(BASE, json={"integrationId": api_key_provider["id"], "name": existing["name"]},
                               headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT",
                     message=f"The tenant already has an integration named '{existing['name']}'",
                     details={"field": "name"})
        assert [row.id for row in tenant_integrations(tenant_admin.tenant_id)] == [uuid.UUID(existing["id"])]

    def test_same_name_in_another_tenant_is_fine(self, client, tenant_admin, other_tenant_admin, sandbox_provider):
        existing = factories.enable_integration(client, tenant_admin, sandbox_provider["id"])

        response = client.post(BASE, json={"integrationId": sandbox_provider["id"], "name": existing["name"]},
                               headers=other_tenant_admin.headers)

        assert response.status_code == 201, response.text
        assert response.json()["tenantId"] == other_tenant_admin.tenant_id

    def test_unknown_field_is_a_validation_error(self, client, tenant_admin, sandbox_provider):
        response = client.post(BASE, json={"integrationId": sandbox_provider["id"], "name": "X", "status": "connected"},
                               headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert tenant_integrations(tenant_admin.tenant_id) == []

    def test_plain_user_is_denied(self, client, member, sandbox_provider):
        response = client.post(BASE, json={"integrationId": sandbox_provider["id"], "name": "Mine"},
                               headers=member.headers)

        assert_forbidden(response, "integrations:write")
        assert tenant_integrations(member.tenant_id) == []


class TestListTenantIntegrations:
    @pytest.fixture
    def three(self, client, super_admin, tenant_admin, sandbox, sandbox_provider, api_key_provider) -> list[dict]:
        """Bravo (sandbox, disabled), Alpha (api key, pending), Charlie (sandbox, pending), in that creation order."""
        bravo = factories.enable_integration(client, tenant_admin, sandbox_provider["id"], name="Bravo",
                                             description="Needle in the description")
        alpha = factories.enable_integration(client, tenant_admin, api_key_provider["id"], name="Alpha")
        charlie = factories.enable_integration(client, tenant_admin, sandbox_provider["id"], name="Charlie NEEDLE")
        response = client.post(item_url(bravo["id"], "/deactivate"), headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        return [bravo, alpha, charlie]

    def names(self, response) -> list[str]:
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["integrations"]]

    def test_lists_the_own_tenants_integrations_in_creation_order(self, client, tenant_admin, other_tenant_admin,
                                                                 sandbox_provider, three):
        factories.enable_integration(client, other_tenant_admin, sandbox_provider["id"], name="Foreign")

        response = client.get(BASE, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert [item["id"] for item in body["integrations"]] == [item["id"] for item in three]
        assert {key: body[key] for key in ("total", "limit", "offset", "hasMore", "nextOffset")} == {
            "total": 3, "limit": 50, "offset": 0, "hasMore": False, "nextOffset": None}
        assert all(set(item) == DOCUMENT_KEYS for item in body["integrations"])

    def test_filters_by_status(self, client, tenant_admin, three):
        assert self.names(client.get(BASE, params={"status": "disabled"}, headers=tenant_admin.headers)) == ["Bravo"]
        assert self.names(client.get(BASE, params={"status": "pending"}, headers=tenant_admin.headers)) == [
            "Alpha", "Charlie NEEDLE"]
        assert self.names(client.get(BASE, params={"status": "connected"}, headers=tenant_admin.headers)) == []

    def test_filters_by_provider_key(self, client, tenant_admin, api_key_provider, sandbox_provider, three):
        by_api_key = client.get(BASE, params={"providerName": api_key_provider["provider"]}, headers=tenant_admin.headers)
        by_sandbox = client.get(BASE, params={"providerName": sandbox_provider["provider"]}, headers=tenant_admin.headers)

        assert self.names(by_api_key) == ["Alpha"]
        assert self.names(by_sandbox) == ["Bravo", "Charlie NEEDLE"]

    def test_search_matches_name_and_description_case_insensitively(self, client, tenant_admin, three):
        response = client.get(BASE, params={"search": "needle"}, headers=tenant_admin.headers)

        assert self.names(response) == ["Bravo", "Charlie NEEDLE"]
        assert response.json()["total"] == 2

    def test_pages_with_limit_and_offset(self, client, tenant_admin, three):
        first = client.get(BASE, params={"limit": 2}, headers=tenant_admin.headers)
        second = client.get(BASE, params={"limit": 2, "offset": 2}, headers=tenant_admin.headers)

        assert self.names(first) == ["Bravo", "Alpha"]
        assert {k: first.json()[k] for k in ("total", "limit", "offset", "hasMore", "nextOffset")} == {
            "total": 3, "limit": 2, "offset": 0, "hasMore": True, "nextOffset": 2}
        assert self.names(second) == ["Charlie NEEDLE"]
        assert {k: second.json()[k] for k in ("total", "limit", "offset", "hasMore", "nextOffset")} == {
            "total": 3, "limit": 2, "offset": 2, "hasMore": False, "nextOffset": None}

    @pytest.mark.parametrize(("params", "expected"), [
        ({"sortBy": "name"}, ["Alpha", "Bravo", "Charlie NEEDLE"]),
        ({"sortBy": "name", "sortOrder": "desc"}, ["Charlie NEEDLE", "Bravo", "Alpha"]),
        ({"sortBy": "createdAt", "sortOrder": "desc"}, ["Charlie NEEDLE", "Alpha", "Bravo"]),
        ({"sortBy": "updatedAt", "sortOrder": "desc"}, ["Bravo", "Charlie NEEDLE", "Alpha"]),
    ], ids=["name-asc", "name-desc", "created-desc", "updated-desc"])
    def test_sorts(self, client, tenant_admin, three, params, expected):
        response = client.get(BASE, params=params, headers=tenant_admin.headers)

        assert self.names(response) == expected

    def test_limit_above_100_is_a_validation_error(self, client, tenant_admin):
        assert_error(client.get(BASE, params={"limit": 101}, headers=tenant_admin.headers), 400, "VALIDATION_ERROR")

    def test_unknown_status_is_a_validation_error(self, client, tenant_admin):
        assert_error(client.get(BASE, params={"status": "broken"}, headers=tenant_admin.headers), 400, "VALIDATION_ERROR")

    def test_plain_user_is_denied(self, client, member):
        assert_forbidden(client.get(BASE, headers=member.headers), "integrations:read")


class TestGetTenantIntegration:
    def test_returns_the_integration(self, client, tenant_admin, sandbox_integration):
        response = client.get(item_url(sandbox_integration["id"]), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json() == sandbox_integration

    def test_shows_the_connection_status(self, client, tenant_admin, api_key_integration):
        connect_api_key(client, tenant_admin, api_key_integration["id"])

        response = client.get(item_url(api_key_integration["id"]), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["connectionStatus"]) == ("connected", "active")
        assert RFC3339_UTC.match(body["lastConnectedAt"]), body["lastConnectedAt"]

    def test_unknown_id_is_integration_not_found(self, client, tenant_admin):
        integration_id = str(uuid.uuid4())

        assert_integration_not_found(client.get(item_url(integration_id), headers=tenant_admin.headers), integration_id)

    def test_malformed_id_is_a_validation_error(self, client, tenant_admin):
        assert_error(client.get(item_url("not-a-uuid"), headers=tenant_admin.headers), 400, "VALIDATION_ERROR")

    def test_plain_user_is_denied(self, client, member, sandbox_integration):
        assert_forbidden(client.get(item_url(sandbox_integration["id"]), headers=member.headers), "integrations:read")


class TestUpdateTenantIntegration:
    def test_changes_only_the_given_fields(self, client, tenant_admin, sandbox_provider):
        created = factories.enable_integration(client, tenant_admin, sandbox_provider["id"],
                                               **{k: v for k, v in full_body(sandbox_provider["id"]).items()
                                                  if k != "integrationId"})
        changes = {"description": None, "settings": {"region": "us"}, "searchEnabled": False}

        response = client.patch(item_url(created["id"]), json=changes, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert {k: v for k, v in body.items() if k != "updatedAt"} == {
            k: v for k, v in (created | changes).items() if k != "updatedAt"}
        assert body["updatedAt"] > created["updatedAt"]
        row = integration_row(created["id"])
        assert (row.description, row.settings, row.search_enabled, row.name) == (
            None, {"region": "us"}, False, created["name"])

    def test_writes_audit_entry(self, client, tenant_admin, sandbox_integration):
        changes = {"name": factories.unique("Renamed "), "userScoped": True}

        response = client.patch(item_url(sandbox_integration["id"]), json=changes, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, sandbox_integration["id"], "integration.update", tenant_admin)
        assert entry.changes == changes

    def test_keeping_the_own_name_is_not_a_conflict(self, client, tenant_admin, sandbox_integration):
        response = client.patch(item_url(sandbox_integration["id"]),
                                json={"name": sandbox_integration["name"], "icon": "new-icon"},
                                headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["icon"] == "new-icon"

    def test_name_of_another_integration_is_a_conflict(self, client, tenant_admin, sandbox_provider, sandbox_integration):
        other = factories.enable_integration(client, tenant_admin, sandbox_provider["id"])

        response = client.patch(item_url(sandbox_integration["id"]), json={"name": other["name"], "icon": "x"},
                                headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT", message=f"The tenant already has an integration named '{other['name']}'",
                     details={"field": "name"})
        row = integration_row(sandbox_integration["id"])
        assert (row.name, row.icon) == (sandbox_integration["name"], None)
        assert audit_entries(sandbox_integration["id"], "integration.update") == []

    def test_empty_body_is_a_validation_error(self, client, tenant_admin, sandbox_integration):
        response = client.patch(item_url(sandbox_integration["id"]), json={}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_read_only_field_is_a_validation_error(self, client, tenant_admin, sandbox_integration):
        response = client.patch(item_url(sandbox_integration["id"]), json={"status": "connected"},
                                headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert integration_row(sandbox_integration["id"]).status == "pending"

    def test_unknown_id_is_integration_not_found(self, client, tenant_admin):
        integration_id = str(uuid.uuid4())

        response = client.patch(item_url(integration_id), json={"icon": "x"}, headers=tenant_admin.headers)

        assert_integration_not_found(response, integration_id)

    def test_plain_user_is_denied(self, client, member, sandbox_integration):
        response = client.patch(item_url(sandbox_integration["id"]), json={"icon": "x"}, headers=member.headers)

        assert_forbidden(response, "integrations:write")
        assert integration_row(sandbox_integration["id"]).icon is None


class TestDeleteTenantIntegration:
    def test_removes_the_integration_and_its_connections(self, client, tenant_admin, api_key_integration):
        connect_api_key(client, tenant_admin, api_key_integration["id"])
        assert len(connection_rows(api_key_integration["id"])) == 1

        response = client.delete(item_url(api_key_integration["id"]), headers=tenant_admin.headers)

        assert response.status_code == 204, response.text
        assert response.content == b""
        assert_integration_not_found(client.get(item_url(api_key_integration["id"]), headers=tenant_admin.headers),
                                     api_key_integration["id"])
        assert integration_row(api_key_integration["id"]) is None
        assert connection_rows(api_key_integration["id"]) == []

    def test_writes_audit_entry(self, client, tenant_admin, sandbox_integration):
        response = client.delete(item_url(sandbox_integration["id"]), headers=tenant_admin.headers)

        assert response.status_code == 204, response.text
        assert_audited(response, sandbox_integration["id"], "integration.delete", tenant_admin)

    def test_unknown_id_is_integration_not_found(self, client, tenant_admin):
        integration_id = str(uuid.uuid4())

        assert_integration_not_found(client.delete(item_url(integration_id), headers=tenant_admin.headers),
                                     integration_id)
        assert audit_entries(integration_id, "integration.delete") == []

    def test_plain_user_is_denied(self, client, member, sandbox_integration):
        assert_forbidden(client.delete(item_url(sandbox_integration["id"]), headers=member.headers),
                         "integrations:write")
        assert integration_row(sandbox_integration["id"]) is not None


class TestActivateTenantIntegration:
    def deactivate(self, client, admin, integration_id: str) -> None:
        response = client.post(item_url(integration_id, "/deactivate"), headers=admin.headers)
        assert response.status_code == 200, response.text

    def test_without_connection_becomes_pending(self, client, tenant_admin, second_admin, sandbox_integration):
        self.deactivate(client, tenant_admin, sandbox_integration["id"])

        response = client.post(item_url(sandbox_integration["id"], "/activate"), headers=second_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"id", "status", "enabledAt", "enabledBy"}
        assert (body["id"], body["status"], body["enabledBy"]) == (sandbox_integration["id"], "pending",
                                                                   second_admin.user_id)
        assert body["enabledAt"] > sandbox_integration["enabledAt"]
        document = client.get(item_url(sandbox_integration["id"]), headers=tenant_admin.headers).json()
        assert (document["status"], document["enabledAt"], document["enabledBy"]) == (
            "pending", body["enabledAt"], second_admin.user_id)

    def test_with_an_active_connection_becomes_connected(self, client, tenant_admin, api_key_integration):
        connect_api_key(client, tenant_admin, api_key_integration["id"])
        self.deactivate(client, tenant_admin, api_key_integration["id"])

        response = client.post(item_url(api_key_integration["id"], "/activate"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "connected"
        assert integration_row(api_key_integration["id"]).status == "connected"

    def test_writes_audit_entry(self, client, tenant_admin, sandbox_integration):
        response = client.post(item_url(sandbox_integration["id"], "/activate"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, sandbox_integration["id"], "integration.activate", tenant_admin)
        assert entry.changes == {"status": "pending"}

    def test_unknown_id_is_integration_not_found(self, client, tenant_admin):
        integration_id = str(uuid.uuid4())

        assert_integration_not_found(client.post(item_url(integration_id, "/activate"), headers=tenant_admin.headers),
                                     integration_id)

    def test_plain_user_is_denied(self, client, tenant_admin, member, sandbox_integration):
        self.deactivate(client, tenant_admin, sandbox_integration["id"])

        response = client.post(item_url(sandbox_integration["id"], "/activate"), headers=member.headers)

        assert_forbidden(response, "integrations:write")
        assert integration_row(sandbox_integration["id"]).status == "disabled"


class TestDeactivateTenantIntegration:
    def test_disables(self, client, tenant_admin, sandbox_integration):
        response = client.post(item_url(sandbox_integration["id"], "/deactivate"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"id", "status", "updatedAt"}
        assert (body["id"], body["status"]) == (sandbox_integration["id"], "disabled")
        assert body["updatedAt"] > sandbox_integration["updatedAt"]
        assert integration_row(sandbox_integration["id"]).status == "disabled"

    def test_keeps_the_connection(self, client, tenant_admin, api_key_integration):
        connected = connect_api_key(client, tenant_admin, api_key_integration["id"])

        response = client.post(item_url(api_key_integration["id"], "/deactivate"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        [row] = connection_rows(api_key_integration["id"])
        assert (str(row.id), row.status, row.secret is not None) == (connected["connectionId"], "active", True)
        document = client.get(item_url(api_key_integration["id"]), headers=tenant_admin.headers).json()
        assert (document["status"], document["connectionStatus"]) == ("disabled", "active")

    def test_stays_disabled_when_connected_and_disconnected(self, client, tenant_admin, api_key_integration):
        integration_id = api_key_integration["id"]
        response = client.post(item_url(integration_id, "/deactivate"), headers=tenant_admin.headers)
        assert response.status_code == 200, response.text

        connect_api_key(client, tenant_admin, integration_id)
        assert integration_row(integration_id).status == "disabled"
        disconnected = client.post(item_url(integration_id, "/disconnect"), headers=tenant_admin.headers)
        assert disconnected.status_code == 200, disconnected.text

        assert integration_row(integration_id).status == "disabled"

    def test_writes_audit_entry(self, client, tenant_admin, sandbox_integration):
        response = client.post(item_url(sandbox_integration["id"], "/deactivate"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert_audited(response, sandbox_integration["id"], "integration.deactivate", tenant_admin)

    def test_unknown_id_is_integration_not_found(self, client, tenant_admin):
        integration_id = str(uuid.uuid4())

        response = client.post(item_url(integration_id, "/deactivate"), headers=tenant_admin.headers)

        assert_integration_not_found(response, integration_id)

    def test_plain_user_is_denied(self, client, member, sandbox_integration):
        response = client.post(item_url(sandbox_integration["id"], "/deactivate"), headers=member.headers)

        assert_forbidden(response, "integrations:write")
        assert integration_row(sandbox_integration["id"]).status == "pending"
