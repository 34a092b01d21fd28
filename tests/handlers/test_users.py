"""Operations of tag `users`: a tenant admin manages the users of its own tenant only."""

from __future__ import annotations

import json
import uuid

from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, RefreshToken, User
from tests import factories
from tests.assertions import ANY
from tests.assertions import assert_envelope as assert_error

USERS = "/api/v1/tenant/users"
ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
USER_KEYS = {"id", "tenantId", "email", "name", "role", "active", "lastLoginAt", "createdAt", "updatedAt"}
LAST_ADMIN = {"reason": "last_active_tenant_admin"}


def user_body(**overrides) -> dict:
    """A valid UserCreate body with a unique email."""
    return {"email": f"{factories.unique('user')}@example.com", "name": "Uma User", "role": "user",
            "password": factories.PASSWORD} | overrides


def user_row(user_id: str) -> User | None:
    with transaction() as session:
        return session.get(User, uuid.UUID(user_id))


def users_with_email(email: str) -> list[User]:
    with transaction() as session:
        return list(session.exec(select(User).where(User.email == email.lower())).all())


def refresh_rows(user_id: str) -> list[RefreshToken]:
    with transaction() as session:
        return list(session.exec(select(RefreshToken).where(RefreshToken.user_id == uuid.UUID(user_id))).all())


def audit_entries(request_id: str, action: str) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.request_id == request_id,
                                                          AuditEntry.action == action)).all())


def audit_count(action: str, resource_id: str) -> int:
    with transaction() as session:
        return len(session.exec(select(AuditEntry).where(AuditEntry.action == action,
                                                         AuditEntry.resource_id == resource_id)).all())


class TestListUsers:
    def test_lists_the_own_tenants_users_only(self, client, tenant_admin, member, other_tenant_admin):
        response = client.get(USERS, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert {k: v for k, v in body.items() if k != "users"} == {
            "total": 2, "limit": 50, "offset": 0, "hasMore": False, "nextOffset": None}
        assert [u["id"] for u in body["users"]] == [tenant_admin.user_id, member.user_id]
        assert all(set(u) == USER_KEYS for u in body["users"])
        assert {u["tenantId"] for u in body["users"]} == {tenant_admin.tenant_id}

    def test_pages_through_the_users(self, client, tenant_admin, member):
        third = factories.add_user(client, tenant_admin)

        first = client.get(USERS, params={"limit": 2}, headers=tenant_admin.headers).json()
        second = client.get(USERS, params={"limit": 2, "offset": 2}, headers=tenant_admin.headers).json()

        assert (first["total"], first["hasMore"], first["nextOffset"]) == (3, True, 2)
        assert (second["total"], second["hasMore"], second["nextOffset"]) == (3, False, None)
        assert [u["id"] for u in first["users"] + second["users"]] == [tenant_admin.user_id, member.user_id,
                                                                        third.user_id]

    def test_filters_by_role(self, client, tenant_admin, member):
        response = client.get(USERS, params={"role": "user"}, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert [u["id"] for u in response.json()["users"]] == [member.user_id]

    def test_filters_by_active(self, client, tenant_admin, member):
        deactivated = client.patch(f"{USERS}/{member.user_id}", json={"active": False}, headers=tenant_admin.headers)
        assert deactivated.status_code == 200, deactivated.text

        inactive = client.get(USERS, params={"active": "false"}, headers=tenant_admin.headers)
        active = client.get(USERS, params={"active": "true"}, headers=tenant_admin.headers)

        assert [u["id"] for u in inactive.json()["users"]] == [member.user_id]
        assert [u["id"] for u in active.json()["users"]] == [tenant_admin.user_id]

    def test_searches_name_and_email_case_insensitively(self, client, tenant_admin, member):
        named = factories.add_user(client, tenant_admin, name="Zelda Zebra")

        by_name = client.get(USERS, params={"search": "zELDA"}, headers=tenant_admin.headers)
        local_part = member.email.split("@")[0]
        by_email = client.get(USERS, params={"search": local_part.upper()}, headers=tenant_admin.headers)

        assert [u["id"] for u in by_name.json()["users"]] == [named.user_id]
        assert [u["id"] for u in by_email.json()["users"]] == [member.user_id]

    def test_sorts_by_name_descending(self, client, tenant_admin):
        b = factories.add_user(client, tenant_admin, name="Bea")
        c = factories.add_user(client, tenant_admin, name="Cyd")

        response = client.get(USERS, params={"sortBy": "name", "sortOrder": "desc"}, headers=tenant_admin.headers)

        assert [u["id"] for u in response.json()["users"]] == [c.user_id, b.user_id, tenant_admin.user_id]

    def test_plain_user_is_denied(self, client, member):
        response = client.get(USERS, headers=member.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["users:read"]})

    def test_super_admin_is_denied(self, client, super_admin):
        response = client.get(USERS, headers=super_admin.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["users:read"]})


