"""/tenant/integrations/{id}/proxy/{path} (tag `proxy`) over real HTTP: against a sandbox of this
module's own (OAuth credentials injected, 429 passthrough, expiry) and an echo provider that
answers with what it received (what the hub forwards, what it never echoes back)."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, Provider
from tests import factories
from tests.echo_provider import EchoProvider
from tests.handlers.test_providers import assert_error
from tests.records_support import (  # noqa: F401 - fixtures
    BASE,
    connected_integration,
    data_provider,
    integration,
    own_sandbox,
    provider,
    set_faults,
)

ECHO_KEY = "echo-provider-api-key-0123456789"


@pytest.fixture(scope="module")
def echo():
    server = EchoProvider().start()
    yield server
    server.stop()


@pytest.fixture
def echo_integration(client, super_admin, tenant_admin, echo) -> dict:
    """An integration of a provider that echoes every request, connected with an API key in X-API-Key."""
    provider = factories.create_provider(client, super_admin, apiBaseUrl=echo.base_url + "/v1", apiKeyHeader="X-API-Key",
                                         testRequest={"method": "GET", "path": "/me", "expectedStatus": 200})
    integration = factories.enable_integration(client, tenant_admin, provider["id"])
    response = client.post(f"{BASE}/{integration['id']}/connect/api-key", json={"apiKey": ECHO_KEY},
                           headers=tenant_admin.headers)
    assert response.status_code == 200, response.text
    return integration


@pytest.fixture(autouse=True)
def no_faults(own_sandbox):
    set_faults(own_sandbox)
    yield
    set_faults(own_sandbox)


def proxy(client, account, integration: dict, method: str, path: str, **kwargs):
    return client.request(method, f"{BASE}/{integration['id']}/proxy/{path}", headers={**account.headers,
                          **kwargs.pop("headers", {})}, **kwargs)


def proxy_audit(admin) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.tenant_id == uuid.UUID(admin.tenant_id),
                                                          AuditEntry.action == "proxy.request")).all())


class TestProxyToTheSandbox:
    def test_injects_the_connections_oauth_token(self, client, tenant_admin, integration):
        response = proxy(client, tenant_admin, integration, "GET", "me")
        assert response.status_code == 200, response.text
        assert response.json()["authMethod"] == "oauth2"
        assert response.headers["x-proxy-source"] == "provider"

    def test_forwards_a_nested_path_and_the_query(self, client, tenant_admin, integration, own_sandbox):
        response = proxy(client, tenant_admin, integration, "GET", "accounts", params={"limit": "2"})
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2
        one = proxy(client, tenant_admin, integration, "GET", "accounts/acc_0003")
        assert one.json() == own_sandbox.state.get_record("accounts", "acc_0003")

    def test_a_provider_error_passes_through(self, client, tenant_admin, integration):
        response = proxy(client, tenant_admin, integration, "GET", "accounts/acc_missing")
        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "message": "No account acc_missing"}
        assert response.headers["x-proxy-source"] == "provider"

    def test_a_provider_429_passes_through_with_its_retry_after(self, client, tenant_admin, integration, own_sandbox):
        set_faults(own_sandbox, rateLimitEvery=1, retryAfter=7)
        response = proxy(client, tenant_admin, integration, "GET", "accounts")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"] == "rate_limit_exceeded"
        assert response.headers["x-proxy-source"] == "provider"

    def test_writes_reach_the_provider_and_are_audited(self, client, tenant_admin, integration, own_sandbox):
        created = proxy(client, tenant_admin, integration, "POST", "accounts", json={"name": "Via Proxy"})
        assert created.status_code == 201, created.text
        account_id = created.json()["id"]
        assert created.headers["location"] == f"/accounts/{account_id}"
        patched = proxy(client, tenant_admin, integration, "PATCH", f"accounts/{account_id}", json={"industry": "media"})
        assert patched.status_code == 200 and own_sandbox.state.get_record("accounts", account_id)["industry"] == "media"
        deleted = proxy(client, tenant_admin, integration, "DELETE", f"accounts/{account_id}")
        assert deleted.status_code == 204 and deleted.content == b""
        proxy(client, tenant_admin, integration, "GET", "me")  # reads are not audited
        entries = sorted(proxy_audit(tenant_admin), key=lambda entry: entry.seq)
        assert [(e.changes["method"], e.changes["path"], e.changes["providerStatus"], e.outcome) for e in entries] == [
            ("POST", "/accounts", 201, "success"), ("PATCH", f"/accounts/{account_id}", 200, "success"),
            ("DELETE", f"/accounts/{account_id}", 204, "success")]
        assert all(e.resource_id == integration["id"] for e in entries)

    def test_a_refused_refreshed_token_expires_the_connection(self, client, tenant_admin, integration, own_sandbox):
        set_faults(own_sandbox, unauthorizedEvery=1)
        response = proxy(client, tenant_admin, integration, "GET", "me")
        assert_error(response, 409, "CONNECTION_EXPIRED",
                     message="The provider refused a freshly refreshed access token (401); authorize the connection again",
                     details={"providerStatus": 401})

    def test_one_401_is_cured_by_a_refresh(self, client, tenant_admin, integration, own_sandbox):
        set_faults(own_sandbox, unauthorizedEvery=2)
        assert proxy(client, tenant_admin, integration, "GET", "me").status_code == 200
        response = proxy(client, tenant_admin, integration, "GET", "me")
        assert response.status_code == 200 and response.json()["authMethod"] == "oauth2"

    def test_ssrf_guard_refuses_a_private_address_not_allowlisted(self, client, tenant_admin, provider, integration,
                                                                  own_sandbox):
        port = own_sandbox.base_url.rsplit(":", 1)[1]
        with transaction() as session:  # as if the provider's host now resolved to another loopback address
            row = session.get(Provider, uuid.UUID(provider["id"]))
            row.api_base_url = f"http://127.0.0.2:{port}"
            session.add(row)
        response = proxy(client, tenant_admin, integration, "GET", "me")
        assert_error(response, 502, "OUTBOUND_REFUSED", details=None)
        assert "127.0.0.2" in response.json()["error"]["message"]

    def test_not_connected(self, client, tenant_admin, provider):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        response = proxy(client, tenant_admin, integration, "GET", "me")
        assert_error(response, 409, "NOT_CONNECTED",
                     message="The integration has no connection for the tenant; connect it first", details=None)

    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
    def test_another_tenant_gets_404_and_nothing_reaches_the_provider(self, client, tenant_admin, other_tenant_admin,
                                                                      integration, own_sandbox, method):
        before = own_sandbox.state.listable("accounts", include_deleted=True)
        kwargs = {"json": {"name": "Theirs"}} if method in ("POST", "PUT", "PATCH") else {}
        response = proxy(client, other_tenant_admin, integration, method, "accounts", **kwargs)
        assert_error(response, 404, "INTEGRATION_NOT_FOUND", message=f"Integration {integration['id']} not found",
                     details=None)
        assert own_sandbox.state.listable("accounts", include_deleted=True) == before
        assert proxy_audit(other_tenant_admin) == []

    def test_a_plain_user_is_refused(self, client, member, integration):
        response = proxy(client, member, integration, "GET", "me")
        assert_error(response, 403, "PERMISSION_DENIED", details={"requiredScopes": ["proxy:use"]})


class TestProxyForwarding:
    def test_only_the_hubs_credentials_reach_the_provider_and_never_come_back(self, client, tenant_admin,
                                                                              echo_integration, echo):
        response = proxy(client, tenant_admin, echo_integration, "GET", "things/42", params={"a": "1", "b": "x y"},
                         headers={"Cookie": "session=secret-cookie", "Accept": "application/json",
                                  "If-None-Match": '"v1"', "X-Custom": "dropped"})
        assert response.status_code == 200, response.text
        received = echo.requests[-1]
        assert received["path"] == "/v1/things/42" and received["query"] == [("a", "1"), ("b", "x y")]
        assert received["headers"]["x-api-key"] == ECHO_KEY  # injected
        assert "authorization" not in received["headers"]  # the caller's bearer token stayed at the hub
        assert "cookie" not in received["headers"] and "x-custom" not in received["headers"]
        assert received["headers"]["if-none-match"] == '"v1"'
        echoed = response.json()
        assert echoed["headers"]["x-api-key"] == "[REDACTED]"  # never echoed back
        assert ECHO_KEY not in response.text

    def test_forwards_a_json_body(self, client, tenant_admin, echo_integration, echo):
        response = proxy(client, tenant_admin, echo_integration, "PUT", "things/42", json={"name": "n", "n": [1, 2]})
        assert response.status_code == 200, response.text
        assert echo.requests[-1]["method"] == "PUT" and echo.requests[-1]["body"] == {"name": "n", "n": [1, 2]}

    def test_returns_the_providers_rate_limit_headers(self, client, tenant_admin, echo_integration):
        response = proxy(client, tenant_admin, echo_integration, "GET", "status/200",
                         params={"set:X-RateLimit-Remaining": "41", "set:X-RateLimit-Limit": "5000",
                                 "set:Set-Cookie": "provider=session"})
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining"] == "41" and response.headers["x-ratelimit-limit"] == "5000"
        assert "set-cookie" not in response.headers

    def test_a_non_json_answer_passes_through(self, client, tenant_admin, echo_integration):
        response = proxy(client, tenant_admin, echo_integration, "GET", "bytes/10")
        assert response.status_code == 200 and response.content == b"a" * 10
        assert response.headers["content-type"].startswith("text/plain")

    def test_an_answer_over_the_size_cap_is_refused(self, client, tenant_admin, echo_integration, settings):
        limit = 1024 * 1024
        response = proxy(client, tenant_admin, echo_integration, "GET", f"bytes/{limit + 1}")
        assert_error(response, 502, "PROVIDER_RESPONSE_TOO_LARGE", details={"limitBytes": limit})

    # The client normalizes literal dot segments; these reach the hub and decode to `a/../b`, `..`, `a\\b`.
    @pytest.mark.parametrize("path", ["a%2F..%2Fb", "a/%2e%2e%2Fadmin", "..%2Fadmin", "a%5Cb"])
    def test_dot_segments_are_refused(self, client, tenant_admin, echo_integration, echo, path):
        count = len(echo.requests)
        response = proxy(client, tenant_admin, echo_integration, "GET", path)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"] == {"field": "path"}
        assert len(echo.requests) == count

    def test_a_method_the_proxy_does_not_take_is_405_with_its_allow_header(self, client, tenant_admin, echo_integration):
        response = proxy(client, tenant_admin, echo_integration, "OPTIONS", "things/42/parts")
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH, POST, PUT"
