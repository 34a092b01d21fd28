"""Operations of tag `connections` (/api/v1/tenant/integrations/{id}/connect..., /connection...):
tenant admin, against the sandbox provider over loopback HTTP."""

from __future__ import annotations

import json
import math
import re
import socket
import time
import uuid

import pytest

from persistence.db import transaction
from persistence.models import Connection
from server import runtime
from tests import factories
from tests.handlers.test_tenant_integrations import (
    RFC3339_UTC,
    assert_audited,
    assert_error,
    assert_forbidden,
    assert_integration_not_found,
    audit_entries,
    connect_api_key,
    connection_rows,
    integration_row,
    item_url,
    static_provider,
    tenant_audit,
)

CONNECTION_KEYS = {"connectionId", "integrationId", "status", "authType", "displayName", "scopes", "connectedAt",
                   "lastValidatedAt", "validationError", "expiresAt", "credentialSecretName"}
# What the sandbox's GET /me answers for a static credential.
SANDBOX_ME = {"id": "usr_sandbox", "name": "Sandbox User", "email": "sandbox-user@sandbox.test",
              "scopes": ["crm.read", "crm.write"]}


def connection_row(connection_id: str) -> Connection | None:
    with transaction() as session:
        return session.get(Connection, uuid.UUID(connection_id))


def assert_connected(response) -> dict:
    """Assert a Connected answer and return it."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"connectionId", "status", "connectedAt"}
    uuid.UUID(body["connectionId"])
    assert body["status"] == "active"
    assert RFC3339_UTC.match(body["connectedAt"]), body["connectedAt"]
    return body


def assert_nothing_stored(integration_id: str) -> None:
    """No connection row, and the integration still pending."""
    assert connection_rows(integration_id) == []
    row = integration_row(integration_id)
    assert (row.status, row.last_error) == ("pending", None)


def assert_secret_not_audited(tenant_id: str, *secrets: str) -> None:
    """No audit entry of the tenant carries any of `secrets` anywhere in its changes."""
    entries = tenant_audit(tenant_id)
    assert entries
    text = json.dumps([entry.changes for entry in entries])
    for secret in secrets:
        assert secret not in text


def refused_credentials(status: int = 401) -> dict:
    return {"message": f"The provider refused the credentials ({status})", "details": {"providerStatus": status}}


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def api_key(sandbox, monkeypatch) -> str:
    """A fresh API key the sandbox accepts (unique, so its absence from stored text is meaningful)."""
    key = factories.unique("sk-live-")
    monkeypatch.setattr(sandbox.config, "api_keys", [*sandbox.config.api_keys, key])
    return key


@pytest.fixture
def basic_user(sandbox, monkeypatch) -> tuple[str, str]:
    """A fresh username/password pair the sandbox accepts."""
    username, password = factories.unique("user-"), factories.unique("pw-")
    monkeypatch.setitem(sandbox.config.basic_users, username, password)
    return username, password


@pytest.fixture
def api_key_integration(client, super_admin, tenant_admin, sandbox) -> dict:
    provider = static_provider(client, super_admin, sandbox, "api_key")
    return factories.enable_integration(client, tenant_admin, provider["id"])


@pytest.fixture
def basic_integration(client, super_admin, tenant_admin, sandbox) -> dict:
    provider = static_provider(client, super_admin, sandbox, "basic")
    return factories.enable_integration(client, tenant_admin, provider["id"])


@pytest.fixture
def custom_integration(client, super_admin, tenant_admin, sandbox) -> dict:
    provider = static_provider(client, super_admin, sandbox, "custom")
    return factories.enable_integration(client, tenant_admin, provider["id"])


@pytest.fixture
def connected(client, tenant_admin, api_key_integration, api_key) -> dict:
    """`api_key_integration` connected with `api_key`; the Connected answer plus `integrationId`."""
    return connect_api_key(client, tenant_admin, api_key_integration["id"], api_key) | {
        "integrationId": api_key_integration["id"]}


@pytest.fixture
def tests_per_minute(monkeypatch) -> int:
    """The connection-test limit as configured (HUB_CONNECTION_TESTS_PER_MINUTE, 10 in conftest).

    conftest scales every rate limit up (HUB_RATE_LIMIT_SCALE) so that only tests about limits
    meet them; this one is about a limit, so it runs at scale 1.
    """
    monkeypatch.setattr(runtime.get().rate_limits, "scale", 1.0)
    return runtime.get().settings.connection_tests_per_minute


@pytest.fixture
def refused_url():
    """A URL on a port that is bound but not listening, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- operations -----------------------------------------------------------------------------------


