"""Operations of tag `audit-logs` (/api/v1/tenant/audit-logs, /api/v1/admin/audit-logs), and the
hash chain behind them (`integration-hub audit verify`).

The log is append-only: the spec has no operation that changes or removes an entry, and editing
or deleting a row in the database breaks the tenant's chain, which `audit_verify` reports.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry
from server.app import API_SPEC, HTTP_METHODS, ROOT_SPEC, load_spec
from server.cli import audit_verify
from tests import factories
from tests.handlers.test_tenant_integrations import RFC3339_UTC, assert_error, assert_forbidden

TENANT_LOG = "/api/v1/tenant/audit-logs"
ADMIN_LOG = "/api/v1/admin/audit-logs"
ENTRY_KEYS = {"id", "tenantId", "actorId", "actorRole", "action", "resourceType", "resourceId", "requestId", "ip",
              "changes", "outcome", "createdAt", "seq", "hash", "prevHash"}


def rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_between_entries() -> str:
    """A timestamp strictly between the entries written before and after it."""
    time.sleep(0.01)
    stamp = rfc3339(datetime.now(timezone.utc))
    time.sleep(0.01)
    return stamp


def page(client, account: factories.Account, url: str = TENANT_LOG, **params) -> dict:
    response = client.get(url, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def walk(client, account: factories.Account, url: str = TENANT_LOG, cursor: str | None = None, **params) -> list[dict]:
    """Every entry matching `params` (from `cursor` on), page by page (at most 100 pages)."""
    items = []
    for _ in range(100):
        body = page(client, account, url, **params, **({"cursor": cursor} if cursor else {}))
        items += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("more than 100 pages")


def tenant_rows(tenant_id: str) -> list[AuditEntry]:
    """The tenant's entries as stored, newest first (chain order)."""
    with transaction() as session:
        stmt = select(AuditEntry).where(AuditEntry.tenant_id == uuid.UUID(tenant_id)).order_by(AuditEntry.seq.desc())
        return list(session.exec(stmt).all())


@dataclass
class Activity:
    """What a tenant admin did, in order, with the timestamps between the steps."""

    admin: factories.Account
    member: factories.Account
    integration: dict
    token: dict
    after_register: str
    after_integration: str


@pytest.fixture
def activity(client, super_admin, tenant_admin) -> Activity:
    """A fresh tenant whose admin enables an integration, adds a user and creates a token.

    Its log, oldest first: tenant.register, integration.create, user.create, auth.login (the new
    user signs in), api_token.create.
    """
    provider = factories.create_provider(client, super_admin)
    after_register = now_between_entries()
    integration = factories.enable_integration(client, tenant_admin, provider["id"])
    after_integration = now_between_entries()
    member = factories.add_user(client, tenant_admin, role="user")
    response = client.post("/api/v1/tenant/api-tokens", json={"name": "CI", "scopes": ["integrations:read"]},
                           headers=tenant_admin.headers)
    assert response.status_code == 201, response.text
    return Activity(tenant_admin, member, integration, response.json(), after_register, after_integration)


ACTIONS_NEWEST_FIRST = ["api_token.create", "auth.login", "user.create", "integration.create", "tenant.register"]


@pytest.fixture
def restore_audit_row():
    """Put tampered audit rows back as they were, so the chains verify again for later tests."""
    saved: list[dict] = []

    def save(row: AuditEntry) -> None:
        saved.append(row.model_dump())

    yield save
    with transaction() as session:
        for values in saved:
            session.exec(sa.delete(AuditEntry).where(AuditEntry.id == values["id"]))
            session.flush()
            session.add(AuditEntry(**values))


