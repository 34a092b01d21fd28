"""Operations of tag `tenants` (super admin), and what a tenant's status does to its users."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, Tenant, User
from tests import factories
from tests.assertions import ANY
from tests.assertions import assert_envelope as assert_error

TENANTS = "/api/v1/admin/tenants"
ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
TENANT_KEYS = {"id", "name", "plan", "status", "createdAt", "updatedAt"}


def create_tenant(client, super_admin: factories.Account, **overrides) -> dict:
    """Create a tenant as the super admin and return its document."""
    body = {"name": factories.unique("Tenant ")} | overrides
    response = client.post(TENANTS, json=body, headers=super_admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def set_status(client, super_admin: factories.Account, tenant_id: str, status: str) -> None:
    response = client.patch(f"{TENANTS}/{tenant_id}", json={"status": status}, headers=super_admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == status


def tenant_row(tenant_id: str) -> Tenant | None:
    with transaction() as session:
        return session.get(Tenant, uuid.UUID(tenant_id))


def tenants_named(name: str) -> list[Tenant]:
    with transaction() as session:
        return list(session.exec(select(Tenant).where(Tenant.name == name)).all())


def audit_entries(request_id: str, action: str) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.request_id == request_id,
                                                          AuditEntry.action == action)).all())


def audit_count(action: str, resource_id: str) -> int:
    with transaction() as session:
        return len(session.exec(select(AuditEntry).where(AuditEntry.action == action,
                                                         AuditEntry.resource_id == resource_id)).all())


@pytest.fixture
def tag() -> str:
    """A unique word to put in tenant names, so a search finds only this test's tenants."""
    return factories.unique("tag")


@pytest.fixture
def three_tenants(client, super_admin, tag) -> list[dict]:
    """Three tenants of this test, created in the order bravo, alpha, charlie."""
    return [
        create_tenant(client, super_admin, name=f"Bravo {tag}", plan="starter"),
        create_tenant(client, super_admin, name=f"Alpha {tag}", plan="free"),
        create_tenant(client, super_admin, name=f"Charlie {tag}", plan="enterprise"),
    ]


