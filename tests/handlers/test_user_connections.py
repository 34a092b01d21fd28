"""Operations of tag `user-connections` (/api/v1/user/integrations/{id}/...): any user of the tenant
connects their own account to a user-scoped integration (OAuth against the sandbox)."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlmodel import select

from persistence.db import transaction
from persistence.models import Connection, OAuthState
from tests import factories
from tests.handlers.test_tenant_integrations import (
    RFC3339_UTC,
    assert_audited,
    assert_error,
    assert_integration_not_found,
    audit_entries,
    connection_rows,
    integration_row,
    item_url,
)

USER_BASE = "/api/v1/user/integrations"
RETURN_URL = "https://app.example.com/x"


def user_url(integration_id: str, suffix: str) -> str:
    return f"{USER_BASE}/{integration_id}{suffix}"


def oauth_states(integration_id: str) -> list[OAuthState]:
    with transaction() as session:
        stmt = select(OAuthState).where(OAuthState.integration_id == uuid.UUID(integration_id))
        return list(session.exec(stmt).all())


def user_connection(integration_id: str, user_id: str) -> Connection | None:
    with transaction() as session:
        stmt = select(Connection).where(Connection.integration_id == uuid.UUID(integration_id),
                                        Connection.user_id == uuid.UUID(user_id))
        return session.exec(stmt).first()


def start(client, account: factories.Account, integration_id: str, return_url: str = RETURN_URL):
    return client.post(user_url(integration_id, "/connect/oauth"), json={"returnUrl": return_url},
                       headers=account.headers)


def connect_own_account(client, account: factories.Account, integration_id: str):
    """Run the whole flow as `account`: start, consent at the sandbox, callback; return the callback answer."""
    started = start(client, account, integration_id)
    assert started.status_code == 200, started.text
    consent = factories.follow_authorization(started.json()["authorizationUrl"])
    assert consent.status_code == 302, consent.text
    return client.get(factories.callback_path(consent.headers["location"]), follow_redirects=False)


@pytest.fixture
def user_scoped(client, tenant_admin, sandbox_provider) -> dict:
    """`tenant_admin`'s tenant with the sandbox (OAuth) provider enabled as a user-scoped integration."""
    return factories.enable_integration(client, tenant_admin, sandbox_provider["id"], userScoped=True)


@pytest.fixture
def colleague(client, tenant_admin) -> factories.Account:
    """A second plain user of `tenant_admin`'s tenant."""
    return factories.add_user(client, tenant_admin, role="user")


class TestStartUserOAuthConnection:
    def test_answers_the_providers_authorization_url(self, client, member, user_scoped, sandbox):
        response = start(client, member, user_scoped["id"])

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"authorizationUrl", "state"}
        url = urlsplit(body["authorizationUrl"])
        query = dict(parse_qsl(url.query))
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{sandbox.base_url}/oauth/authorize"
        assert (query["response_type"], query["client_id"], query["state"], query["code_challenge_method"]) == (
            "code", "hub-sandbox-client", body["state"], "S256")
        [state] = oauth_states(user_scoped["id"])
        assert (state.user_id, state.user_scoped, state.return_url, state.used_at) == (
            uuid.UUID(member.user_id), True, RETURN_URL, None)
        entry = assert_audited(response, user_scoped["id"], "connection.oauth_start", member)
        assert entry.changes == {"userScoped": True, "browserBound": False}

    def test_integration_that_is_not_user_scoped_is_refused(self, client, member, sandbox_integration):
        response = start(client, member, sandbox_integration["id"])

        assert_error(response, 400, "VALIDATION_ERROR",
                     message="This integration is not user-scoped; a tenant admin connects it for the tenant",
                     details={"field": "userScoped"})
        assert oauth_states(sandbox_integration["id"]) == []

    def test_foreign_return_url_is_refused_and_stores_no_state(self, client, member, user_scoped):
        response = start(client, member, user_scoped["id"], return_url="https://evil.example/x")

        assert_error(response, 400, "VALIDATION_ERROR", message="returnUrl must be on an allowed origin (ALLOWED_ORIGINS)",
                     details={"field": "returnUrl"})
        assert oauth_states(user_scoped["id"]) == []

    def test_unknown_integration_is_integration_not_found(self, client, member):
        integration_id = str(uuid.uuid4())

        assert_integration_not_found(start(client, member, integration_id), integration_id)