class TestListTenantAuditLogs:
    def test_lists_the_tenants_entries_newest_first(self, client, activity):
        body = page(client, activity.admin)

        assert set(body) == {"items", "limit", "hasMore", "nextCursor"}
        assert (body["limit"], body["hasMore"], body["nextCursor"]) == (50, False, None)
        assert [item["action"] for item in body["items"]] == ACTIONS_NEWEST_FIRST
        assert all(set(item) == ENTRY_KEYS for item in body["items"])
        assert [item["seq"] for item in body["items"]] == [5, 4, 3, 2, 1]
        assert {item["tenantId"] for item in body["items"]} == {activity.admin.tenant_id}
        assert all(RFC3339_UTC.match(item["createdAt"]) for item in body["items"])
        assert [item["id"] for item in body["items"]] == [str(row.id) for row in tenant_rows(activity.admin.tenant_id)]

    def test_entries_link_into_a_hash_chain(self, client, activity):
        items = page(client, activity.admin)["items"]

        for newer, older in zip(items, items[1:]):
            assert newer["prevHash"] == older["hash"]
        assert items[-1]["prevHash"] == ""
        assert all(len(item["hash"]) == 64 for item in items)

    def test_entry_records_actor_request_and_changes(self, client, activity):
        item = page(client, activity.admin, action="integration.create")["items"][0]

        assert item["actorId"] == activity.admin.user_id
        assert (item["actorRole"], item["resourceType"], item["resourceId"], item["outcome"]) == (
            "tenant_admin", "integration", activity.integration["id"], "success")
        assert item["ip"] == "testclient"
        assert item["requestId"].startswith("req_")
        assert item["changes"]["name"] == activity.integration["name"]

    @pytest.mark.parametrize("params,expected", [
        ({"action": "user.create"}, ["user.create"]),
        ({"resourceType": "api_token"}, ["api_token.create"]),
        ({"outcome": "success"}, ACTIONS_NEWEST_FIRST),
        ({"outcome": "failure"}, []),
        ({"action": "auth.login", "outcome": "success"}, ["auth.login"]),
    ])
    def test_filters(self, client, activity, params, expected):
        items = page(client, activity.admin, **params)["items"]

        assert [item["action"] for item in items] == expected

    def test_filter_by_resource_id(self, client, activity):
        items = page(client, activity.admin, resourceId=activity.token["id"])["items"]

        assert [(item["action"], item["resourceId"]) for item in items] == [("api_token.create", activity.token["id"])]

    def test_filter_by_actor(self, client, activity):
        by_member = page(client, activity.admin, actor=activity.member.user_id)["items"]
        by_admin = page(client, activity.admin, actor=activity.admin.user_id)["items"]

        assert [item["action"] for item in by_member] == ["auth.login"]
        assert [item["action"] for item in by_admin] == ["api_token.create", "user.create", "integration.create",
                                                         "tenant.register"]

    def test_filter_by_time(self, client, activity):
        since = page(client, activity.admin, **{"from": activity.after_integration})["items"]
        until = page(client, activity.admin, to=activity.after_register)["items"]
        between = page(client, activity.admin, **{"from": activity.after_register, "to": activity.after_integration})

        assert [item["action"] for item in since] == ["api_token.create", "auth.login", "user.create"]
        assert [item["action"] for item in until] == ["tenant.register"]
        assert [item["action"] for item in between["items"]] == ["integration.create"]

    def test_time_without_timezone_is_rejected(self, client, activity):
        response = client.get(TENANT_LOG, params={"from": "2026-01-01T00:00:00"}, headers=activity.admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_cursor_walks_every_entry_exactly_once(self, client, activity):
        everything = page(client, activity.admin)["items"]

        pages, cursor = [], None
        while True:
            body = page(client, activity.admin, limit=2, **({"cursor": cursor} if cursor else {}))
            pages.append(body)
            cursor = body["nextCursor"]
            if cursor is None:
                break

        assert [len(p["items"]) for p in pages] == [2, 2, 1]
        assert [p["hasMore"] for p in pages] == [True, True, False]
        assert [item["id"] for p in pages for item in p["items"]] == [item["id"] for item in everything]

    def test_cursor_keeps_the_filters(self, client, activity):
        items = walk(client, activity.admin, limit=1, actor=activity.admin.user_id)

        assert [item["action"] for item in items] == ["api_token.create", "user.create", "integration.create",
                                                      "tenant.register"]

    def test_new_entries_do_not_shift_a_walk(self, client, activity, provider_for_more):
        first = page(client, activity.admin, limit=2)
        factories.enable_integration(client, activity.admin, provider_for_more["id"])  # newer than the cursor

        rest = walk(client, activity.admin, TENANT_LOG, first["nextCursor"], limit=2)

        assert [item["action"] for item in first["items"] + rest] == ACTIONS_NEWEST_FIRST

    @pytest.mark.parametrize("cursor", [
        "not-a-cursor",
        base64.urlsafe_b64encode(b"no separator here").decode().rstrip("="),
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|not-a-uuid").decode().rstrip("="),
        base64.urlsafe_b64encode(b"yesterday|" + str(uuid.uuid4()).encode()).decode().rstrip("="),
    ])
    def test_malformed_cursor_is_rejected(self, client, tenant_admin, cursor):
        response = client.get(TENANT_LOG, params={"cursor": cursor}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="cursor is not a cursor this API returned",
                     details={"field": "cursor"})

    def test_limit_above_100_is_rejected(self, client, tenant_admin):
        response = client.get(TENANT_LOG, params={"limit": 101}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_sees_only_its_own_tenant(self, client, activity, other_tenant_admin):
        theirs = walk(client, other_tenant_admin, limit=100)
        mine = walk(client, activity.admin, limit=100)

        assert {item["tenantId"] for item in theirs} == {other_tenant_admin.tenant_id}
        assert [item["action"] for item in theirs] == ["tenant.register"]
        assert not {item["id"] for item in theirs} & {item["id"] for item in mine}

    def test_denied_request_is_logged(self, client, activity):
        denied = client.get("/api/v1/tenant/users", headers=activity.member.headers)
        assert_forbidden(denied, "users:read")

        items = page(client, activity.admin, outcome="denied")["items"]

        assert len(items) == 1
        item = items[0]
        assert (item["action"], item["outcome"], item["actorId"], item["actorRole"], item["resourceType"],
                item["resourceId"], item["requestId"]) == (
            "request.denied", "denied", activity.member.user_id, "user", "operation", "list_users",
            denied.headers["X-Request-ID"])
        assert item["changes"]["method"] == "GET" and item["changes"]["path"] == "/api/v1/tenant/users"

    def test_plain_user_is_denied(self, client, member):
        response = client.get(TENANT_LOG, headers=member.headers)

        assert_forbidden(response, "audit:read")

    def test_super_admin_is_denied(self, client, super_admin):
        response = client.get(TENANT_LOG, headers=super_admin.headers)

        assert_forbidden(response, "audit:read")


@pytest.fixture
def provider_for_more(client, super_admin) -> dict:
    return factories.create_provider(client, super_admin)


class TestListAuditLogs:
    def test_sees_every_tenant(self, client, super_admin, activity, other_tenant_admin):
        since = activity.after_register

        items = walk(client, super_admin, ADMIN_LOG, limit=100, **{"from": since})

        tenants = {item["tenantId"] for item in items}
        assert {activity.admin.tenant_id, other_tenant_admin.tenant_id} <= tenants

    def test_filters_by_tenant(self, client, super_admin, activity, other_tenant_admin):
        mine = walk(client, super_admin, ADMIN_LOG, limit=100, tenantId=activity.admin.tenant_id)
        theirs = walk(client, super_admin, ADMIN_LOG, limit=100, tenantId=other_tenant_admin.tenant_id)

        assert [item["action"] for item in mine] == ACTIONS_NEWEST_FIRST
        assert [item["action"] for item in theirs] == ["tenant.register"]

    def test_sees_platform_entries(self, client, super_admin):
        provider = factories.create_provider(client, super_admin)

        items = page(client, super_admin, ADMIN_LOG, resourceId=provider["id"])["items"]

        assert [(item["action"], item["tenantId"], item["actorId"]) for item in items] == [
            ("provider.create", None, super_admin.user_id)]

    def test_failed_login_is_logged(self, client, super_admin, tenant_admin):
        since = now_between_entries()
        response = client.post("/api/v1/auth/login", json={"email": tenant_admin.email, "password": "wrong-password"})
        assert_error(response, 401, "INVALID_CREDENTIALS", details=None)

        items = walk(client, super_admin, ADMIN_LOG, limit=100, action="auth.login", outcome="failure",
                     **{"from": since})

        mine = [item for item in items if item["requestId"] == response.headers["X-Request-ID"]]
        assert len(mine) == 1, items
        assert mine[0]["changes"] == {"email": tenant_admin.email.lower(), "failure": "invalid_credentials"}
        assert (mine[0]["outcome"], mine[0]["ip"]) == ("failure", "testclient")
        assert "wrong-password" not in str(mine[0])

    def test_tenant_admin_is_denied(self, client, tenant_admin):
        response = client.get(ADMIN_LOG, headers=tenant_admin.headers)

        assert_forbidden(response, "platform_audit:read")


class TestAppendOnly:
    def test_spec_has_no_operation_that_changes_an_entry(self):
        audit_operations = []
        for spec in (load_spec(API_SPEC), load_spec(ROOT_SPEC)):
            for path, item in spec["paths"].items():
                for method in HTTP_METHODS:
                    operation = item.get(method)
                    if operation and ("audit" in path or "audit-logs" in operation.get("tags", [])):
                        audit_operations.append((method, path))

        assert sorted(audit_operations) == [("get", "/admin/audit-logs"), ("get", "/tenant/audit-logs")]

    @pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
    def test_writes_are_not_routed(self, client, tenant_admin, method):
        response = client.request(method.upper(), TENANT_LOG, json={}, headers=tenant_admin.headers)

        assert response.status_code == 405, response.text
        assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


class TestHashChainVerification:
    def test_intact_log_verifies(self, settings, activity, capsys):
        status = audit_verify(settings)

        out = capsys.readouterr().out
        assert status == 0, out
        assert out.startswith("Audit log intact: ") and out.rstrip().endswith("entries verified")

    def test_edited_entry_breaks_the_chain(self, settings, activity, capsys, restore_audit_row):
        target = next(row for row in tenant_rows(activity.admin.tenant_id) if row.action == "integration.create")
        restore_audit_row(target)
        with transaction() as session:
            session.exec(sa.update(AuditEntry).where(AuditEntry.id == target.id)
                         .values(changes={"name": "Something else entirely"}))

        status = audit_verify(settings)

        out = capsys.readouterr().out
        assert status == 1, out
        assert f"TAMPERED chain {activity.admin.tenant_id} at entry {target.seq}: content altered" in out
        assert "Audit log NOT intact: 1 chain(s) broken" in out

    def test_deleted_entry_breaks_the_chain(self, settings, activity, capsys, restore_audit_row):
        target = next(row for row in tenant_rows(activity.admin.tenant_id) if row.action == "user.create")
        restore_audit_row(target)
        with transaction() as session:
            session.exec(sa.delete(AuditEntry).where(AuditEntry.id == target.id))

        status = audit_verify(settings)

        out = capsys.readouterr().out
        assert status == 1, out
        assert f"TAMPERED chain {activity.admin.tenant_id} at entry {target.seq}: entry missing" in out

    def test_restored_entry_verifies_again(self, settings, activity, capsys, restore_audit_row):
        # Runs after the tampering tests: their fixture put the rows back.
        target = tenant_rows(activity.admin.tenant_id)[0]
        restore_audit_row(target)
        with transaction() as session:
            session.exec(sa.update(AuditEntry).where(AuditEntry.id == target.id).values(outcome="failure"))
        assert audit_verify(settings) == 1
        with transaction() as session:
            session.exec(sa.update(AuditEntry).where(AuditEntry.id == target.id).values(outcome=target.outcome))

        status = audit_verify(settings)

        out = capsys.readouterr().out
        assert status == 0, out