class TestListTenants:
    def test_pages_through_the_matches(self, client, super_admin, tag, three_tenants):
        first = client.get(TENANTS, params={"search": tag, "limit": 2}, headers=super_admin.headers)
        second = client.get(TENANTS, params={"search": tag, "limit": 2, "offset": 2}, headers=super_admin.headers)

        assert first.status_code == 200, first.text
        assert second.status_code == 200, second.text
        page1, page2 = first.json(), second.json()
        assert {k: v for k, v in page1.items() if k != "tenants"} == {
            "total": 3, "limit": 2, "offset": 0, "hasMore": True, "nextOffset": 2}
        assert {k: v for k, v in page2.items() if k != "tenants"} == {
            "total": 3, "limit": 2, "offset": 2, "hasMore": False, "nextOffset": None}
        ids = [t["id"] for t in page1["tenants"] + page2["tenants"]]
        assert ids == [t["id"] for t in three_tenants]  # default: createdAt ascending
        assert all(set(t) == TENANT_KEYS for t in page1["tenants"])

    def test_default_page_size_is_50(self, client, super_admin, tag, three_tenants):
        response = client.get(TENANTS, params={"search": tag}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert (response.json()["limit"], response.json()["offset"]) == (50, 0)

    def test_filters_by_plan(self, client, super_admin, tag, three_tenants):
        response = client.get(TENANTS, params={"search": tag, "plan": "starter"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert [t["name"] for t in response.json()["tenants"]] == [f"Bravo {tag}"]
        assert response.json()["total"] == 1

    def test_filters_by_status(self, client, super_admin, tag, three_tenants):
        set_status(client, super_admin, three_tenants[2]["id"], "suspended")

        suspended = client.get(TENANTS, params={"search": tag, "status": "suspended"}, headers=super_admin.headers)
        active = client.get(TENANTS, params={"search": tag, "status": "active"}, headers=super_admin.headers)

        assert [t["id"] for t in suspended.json()["tenants"]] == [three_tenants[2]["id"]]
        assert [t["id"] for t in active.json()["tenants"]] == [three_tenants[0]["id"], three_tenants[1]["id"]]

    def test_search_is_a_case_insensitive_substring(self, client, super_admin, tag, three_tenants):
        response = client.get(TENANTS, params={"search": f"lpha {tag.upper()}"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert [t["name"] for t in response.json()["tenants"]] == [f"Alpha {tag}"]

    def test_search_treats_like_wildcards_literally(self, client, super_admin, tag, three_tenants):
        response = client.get(TENANTS, params={"search": f"%{tag}"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["total"] == 0

    @pytest.mark.parametrize("order, names", [("asc", ["Alpha", "Bravo", "Charlie"]),
                                              ("desc", ["Charlie", "Bravo", "Alpha"])])
    def test_sorts_by_name(self, client, super_admin, tag, three_tenants, order, names):
        response = client.get(TENANTS, params={"search": tag, "sortBy": "name", "sortOrder": order},
                              headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert [t["name"] for t in response.json()["tenants"]] == [f"{n} {tag}" for n in names]

    def test_sorts_by_creation_descending(self, client, super_admin, tag, three_tenants):
        response = client.get(TENANTS, params={"search": tag, "sortBy": "createdAt", "sortOrder": "desc"},
                              headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert [t["id"] for t in response.json()["tenants"]] == [t["id"] for t in reversed(three_tenants)]

    def test_limit_above_100_is_a_validation_error(self, client, super_admin):
        response = client.get(TENANTS, params={"limit": 101}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

    def test_unknown_sort_field_is_a_validation_error(self, client, super_admin):
        response = client.get(TENANTS, params={"sortBy": "plan"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

    def test_tenant_admin_is_denied(self, client, tenant_admin):
        response = client.get(TENANTS, headers=tenant_admin.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["tenants:read"]})

    def test_without_token_is_no_token(self, client):
        response = client.get(TENANTS)

        assert_error(response, 401, "NO_TOKEN")


class TestCreateTenant:
    def test_creates_a_tenant_without_admin(self, client, super_admin):
        name = factories.unique("Created ")
        response = client.post(TENANTS, json={"name": name}, headers=super_admin.headers)

        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == TENANT_KEYS
        assert (body["name"], body["plan"], body["status"]) == (name, "free", "active")
        assert response.headers["location"] == f"{TENANTS}/{body['id']}"
        row = tenant_row(body["id"])
        assert (row.name, row.plan, row.status) == (name, "free", "active")
        with transaction() as session:
            assert session.exec(select(User).where(User.tenant_id == row.id)).all() == []
        entries = audit_entries(response.headers["x-request-id"], "tenant.create")
        assert len(entries) == 1
        entry = entries[0]
        assert (entry.resource_type, entry.resource_id, entry.outcome) == ("tenant", body["id"], "success")
        assert entry.actor_id == uuid.UUID(super_admin.user_id)
        assert entry.actor_role == "super_admin"
        assert entry.changes == {"name": name}

    def test_audit_carries_the_callers_request_id(self, client, super_admin):
        request_id = factories.unique("test-req-")
        response = client.post(TENANTS, json={"name": factories.unique("Traced ")},
                               headers=super_admin.headers | {"X-Request-ID": request_id})

        assert response.status_code == 201, response.text
        assert response.headers["x-request-id"] == request_id
        assert [e.resource_id for e in audit_entries(request_id, "tenant.create")] == [response.json()["id"]]

    def test_unknown_plan_is_a_validation_error(self, client, super_admin):
        name = factories.unique("Platinum ")
        response = client.post(TENANTS, json={"name": name, "plan": "platinum"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert tenants_named(name) == []

    def test_location_leads_to_the_tenant(self, client, super_admin):
        response = client.post(TENANTS, json={"name": factories.unique("Located ")}, headers=super_admin.headers)

        fetched = client.get(response.headers["location"], headers=super_admin.headers)

        assert fetched.status_code == 200, fetched.text
        assert fetched.json() == response.json()

    def test_creates_a_tenant_with_its_first_admin(self, client, super_admin):
        email = f"{factories.unique('first')}@example.com"
        password = "first-admin-" + factories.unique("pw")
        body = {"name": factories.unique("With Admin "), "plan": "professional",
                "admin": {"email": email, "name": "Fiona First", "password": password}}

        response = client.post(TENANTS, json=body, headers=super_admin.headers)

        assert response.status_code == 201, response.text
        tenant = response.json()
        assert tenant["plan"] == "professional"
        assert password not in response.text
        admin = factories.login(client, email, password)
        assert admin.user["role"] == "tenant_admin"
        assert admin.tenant_id == tenant["id"]
        entries = audit_entries(response.headers["x-request-id"], "tenant.create")
        assert len(entries) == 1
        assert entries[0].changes["admin"] == {"email": email, "name": "Fiona First", "password": "[REDACTED]"}
        assert password not in json.dumps(entries[0].changes)

    def test_admin_email_already_taken_is_a_conflict_and_creates_nothing(self, client, super_admin, tenant_admin):
        name = factories.unique("Clash ")
        body = {"name": name, "admin": {"email": tenant_admin.email, "name": "Clash", "password": factories.PASSWORD}}

        response = client.post(TENANTS, json=body, headers=super_admin.headers)

        assert_error(response, 409, "CONFLICT", details={"field": "email"})
        assert tenants_named(name) == []

    def test_admin_with_too_short_password_is_a_validation_error(self, client, super_admin):
        name = factories.unique("Short ")
        body = {"name": name, "admin": {"email": f"{factories.unique('s')}@example.com", "name": "S",
                                        "password": "tiny-pw"}}

        response = client.post(TENANTS, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert "tiny-pw" not in response.text
        assert tenants_named(name) == []

    def test_missing_name_is_a_validation_error(self, client, super_admin):
        response = client.post(TENANTS, json={"plan": "free"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

    def test_tenant_admin_is_denied_and_nothing_is_created(self, client, tenant_admin):
        name = factories.unique("Denied ")
        response = client.post(TENANTS, json={"name": name}, headers=tenant_admin.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["tenants:write"]})
        assert tenants_named(name) == []


class TestGetTenant:
    def test_returns_the_tenant(self, client, super_admin):
        created = create_tenant(client, super_admin, plan="starter")

        response = client.get(f"{TENANTS}/{created['id']}", headers=super_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json() == created

    def test_unknown_id_is_tenant_not_found(self, client, super_admin):
        response = client.get(f"{TENANTS}/{uuid.uuid4()}", headers=super_admin.headers)

        assert_error(response, 404, "TENANT_NOT_FOUND")

    def test_malformed_id_is_a_validation_error(self, client, super_admin):
        response = client.get(f"{TENANTS}/not-a-uuid", headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

    def test_tenant_admin_is_denied_even_for_its_own_tenant(self, client, tenant_admin):
        response = client.get(f"{TENANTS}/{tenant_admin.tenant_id}", headers=tenant_admin.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["tenants:read"]})


class TestUpdateTenant:
    def test_renames_and_changes_plan(self, client, super_admin):
        created = create_tenant(client, super_admin)
        name = factories.unique("Renamed ")

        response = client.patch(f"{TENANTS}/{created['id']}", json={"name": name, "plan": "enterprise"},
                                 headers=super_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["id"], body["name"], body["plan"], body["status"]) == (created["id"], name, "enterprise", "active")
        assert body["createdAt"] == created["createdAt"]
        assert body["updatedAt"] > created["updatedAt"]
        row = tenant_row(created["id"])
        assert (row.name, row.plan) == (name, "enterprise")
        entries = audit_entries(response.headers["x-request-id"], "tenant.update")
        assert len(entries) == 1
        assert (entries[0].resource_id, entries[0].actor_id) == (created["id"], uuid.UUID(super_admin.user_id))
        assert entries[0].changes == {"name": name, "plan": "enterprise"}

    def test_status_change_is_audited(self, client, super_admin):
        created = create_tenant(client, super_admin)

        response = client.patch(f"{TENANTS}/{created['id']}", json={"status": "suspended"}, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        entries = audit_entries(response.headers["x-request-id"], "tenant.update")
        assert [e.changes for e in entries] == [{"status": "suspended"}]

    def test_empty_body_is_a_validation_error(self, client, super_admin):
        created = create_tenant(client, super_admin)

        response = client.patch(f"{TENANTS}/{created['id']}", json={}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert audit_count("tenant.update", created["id"]) == 0

    def test_unknown_plan_is_a_validation_error(self, client, super_admin):
        created = create_tenant(client, super_admin)

        response = client.patch(f"{TENANTS}/{created['id']}", json={"plan": "platinum"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert tenant_row(created["id"]).plan == "free"

    def test_unknown_id_is_tenant_not_found(self, client, super_admin):
        tenant_id = str(uuid.uuid4())
        response = client.patch(f"{TENANTS}/{tenant_id}", json={"name": "Ghost"}, headers=super_admin.headers)

        assert_error(response, 404, "TENANT_NOT_FOUND")
        assert audit_count("tenant.update", tenant_id) == 0

    def test_tenant_admin_is_denied_and_nothing_changes(self, client, tenant_admin):
        response = client.patch(f"{TENANTS}/{tenant_admin.tenant_id}", json={"plan": "enterprise"},
                                headers=tenant_admin.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["tenants:write"]})
        assert tenant_row(tenant_admin.tenant_id).plan == "free"
        assert audit_count("tenant.update", tenant_admin.tenant_id) == 0


STANDINGS = [("suspended", "TENANT_SUSPENDED"), ("offboarded", "TENANT_OFFBOARDED")]


class TestTenantStatus:
    """What PATCH /admin/tenants/{id} {status} does to the tenant's users, on their very next request."""

    @pytest.mark.parametrize("status, code", STANDINGS)
    def test_still_valid_access_tokens_are_refused(self, client, super_admin, tenant_admin, member, status, code):
        set_status(client, super_admin, tenant_admin.tenant_id, status)

        for account in (tenant_admin, member):
            assert_error(client.get(ME, headers=account.headers), 403, code)

    @pytest.mark.parametrize("status, code", STANDINGS)
    def test_login_is_refused(self, client, super_admin, tenant_admin, status, code):
        set_status(client, super_admin, tenant_admin.tenant_id, status)

        response = client.post(LOGIN, json={"email": tenant_admin.email, "password": tenant_admin.password})

        assert_error(response, 403, code)
        entries = audit_entries(response.headers["x-request-id"], "auth.login")
        assert [(e.outcome, e.actor_id) for e in entries] == [("failure", uuid.UUID(tenant_admin.user_id))]

    def test_login_with_a_wrong_password_still_answers_invalid_credentials(self, client, super_admin, tenant_admin):
        set_status(client, super_admin, tenant_admin.tenant_id, "suspended")

        response = client.post(LOGIN, json={"email": tenant_admin.email, "password": "not-the-password"})

        assert_error(response, 401, "INVALID_CREDENTIALS")

    @pytest.mark.parametrize("status, code", STANDINGS)
    def test_refresh_is_refused(self, client, super_admin, tenant_admin, status, code):
        set_status(client, super_admin, tenant_admin.tenant_id, status)

        response = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})

        assert_error(response, 403, code)

    def test_other_tenants_are_unaffected(self, client, super_admin, tenant_admin, other_tenant_admin):
        set_status(client, super_admin, tenant_admin.tenant_id, "suspended")

        response = client.get(ME, headers=other_tenant_admin.headers)

        assert response.status_code == 200, response.text

    def test_reactivation_restores_access(self, client, super_admin, tenant_admin):
        set_status(client, super_admin, tenant_admin.tenant_id, "suspended")
        assert_error(client.get(ME, headers=tenant_admin.headers), 403, "TENANT_SUSPENDED")

        set_status(client, super_admin, tenant_admin.tenant_id, "active")

        me = client.get(ME, headers=tenant_admin.headers)
        assert me.status_code == 200, me.text
        assert me.json()["tenant"]["status"] == "active"
        assert client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token}).status_code == 200
        factories.login(client, tenant_admin.email, tenant_admin.password)

    def test_me_reports_the_new_plan(self, client, super_admin, tenant_admin):
        response = client.patch(f"{TENANTS}/{tenant_admin.tenant_id}", json={"plan": "starter"},
                                headers=super_admin.headers)
        assert response.status_code == 200, response.text

        me = client.get(ME, headers=tenant_admin.headers)

        assert me.json()["tenant"]["plan"] == "starter"