class TestUserOAuthCallback:
    def test_connects_the_users_own_account_and_returns_to_the_app(self, client, tenant_admin, member, user_scoped):
        response = connect_own_account(client, member, user_scoped["id"])

        assert response.status_code == 302, response.text
        location = urlsplit(response.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == RETURN_URL
        assert dict(parse_qsl(location.query)) == {"status": "connected", "integrationId": user_scoped["id"]}
        row = user_connection(user_scoped["id"], member.user_id)
        assert (row.owner_key, row.auth_type, row.status, row.scopes) == (
            member.user_id, "oauth2", "active", ["crm.read", "crm.write"])
        assert row.secret is not None
        [state] = oauth_states(user_scoped["id"])
        assert state.used_at is not None

    def test_leaves_the_tenant_connection_and_integration_alone(self, client, tenant_admin, member, user_scoped):
        assert connect_own_account(client, member, user_scoped["id"]).status_code == 302

        tenant_connection = client.get(item_url(user_scoped["id"], "/connection"), headers=tenant_admin.headers)

        assert_error(tenant_connection, 404, "CONNECTION_NOT_FOUND",
                     message=f"Connection of integration {user_scoped['id']} not found", details=None)
        integration = client.get(item_url(user_scoped["id"]), headers=tenant_admin.headers).json()
        assert (integration["status"], integration["connectionStatus"]) == ("pending", None)

    def test_writes_audit_entry_for_the_user(self, client, member, user_scoped):
        response = connect_own_account(client, member, user_scoped["id"])

        assert response.status_code == 302, response.text
        row = user_connection(user_scoped["id"], member.user_id)
        entries = audit_entries(str(row.id), "connection.oauth_callback")
        assert len(entries) == 1
        assert (entries[0].actor_id, entries[0].tenant_id, entries[0].outcome, entries[0].request_id) == (
            uuid.UUID(member.user_id), uuid.UUID(member.tenant_id), "success", response.headers["X-Request-ID"])
        assert entries[0].changes == {"integrationId": user_scoped["id"], "error": None}


class TestGetUserConnection:
    def test_connected_user_sees_the_connection(self, client, member, user_scoped):
        assert connect_own_account(client, member, user_scoped["id"]).status_code == 302
        row = user_connection(user_scoped["id"], member.user_id)

        response = client.get(user_url(user_scoped["id"], "/connection"), headers=member.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"connected", "connectionId", "status", "lastConnectedAt"}
        assert (body["connected"], body["connectionId"], body["status"]) == (True, str(row.id), "active")
        assert RFC3339_UTC.match(body["lastConnectedAt"]), body["lastConnectedAt"]

    def test_another_user_of_the_tenant_is_not_connected(self, client, member, colleague, user_scoped):
        assert connect_own_account(client, member, user_scoped["id"]).status_code == 302

        response = client.get(user_url(user_scoped["id"], "/connection"), headers=colleague.headers)

        assert response.status_code == 200, response.text
        assert response.json() == {"connected": False}

    def test_never_connected(self, client, member, user_scoped):
        response = client.get(user_url(user_scoped["id"], "/connection"), headers=member.headers)

        assert response.status_code == 200, response.text
        assert response.json() == {"connected": False}

    def test_unknown_integration_is_integration_not_found(self, client, member):
        integration_id = str(uuid.uuid4())

        response = client.get(user_url(integration_id, "/connection"), headers=member.headers)

        assert_integration_not_found(response, integration_id)


class TestDisconnectUserConnection:
    def test_destroys_the_users_credentials(self, client, member, user_scoped):
        assert connect_own_account(client, member, user_scoped["id"]).status_code == 302

        response = client.post(user_url(user_scoped["id"], "/disconnect"), headers=member.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"success", "disconnectedAt"} and body["success"] is True
        assert RFC3339_UTC.match(body["disconnectedAt"]), body["disconnectedAt"]
        row = user_connection(user_scoped["id"], member.user_id)
        assert (row.status, row.secret) == ("revoked", None)
        after = client.get(user_url(user_scoped["id"], "/connection"), headers=member.headers).json()
        assert (after["connected"], after.get("status")) == (False, "revoked")
        assert integration_row(user_scoped["id"]).status == "pending"

    def test_writes_audit_entry(self, client, member, user_scoped):
        assert connect_own_account(client, member, user_scoped["id"]).status_code == 302
        row = user_connection(user_scoped["id"], member.user_id)

        response = client.post(user_url(user_scoped["id"], "/disconnect"), headers=member.headers)

        assert response.status_code == 200, response.text
        assert_audited(response, str(row.id), "connection.user_disconnect", member, resource_type="connection")

    def test_leaves_other_users_connections_alone(self, client, member, colleague, user_scoped):
        assert connect_own_account(client, member, user_scoped["id"]).status_code == 302
        assert connect_own_account(client, colleague, user_scoped["id"]).status_code == 302

        response = client.post(user_url(user_scoped["id"], "/disconnect"), headers=member.headers)

        assert response.status_code == 200, response.text
        assert client.get(user_url(user_scoped["id"], "/connection"), headers=colleague.headers).json()["connected"]
        assert {row.owner_key: row.status for row in connection_rows(user_scoped["id"])} == {
            member.user_id: "revoked", colleague.user_id: "active"}

    def test_never_connected_is_connection_not_found(self, client, member, user_scoped):
        response = client.post(user_url(user_scoped["id"], "/disconnect"), headers=member.headers)

        assert_error(response, 404, "CONNECTION_NOT_FOUND",
                     message=f"Connection of integration {user_scoped['id']} not found", details=None)