class TestCreateUser:
    def test_creates_a_user_in_the_own_tenant(self, client, tenant_admin):
        password = "secret-" + factories.unique("pw")
        body = user_body(email=f"{factories.unique('Grace')}@Example.com", name="Grace Hopper", password=password)

        response = client.post(USERS, json=body, headers=tenant_admin.headers)

        assert response.status_code == 201, response.text
        created = response.json()
        assert set(created) == USER_KEYS
        assert created["email"] == body["email"].lower()
        assert (created["name"], created["role"], created["active"], created["lastLoginAt"]) == (
            "Grace Hopper", "user", True, None)
        assert created["tenantId"] == tenant_admin.tenant_id
        assert response.headers["location"] == f"{USERS}/{created['id']}"
        assert password not in response.text
        row = user_row(created["id"])
        assert (row.tenant_id, row.email, row.role) == (uuid.UUID(tenant_admin.tenant_id), created["email"], "user")
        assert password not in row.password_hash

    def test_audits_the_creation_with_the_password_redacted(self, client, tenant_admin):
        password = "secret-" + factories.unique("pw")
        body = user_body(password=password)

        response = client.post(USERS, json=body, headers=tenant_admin.headers)

        assert response.status_code == 201, response.text
        entries = audit_entries(response.headers["x-request-id"], "user.create")
        assert len(entries) == 1
        entry = entries[0]
        assert (entry.resource_type, entry.resource_id) == ("user", response.json()["id"])
        assert (entry.actor_id, entry.tenant_id) == (uuid.UUID(tenant_admin.user_id), uuid.UUID(tenant_admin.tenant_id))
        assert entry.changes == {"email": body["email"], "name": body["name"], "role": "user", "password": "[REDACTED]"}
        assert password not in json.dumps(entry.changes)

    def test_created_user_can_log_in(self, client, tenant_admin):
        body = user_body(role="tenant_admin")
        response = client.post(USERS, json=body, headers=tenant_admin.headers)
        assert response.status_code == 201, response.text

        account = factories.login(client, body["email"], body["password"])

        assert account.user_id == response.json()["id"]
        assert (account.user["role"], account.tenant_id) == ("tenant_admin", tenant_admin.tenant_id)

    def test_email_taken_in_another_tenant_is_a_conflict(self, client, tenant_admin, other_tenant_admin):
        response = client.post(USERS, json=user_body(email=other_tenant_admin.email.upper()),
                               headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT", details={"field": "email"})
        assert [u.tenant_id for u in users_with_email(other_tenant_admin.email)] == [
            uuid.UUID(other_tenant_admin.tenant_id)]

    def test_email_taken_in_the_own_tenant_is_a_conflict(self, client, tenant_admin, member):
        response = client.post(USERS, json=user_body(email=member.email), headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT", details={"field": "email"})

    def test_too_short_password_is_a_validation_error_and_creates_nothing(self, client, tenant_admin):
        body = user_body(password="tiny-pw")

        response = client.post(USERS, json=body, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert "tiny-pw" not in response.text
        assert users_with_email(body["email"]) == []

    def test_malformed_email_is_a_validation_error(self, client, tenant_admin):
        response = client.post(USERS, json=user_body(email="not-an-email"), headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert users_with_email("not-an-email") == []

    def test_super_admin_role_is_a_validation_error(self, client, tenant_admin):
        body = user_body(role="super_admin")

        response = client.post(USERS, json=body, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert users_with_email(body["email"]) == []

    def test_plain_user_is_denied(self, client, member):
        body = user_body()

        response = client.post(USERS, json=body, headers=member.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["users:write"]})
        assert users_with_email(body["email"]) == []


class TestGetUser:
    def test_returns_a_user_of_the_own_tenant(self, client, tenant_admin, member):
        response = client.get(f"{USERS}/{member.user_id}", headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == USER_KEYS
        assert (body["id"], body["email"], body["role"], body["tenantId"]) == (
            member.user_id, member.email, "user", tenant_admin.tenant_id)
        assert body["lastLoginAt"] is not None  # the member fixture logged in

    def test_another_tenants_user_is_user_not_found(self, client, tenant_admin, other_tenant_admin):
        response = client.get(f"{USERS}/{other_tenant_admin.user_id}", headers=tenant_admin.headers)

        assert_error(response, 404, "USER_NOT_FOUND")

    def test_unknown_id_is_user_not_found(self, client, tenant_admin):
        response = client.get(f"{USERS}/{uuid.uuid4()}", headers=tenant_admin.headers)

        assert_error(response, 404, "USER_NOT_FOUND")

    def test_plain_user_is_denied(self, client, member):
        response = client.get(f"{USERS}/{member.user_id}", headers=member.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["users:read"]})

    def test_malformed_id_is_a_validation_error(self, client, tenant_admin):
        response = client.get(f"{USERS}/not-a-uuid", headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

class TestUpdateUser:
    def test_renames_a_user(self, client, tenant_admin, member):
        response = client.patch(f"{USERS}/{member.user_id}", json={"name": "Renamed Member"},
                                headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert (response.json()["id"], response.json()["name"]) == (member.user_id, "Renamed Member")
        assert user_row(member.user_id).name == "Renamed Member"
        entries = audit_entries(response.headers["x-request-id"], "user.update")
        assert [(e.resource_id, e.changes) for e in entries] == [(member.user_id, {"name": "Renamed Member"})]

    def test_promoting_a_user_grants_the_admin_scopes(self, client, tenant_admin, member):
        response = client.patch(f"{USERS}/{member.user_id}", json={"role": "tenant_admin"},
                                headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["role"] == "tenant_admin"
        assert client.get(USERS, headers=member.headers).status_code == 200

    def test_another_tenants_user_is_user_not_found_and_unchanged(self, client, tenant_admin, other_tenant_admin):
        response = client.patch(f"{USERS}/{other_tenant_admin.user_id}", json={"name": "Hijacked", "active": False},
                                headers=tenant_admin.headers)

        assert_error(response, 404, "USER_NOT_FOUND")
        row = user_row(other_tenant_admin.user_id)
        assert (row.name, row.active, row.role) == ("Ada Admin", True, "tenant_admin")
        assert audit_count("user.update", other_tenant_admin.user_id) == 0
        assert client.get(ME, headers=other_tenant_admin.headers).status_code == 200

    def test_last_active_admin_cannot_be_demoted(self, client, tenant_admin, member):
        response = client.patch(f"{USERS}/{tenant_admin.user_id}", json={"role": "user"}, headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT", details=LAST_ADMIN)
        assert user_row(tenant_admin.user_id).role == "tenant_admin"
        assert audit_count("user.update", tenant_admin.user_id) == 0

    def test_last_active_admin_cannot_be_deactivated(self, client, tenant_admin):
        response = client.patch(f"{USERS}/{tenant_admin.user_id}", json={"active": False},
                                headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT", details=LAST_ADMIN)
        assert user_row(tenant_admin.user_id).active is True
        assert client.get(ME, headers=tenant_admin.headers).status_code == 200

    def test_an_inactive_second_admin_does_not_count(self, client, tenant_admin):
        second = factories.add_user(client, tenant_admin, role="tenant_admin")
        deactivated = client.patch(f"{USERS}/{second.user_id}", json={"active": False}, headers=tenant_admin.headers)
        assert deactivated.status_code == 200, deactivated.text

        response = client.patch(f"{USERS}/{tenant_admin.user_id}", json={"role": "user"}, headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT", details=LAST_ADMIN)
        assert user_row(tenant_admin.user_id).role == "tenant_admin"

    def test_an_admin_can_be_demoted_when_another_active_admin_remains(self, client, tenant_admin):
        second = factories.add_user(client, tenant_admin, role="tenant_admin")

        response = client.patch(f"{USERS}/{tenant_admin.user_id}", json={"role": "user"}, headers=second.headers)

        assert response.status_code == 200, response.text
        assert response.json()["role"] == "user"
        assert user_row(tenant_admin.user_id).role == "user"
        assert_error(client.get(USERS, headers=tenant_admin.headers), 403, "PERMISSION_DENIED",
                     details={"requiredScopes": ["users:read"]})

    def test_an_admin_can_be_deactivated_when_another_active_admin_remains(self, client, tenant_admin):
        second = factories.add_user(client, tenant_admin, role="tenant_admin")

        response = client.patch(f"{USERS}/{tenant_admin.user_id}", json={"active": False}, headers=second.headers)

        assert response.status_code == 200, response.text
        assert response.json()["active"] is False

    def test_deactivated_users_tokens_and_password_stop_working(self, client, tenant_admin, member):
        response = client.patch(f"{USERS}/{member.user_id}", json={"active": False}, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["active"] is False
        assert_error(client.get(ME, headers=member.headers), 401, "INVALID_TOKEN")
        assert_error(client.post(LOGIN, json={"email": member.email, "password": member.password}),
                     401, "INVALID_CREDENTIALS")
        assert_error(client.post(REFRESH, json={"refreshToken": member.refresh_token}), 401, "INVALID_TOKEN")
        assert all(row.revoked_at is not None for row in refresh_rows(member.user_id))

    def test_reactivated_user_can_log_in_again(self, client, tenant_admin, member):
        deactivated = client.patch(f"{USERS}/{member.user_id}", json={"active": False}, headers=tenant_admin.headers)
        assert deactivated.status_code == 200, deactivated.text

        response = client.patch(f"{USERS}/{member.user_id}", json={"active": True}, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["active"] is True
        factories.login(client, member.email, member.password)

    def test_empty_body_is_a_validation_error(self, client, tenant_admin, member):
        response = client.patch(f"{USERS}/{member.user_id}", json={}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

    def test_super_admin_role_is_a_validation_error(self, client, tenant_admin, member):
        response = client.patch(f"{USERS}/{member.user_id}", json={"role": "super_admin"},
                                headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert user_row(member.user_id).role == "user"

    def test_email_cannot_be_changed(self, client, tenant_admin, member):
        response = client.patch(f"{USERS}/{member.user_id}", json={"email": "new@example.com"},
                                headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert user_row(member.user_id).email == member.email

    def test_plain_user_is_denied(self, client, member):
        response = client.patch(f"{USERS}/{member.user_id}", json={"role": "tenant_admin"}, headers=member.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["users:write"]})
        assert user_row(member.user_id).role == "user"

    def test_malformed_id_is_a_validation_error(self, client, tenant_admin):
        response = client.patch(f"{USERS}/not-a-uuid", json={"name": "X"}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

class TestDeleteUser:
    def test_deletes_a_user_and_its_refresh_tokens(self, client, tenant_admin, member):
        response = client.delete(f"{USERS}/{member.user_id}", headers=tenant_admin.headers)

        assert response.status_code == 204, response.text
        assert response.content == b""
        assert user_row(member.user_id) is None
        assert refresh_rows(member.user_id) == []
        entries = audit_entries(response.headers["x-request-id"], "user.delete")
        assert [(e.resource_id, e.actor_id) for e in entries] == [(member.user_id, uuid.UUID(tenant_admin.user_id))]
        assert_error(client.get(f"{USERS}/{member.user_id}", headers=tenant_admin.headers), 404, "USER_NOT_FOUND")

    def test_deleted_users_tokens_stop_working(self, client, tenant_admin, member):
        assert client.delete(f"{USERS}/{member.user_id}", headers=tenant_admin.headers).status_code == 204

        assert_error(client.get(ME, headers=member.headers), 401, "INVALID_TOKEN")
        assert_error(client.post(REFRESH, json={"refreshToken": member.refresh_token}), 401, "INVALID_TOKEN")
        assert_error(client.post(LOGIN, json={"email": member.email, "password": member.password}),
                     401, "INVALID_CREDENTIALS")

    def test_another_tenants_user_is_user_not_found_and_kept(self, client, tenant_admin, other_tenant_admin):
        response = client.delete(f"{USERS}/{other_tenant_admin.user_id}", headers=tenant_admin.headers)

        assert_error(response, 404, "USER_NOT_FOUND")
        assert user_row(other_tenant_admin.user_id) is not None
        assert refresh_rows(other_tenant_admin.user_id) != []
        assert client.get(ME, headers=other_tenant_admin.headers).status_code == 200

    def test_unknown_id_is_user_not_found(self, client, tenant_admin):
        response = client.delete(f"{USERS}/{uuid.uuid4()}", headers=tenant_admin.headers)

        assert_error(response, 404, "USER_NOT_FOUND")

    def test_last_active_admin_cannot_be_deleted(self, client, tenant_admin, member):
        response = client.delete(f"{USERS}/{tenant_admin.user_id}", headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT", details=LAST_ADMIN)
        assert user_row(tenant_admin.user_id) is not None
        assert client.get(ME, headers=tenant_admin.headers).status_code == 200

    def test_an_admin_can_be_deleted_when_another_active_admin_remains(self, client, tenant_admin):
        second = factories.add_user(client, tenant_admin, role="tenant_admin")

        response = client.delete(f"{USERS}/{tenant_admin.user_id}", headers=second.headers)

        assert response.status_code == 204, response.text
        assert user_row(tenant_admin.user_id) is None

    def test_plain_user_is_denied(self, client, tenant_admin, member):
        response = client.delete(f"{USERS}/{tenant_admin.user_id}", headers=member.headers)

        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["users:write"]})
        assert user_row(tenant_admin.user_id) is not None

    def test_malformed_id_is_a_validation_error(self, client, tenant_admin):
        response = client.delete(f"{USERS}/not-a-uuid", headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