class TestConnectApiKey:
    def test_good_key_connects(self, client, tenant_admin, api_key_integration, api_key):
        integration_id = api_key_integration["id"]

        response = client.post(item_url(integration_id, "/connect/api-key"),
                               json={"apiKey": api_key, "displayName": "Sales key"}, headers=tenant_admin.headers)

        body = assert_connected(response)
        assert api_key not in response.text
        integration = client.get(item_url(integration_id), headers=tenant_admin.headers).json()
        assert (integration["status"], integration["connectionStatus"], integration["lastError"]) == (
            "connected", "active", None)
        connection = client.get(item_url(integration_id, "/connection"), headers=tenant_admin.headers)
        assert connection.status_code == 200, connection.text
        assert connection.json() == {
            "connectionId": body["connectionId"], "integrationId": integration_id, "status": "active",
            "authType": "api_key", "displayName": "Sales key", "scopes": [], "connectedAt": body["connectedAt"],
            "lastValidatedAt": None, "validationError": None, "expiresAt": None,
            "credentialSecretName": f"connections/{body['connectionId']}/v1"}
        assert api_key not in connection.text
        row = connection_row(body["connectionId"])
        assert (row.tenant_id, row.user_id, row.owner_key, row.auth_type) == (
            uuid.UUID(tenant_admin.tenant_id), None, "tenant", "api_key")
        assert row.secret and api_key not in row.secret  # sealed, not stored as is

    def test_writes_audit_entry_without_the_key(self, client, tenant_admin, api_key_integration, api_key):
        response = client.post(item_url(api_key_integration["id"], "/connect/api-key"), json={"apiKey": api_key},
                               headers=tenant_admin.headers)

        body = assert_connected(response)
        entry = assert_audited(response, body["connectionId"], "connection.connect_api_key", tenant_admin,
                               resource_type="connection")
        assert entry.changes == {"integrationId": api_key_integration["id"], "displayName": None}
        assert_secret_not_audited(tenant_admin.tenant_id, api_key)

    def test_bad_key_is_invalid_credentials_and_stores_nothing(self, client, tenant_admin, api_key_integration):
        response = client.post(item_url(api_key_integration["id"], "/connect/api-key"),
                               json={"apiKey": "not-the-key"}, headers=tenant_admin.headers)

        assert_error(response, 400, "INVALID_CREDENTIALS", **refused_credentials())
        assert "not-the-key" not in response.text
        assert_nothing_stored(api_key_integration["id"])

    def test_oauth2_provider_refuses_an_api_key(self, client, tenant_admin, sandbox_integration):
        response = client.post(item_url(sandbox_integration["id"], "/connect/api-key"),
                               json={"apiKey": "sandbox-api-key"}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="Sandbox CRM connects with oauth2, not api_key",
                     details={"authType": "oauth2"})
        assert_nothing_stored(sandbox_integration["id"])

    def test_basic_provider_refuses_an_api_key(self, client, tenant_admin, basic_integration):
        response = client.post(item_url(basic_integration["id"], "/connect/api-key"),
                               json={"apiKey": "sandbox-api-key"}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="Sandbox CRM connects with basic, not api_key",
                     details={"authType": "basic"})
        assert_nothing_stored(basic_integration["id"])

    def test_unreachable_provider_is_connection_failed(self, client, super_admin, tenant_admin, sandbox, refused_url):
        provider = static_provider(client, super_admin, sandbox, "api_key", apiBaseUrl=refused_url)
        integration = factories.enable_integration(client, tenant_admin, provider["id"])

        response = client.post(item_url(integration["id"], "/connect/api-key"), json={"apiKey": "sandbox-api-key"},
                               headers=tenant_admin.headers)

        assert_error(response, 502, "CONNECTION_FAILED", details={"providerStatus": None})
        assert response.json()["error"]["message"].startswith(f"GET {refused_url}/me failed")
        assert_nothing_stored(integration["id"])

    def test_reconnecting_replaces_the_secret(self, client, tenant_admin, connected):
        again = connect_api_key(client, tenant_admin, connected["integrationId"])

        assert again["connectionId"] == connected["connectionId"]
        [row] = connection_rows(connected["integrationId"])
        assert row.secret_version == 2

    def test_unknown_integration_is_integration_not_found(self, client, tenant_admin):
        integration_id = str(uuid.uuid4())

        response = client.post(item_url(integration_id, "/connect/api-key"), json={"apiKey": "sandbox-api-key"},
                               headers=tenant_admin.headers)

        assert_integration_not_found(response, integration_id)

    def test_missing_key_is_a_validation_error(self, client, tenant_admin, api_key_integration):
        response = client.post(item_url(api_key_integration["id"], "/connect/api-key"), json={"displayName": "x"},
                               headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert_nothing_stored(api_key_integration["id"])

    def test_plain_user_is_denied(self, client, member, api_key_integration):
        response = client.post(item_url(api_key_integration["id"], "/connect/api-key"),
                               json={"apiKey": "sandbox-api-key"}, headers=member.headers)

        assert_forbidden(response, "connections:write")
        assert_nothing_stored(api_key_integration["id"])


class TestConnectBasic:
    def test_good_credentials_connect(self, client, tenant_admin, basic_integration, basic_user):
        username, password = basic_user

        response = client.post(item_url(basic_integration["id"], "/connect/basic"),
                               json={"username": username, "password": password}, headers=tenant_admin.headers)

        body = assert_connected(response)
        assert integration_row(basic_integration["id"]).status == "connected"
        connection = client.get(item_url(basic_integration["id"], "/connection"), headers=tenant_admin.headers)
        assert (connection.json()["authType"], connection.json()["credentialSecretName"]) == (
            "basic", f"connections/{body['connectionId']}/v1")
        assert password not in connection.text
        entry = assert_audited(response, body["connectionId"], "connection.connect_basic", tenant_admin,
                               resource_type="connection")
        assert entry.changes == {"integrationId": basic_integration["id"], "displayName": None}
        assert_secret_not_audited(tenant_admin.tenant_id, password)

    def test_bad_password_is_invalid_credentials_and_stores_nothing(self, client, tenant_admin, basic_integration,
                                                                      basic_user):
        response = client.post(item_url(basic_integration["id"], "/connect/basic"),
                               json={"username": basic_user[0], "password": "wrong-password"},
                               headers=tenant_admin.headers)

        assert_error(response, 400, "INVALID_CREDENTIALS", **refused_credentials())
        assert_nothing_stored(basic_integration["id"])

    def test_api_key_provider_refuses_basic(self, client, tenant_admin, api_key_integration):
        response = client.post(item_url(api_key_integration["id"], "/connect/basic"),
                               json={"username": "sandbox-user", "password": "sandbox-password"},
                               headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="Sandbox CRM connects with api_key, not basic",
                     details={"authType": "api_key"})
        assert_nothing_stored(api_key_integration["id"])


class TestConnectCustom:
    def test_good_header_connects(self, client, tenant_admin, custom_integration, api_key):
        response = client.post(item_url(custom_integration["id"], "/connect/custom"),
                               json={"credentials": {"X-API-Key": api_key}, "displayName": "Custom header"},
                               headers=tenant_admin.headers)

        body = assert_connected(response)
        assert integration_row(custom_integration["id"]).status == "connected"
        connection = client.get(item_url(custom_integration["id"], "/connection"), headers=tenant_admin.headers).json()
        assert (connection["authType"], connection["displayName"]) == ("custom", "Custom header")
        entry = assert_audited(response, body["connectionId"], "connection.connect_custom", tenant_admin,
                               resource_type="connection")
        assert entry.changes == {"integrationId": custom_integration["id"], "displayName": "Custom header"}
        assert_secret_not_audited(tenant_admin.tenant_id, api_key)

    def test_bad_header_is_invalid_credentials_and_stores_nothing(self, client, tenant_admin, custom_integration):
        response = client.post(item_url(custom_integration["id"], "/connect/custom"),
                               json={"credentials": {"X-API-Key": "not-the-key"}}, headers=tenant_admin.headers)

        assert_error(response, 400, "INVALID_CREDENTIALS", **refused_credentials())
        assert_nothing_stored(custom_integration["id"])

    def test_api_key_provider_accepts_custom_headers(self, client, tenant_admin, api_key_integration):
        response = client.post(item_url(api_key_integration["id"], "/connect/custom"),
                               json={"credentials": {"X-API-Key": "sandbox-api-key"}}, headers=tenant_admin.headers)

        assert_connected(response)
        assert connection_rows(api_key_integration["id"])[0].auth_type == "custom"

    def test_oauth2_provider_refuses_custom_credentials(self, client, tenant_admin, sandbox_integration):
        response = client.post(item_url(sandbox_integration["id"], "/connect/custom"),
                               json={"credentials": {"X-API-Key": "sandbox-api-key"}}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="Sandbox CRM connects with oauth2, not custom",
                     details={"authType": "oauth2"})
        assert_nothing_stored(sandbox_integration["id"])

    def test_empty_credentials_are_a_validation_error(self, client, tenant_admin, custom_integration):
        response = client.post(item_url(custom_integration["id"], "/connect/custom"), json={"credentials": {}},
                               headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert_nothing_stored(custom_integration["id"])


class TestGetConnection:
    def test_never_connected_is_connection_not_found(self, client, tenant_admin, api_key_integration):
        integration_id = api_key_integration["id"]

        response = client.get(item_url(integration_id, "/connection"), headers=tenant_admin.headers)

        assert_error(response, 404, "CONNECTION_NOT_FOUND",
                     message=f"Connection of integration {integration_id} not found", details=None)

    def test_unknown_integration_is_not_found(self, client, tenant_admin):
        integration_id = str(uuid.uuid4())

        response = client.get(item_url(integration_id, "/connection"), headers=tenant_admin.headers)

        # The spec allows any *_NOT_FOUND here; the envelope must be whole either way.
        messages = {"INTEGRATION_NOT_FOUND": f"Integration {integration_id} not found",
                    "CONNECTION_NOT_FOUND": f"Connection of integration {integration_id} not found"}
        code = response.json()["error"]["code"]
        assert code in messages, response.text
        assert_error(response, 404, code, message=messages[code], details=None)

    def test_plain_user_is_denied(self, client, member, connected):
        response = client.get(item_url(connected["integrationId"], "/connection"), headers=member.headers)

        assert_forbidden(response, "integrations:read")


class TestTestConnection:
    def test_working_key_succeeds(self, client, tenant_admin, connected, sandbox):
        response = client.post(item_url(connected["integrationId"], "/connection/test"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"success", "message", "testedAt", "responseTime", "details"}
        assert body["success"] is True
        assert body["message"] == f"GET {sandbox.base_url}/me answered 200 as expected"
        assert isinstance(body["responseTime"], (int, float)) and body["responseTime"] >= 0
        assert RFC3339_UTC.match(body["testedAt"]), body["testedAt"]
        assert body["details"] == SANDBOX_ME | {"authMethod": "api_key"}
        connection = client.get(item_url(connected["integrationId"], "/connection"), headers=tenant_admin.headers).json()
        assert (connection["status"], connection["lastValidatedAt"], connection["validationError"]) == (
            "active", body["testedAt"], None)

    def test_writes_audit_entry(self, client, tenant_admin, connected):
        response = client.post(item_url(connected["integrationId"], "/connection/test"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, connected["connectionId"], "connection.test", tenant_admin,
                               resource_type="connection")
        assert entry.changes == {"error": None}

    def test_refused_key_marks_connection_and_integration_error(self, client, tenant_admin, connected, sandbox,
                                                                monkeypatch):
        monkeypatch.setattr(sandbox.config, "api_keys", ["only-this-key-now"])

        response = client.post(item_url(connected["integrationId"], "/connection/test"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        error = f"GET {sandbox.base_url}/me answered 401, expected a 2xx"
        assert (body["success"], body["error"]) == (False, error)
        assert "message" not in body
        assert body["details"] == {"error": "unauthorized", "message": "Invalid API key"}
        connection = client.get(item_url(connected["integrationId"], "/connection"), headers=tenant_admin.headers).json()
        assert (connection["status"], connection["validationError"]) == ("error", error)
        integration = client.get(item_url(connected["integrationId"]), headers=tenant_admin.headers).json()
        assert (integration["status"], integration["connectionStatus"], integration["lastError"]) == (
            "error", "error", error)
        entry = assert_audited(response, connected["connectionId"], "connection.test", tenant_admin,
                               resource_type="connection", outcome="failure")
        assert entry.changes == {"error": error}

    def test_working_key_again_restores_connected(self, client, tenant_admin, connected, sandbox, monkeypatch):
        with monkeypatch.context() as patch:
            patch.setattr(sandbox.config, "api_keys", ["only-this-key-now"])
            failed = client.post(item_url(connected["integrationId"], "/connection/test"), headers=tenant_admin.headers)
            assert failed.json()["success"] is False

        response = client.post(item_url(connected["integrationId"], "/connection/test"), headers=tenant_admin.headers)

        assert response.json()["success"] is True, response.text
        integration = client.get(item_url(connected["integrationId"]), headers=tenant_admin.headers).json()
        assert (integration["status"], integration["connectionStatus"], integration["lastError"]) == (
            "connected", "active", None)

    def test_disconnected_connection_fails_without_calling(self, client, tenant_admin, connected):
        disconnected = client.post(item_url(connected["integrationId"], "/disconnect"), headers=tenant_admin.headers)
        assert disconnected.status_code == 200, disconnected.text

        response = client.post(item_url(connected["integrationId"], "/connection/test"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["success"], body["error"], body["responseTime"]) == (
            False, "The connection has no credentials; connect it again", None)

    def test_eleventh_test_in_a_minute_is_rate_limited(self, client, tenant_admin, connected, tests_per_minute):
        assert tests_per_minute == 10
        url = item_url(connected["integrationId"], "/connection/test")
        # The first test is counted just after a wall-clock second and the 11th at a half second,
        # so a Retry-After rounded twice (reset up, now down) comes out one second too long.
        time.sleep(1.01 - time.time() % 1)
        for attempt in range(tests_per_minute):
            response = client.post(url, headers=tenant_admin.headers)
            assert response.status_code == 200, (attempt, response.text)
            if attempt == 0:
                first_counted_by = time.time()
        time.sleep((0.5 - time.time() % 1) % 1)
        last_sent_at = time.time()

        response = client.post(url, headers=tenant_admin.headers)

        assert response.status_code == 429, response.text
        retry_after = response.headers["Retry-After"]
        # The first test frees its slot 60 s after it was counted (at the latest `first_counted_by`);
        # the 429 was decided after `last_sent_at`. Rounded up, that is the longest honest wait.
        longest_wait = math.ceil(first_counted_by + 60 - last_sent_at)
        assert re.fullmatch(r"\d+", retry_after) and 1 <= int(retry_after) <= longest_wait, (retry_after, longest_wait)
        error = response.json()["error"]
        expected = {"code": "RATE_LIMIT_EXCEEDED", "message": "Rate limit exceeded. Please try again later.",
                    "retryAfter": int(retry_after), "requestId": response.headers["X-Request-ID"]}
        if "details" in error:  # which limit was hit, when named
            expected["details"] = {"limit": "connection-test"}
        assert error == expected
        assert len(audit_entries(connected["connectionId"], "connection.test")) == tests_per_minute

    def test_rate_limit_is_per_integration(self, client, super_admin, tenant_admin, connected, sandbox,
                                           tests_per_minute):
        url = item_url(connected["integrationId"], "/connection/test")
        for _ in range(tests_per_minute):
            client.post(url, headers=tenant_admin.headers)
        assert client.post(url, headers=tenant_admin.headers).status_code == 429
        provider = static_provider(client, super_admin, sandbox, "api_key")
        other = factories.enable_integration(client, tenant_admin, provider["id"])
        connect_api_key(client, tenant_admin, other["id"])

        response = client.post(item_url(other["id"], "/connection/test"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json()["success"] is True

    def test_never_connected_is_connection_not_found(self, client, tenant_admin, api_key_integration):
        integration_id = api_key_integration["id"]

        response = client.post(item_url(integration_id, "/connection/test"), headers=tenant_admin.headers)

        assert_error(response, 404, "CONNECTION_NOT_FOUND",
                     message=f"Connection of integration {integration_id} not found", details=None)

    def test_plain_user_is_denied(self, client, member, connected):
        response = client.post(item_url(connected["integrationId"], "/connection/test"), headers=member.headers)

        assert_forbidden(response, "connections:write")
        assert connection_row(connected["connectionId"]).last_validated_at is None


class TestDisconnect:
    def test_revokes_and_destroys_the_secret(self, client, tenant_admin, connected):
        integration_id = connected["integrationId"]

        response = client.post(item_url(integration_id, "/disconnect"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"success", "disconnectedAt"}
        assert body["success"] is True
        assert RFC3339_UTC.match(body["disconnectedAt"]), body["disconnectedAt"]
        row = connection_row(connected["connectionId"])
        assert (row.status, row.secret) == ("revoked", None)
        connection = client.get(item_url(integration_id, "/connection"), headers=tenant_admin.headers).json()
        assert (connection["status"], connection["credentialSecretName"]) == ("revoked", None)
        integration = client.get(item_url(integration_id), headers=tenant_admin.headers).json()
        assert (integration["status"], integration["connectionStatus"]) == ("pending", "revoked")

    def test_writes_audit_entry(self, client, tenant_admin, connected, api_key):
        response = client.post(item_url(connected["integrationId"], "/disconnect"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert_audited(response, connected["connectionId"], "connection.disconnect", tenant_admin,
                       resource_type="connection")
        assert_secret_not_audited(tenant_admin.tenant_id, api_key)

    def test_never_connected_is_connection_not_found(self, client, tenant_admin, api_key_integration):
        integration_id = api_key_integration["id"]

        response = client.post(item_url(integration_id, "/disconnect"), headers=tenant_admin.headers)

        assert_error(response, 404, "CONNECTION_NOT_FOUND",
                     message=f"Connection of integration {integration_id} not found", details=None)
        assert integration_row(integration_id).status == "pending"

    def test_plain_user_is_denied(self, client, member, connected):
        response = client.post(item_url(connected["integrationId"], "/disconnect"), headers=member.headers)

        assert_forbidden(response, "connections:write")
        assert connection_row(connected["connectionId"]).status == "active"


class TestUpdateCredentials:
    def test_new_api_key_gets_a_new_secret_name(self, client, tenant_admin, connected, sandbox, monkeypatch):
        new_key = factories.unique("sk-rotated-")
        monkeypatch.setattr(sandbox.config, "api_keys", [*sandbox.config.api_keys, new_key])
        integration_id = connected["integrationId"]

        response = client.patch(item_url(integration_id, "/credentials"),
                                json={"credentialType": "api_key", "credentials": {"apiKey": new_key}},
                                headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"success", "credentialSecretName", "updatedAt"}
        assert (body["success"], body["credentialSecretName"]) == (True, f"connections/{connected['connectionId']}/v2")
        assert new_key not in response.text
        connection = client.get(item_url(integration_id, "/connection"), headers=tenant_admin.headers).json()
        assert (connection["status"], connection["credentialSecretName"]) == (
            "active", f"connections/{connected['connectionId']}/v2")
        test = client.post(item_url(integration_id, "/connection/test"), headers=tenant_admin.headers)
        assert test.json()["success"] is True, test.text

    def test_writes_audit_entry_without_the_key(self, client, tenant_admin, connected, api_key):
        response = client.patch(item_url(connected["integrationId"], "/credentials"),
                                json={"credentialType": "api_key", "credentials": {"apiKey": api_key}},
                                headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        entry = assert_audited(response, connected["connectionId"], "connection.credentials_update", tenant_admin,
                               resource_type="connection")
        assert entry.changes["credentialType"] == "api_key"
        assert_secret_not_audited(tenant_admin.tenant_id, api_key)

    @pytest.mark.parametrize("credentials", [{"username": "sandbox-user"}, {"apiKey": "k", "extra": "x"}],
                             ids=["wrong-key", "extra-key"])
    def test_keys_that_do_not_fit_the_type_are_a_validation_error(self, client, tenant_admin, connected, credentials):
        response = client.patch(item_url(connected["integrationId"], "/credentials"),
                                json={"credentialType": "api_key", "credentials": credentials},
                                headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="api_key credentials take ['apiKey'] (optional [])",
                     details={"field": "credentials"})
        assert connection_row(connected["connectionId"]).secret_version == 1

    def test_refused_key_is_invalid_credentials_and_keeps_the_old_one(self, client, tenant_admin, connected):
        response = client.patch(item_url(connected["integrationId"], "/credentials"),
                                json={"credentialType": "api_key", "credentials": {"apiKey": "not-the-key"}},
                                headers=tenant_admin.headers)

        assert_error(response, 400, "INVALID_CREDENTIALS", **refused_credentials())
        row = connection_row(connected["connectionId"])
        assert (row.status, row.secret_version) == ("active", 1)

    def test_type_the_provider_does_not_take_is_refused(self, client, tenant_admin, connected):
        response = client.patch(item_url(connected["integrationId"], "/credentials"),
                                json={"credentialType": "basic",
                                      "credentials": {"username": "sandbox-user", "password": "sandbox-password"}},
                                headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="Sandbox CRM connects with api_key, not basic",
                     details={"authType": "api_key"})
        assert connection_row(connected["connectionId"]).secret_version == 1

    def test_plain_user_is_denied(self, client, member, connected):
        response = client.patch(item_url(connected["integrationId"], "/credentials"),
                                json={"credentialType": "api_key", "credentials": {"apiKey": "sandbox-api-key"}},
                                headers=member.headers)

        assert_forbidden(response, "connections:write")
        assert connection_row(connected["connectionId"]).secret_version == 1
