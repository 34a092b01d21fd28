"""connectors.provider_api.send over real HTTP against a sandbox provider: credentials injected,
one forced refresh after a 401, expiry after a second 401, SSRF guard, size cap, timeout, paths."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from sqlmodel import select

from connectors import provider_api
from connectors.outbound import OutboundPolicy
from persistence import connections
from persistence.db import transaction
from persistence.errors import InvalidInput, NotFound
from persistence.models import Connection, Event, Integration
from tests import factories
from tests.records_support import connected_integration, data_provider, flows, integration, own_sandbox, provider, set_faults  # noqa: F401


@pytest.fixture(autouse=True)
def no_faults(own_sandbox):
    set_faults(own_sandbox)
    yield
    set_faults(own_sandbox)


def send(admin, integration: dict, ctx=None, **kwargs) -> provider_api.ProviderResponse:
    kwargs.setdefault("method", "GET")
    kwargs.setdefault("path", "/me")
    return provider_api.send(ctx or flows(), tenant_id=uuid.UUID(admin.tenant_id),
                             integration_id=uuid.UUID(integration["id"]), **kwargs)


def connection_row(integration: dict) -> Connection:
    with transaction() as session:
        return session.exec(select(Connection).where(Connection.integration_id == uuid.UUID(integration["id"]))).one()


def events_of(integration: dict, event_type: str) -> list[Event]:
    row = connection_row(integration)
    with transaction() as session:
        stmt = select(Event).where(Event.tenant_id == row.tenant_id, Event.type == event_type)
        return list(session.exec(stmt).all())


class TestSend:
    def test_injects_the_connections_oauth_token(self, tenant_admin, integration):
        response = send(tenant_admin, integration)
        assert response.status == 200
        assert response.json()["authMethod"] == "oauth2"
        assert response.ok and not response.refreshed
        assert response.url.endswith("/me")

    def test_callers_authorization_and_cookie_are_dropped(self, tenant_admin, integration):
        response = send(tenant_admin, integration,
                        headers={"Authorization": "Bearer forged", "Cookie": "a=b", "X-API-Key": "sandbox-api-key"})
        assert response.status == 200
        assert response.json()["authMethod"] == "oauth2"

    def test_sends_a_json_body_and_query(self, tenant_admin, integration, own_sandbox):
        created = send(tenant_admin, integration, method="POST", path="/accounts", json={"name": "Provider Api Ltd"})
        assert created.status == 201
        account = created.json()
        assert own_sandbox.state.get_record("accounts", account["id"])["name"] == "Provider Api Ltd"
        listed = send(tenant_admin, integration, path="/accounts", params={"limit": "1"})
        assert listed.status == 200 and len(listed.json()["data"]) == 1

    def test_a_provider_error_is_returned_not_raised(self, tenant_admin, integration):
        response = send(tenant_admin, integration, path="/accounts/acc_missing")
        assert response.status == 404
        with pytest.raises(provider_api.ProviderError) as raised:
            response.raise_for_status("GET /accounts/acc_missing")
        assert raised.value.status == 502 and raised.value.code == "PROVIDER_ERROR"
        assert raised.value.details["providerStatus"] == 404
        assert "not_found" in raised.value.details["providerError"]

    def test_429_is_returned_with_its_retry_after(self, tenant_admin, integration, own_sandbox):
        set_faults(own_sandbox, rateLimitEvery=1, retryAfter=7)
        response = send(tenant_admin, integration)
        assert response.status == 429
        assert response.retry_after() == 7.0
        with pytest.raises(provider_api.ProviderError) as raised:
            response.raise_for_status("GET /me")
        assert raised.value.details["retryAfter"] == 7


class TestUnauthorized:
    def test_one_forced_refresh_then_retry(self, tenant_admin, integration, own_sandbox):
        before = connections.credentials(connection_row(integration))
        set_faults(own_sandbox, unauthorizedEvery=2)
        assert send(tenant_admin, integration).status == 200  # bearer request 1
        response = send(tenant_admin, integration)  # request 2 finds its token expired; the retry is 3
        assert response.status == 200 and response.refreshed
        after = connections.credentials(connection_row(integration))
        assert after["accessToken"] != before["accessToken"]
        assert connection_row(integration).status == "active"

    def test_a_second_401_expires_the_connection(self, tenant_admin, integration, own_sandbox):
        set_faults(own_sandbox, unauthorizedEvery=1)
        with pytest.raises(provider_api.ConnectionExpired) as raised:
            send(tenant_admin, integration)
        assert raised.value.status == 409 and raised.value.code == "CONNECTION_EXPIRED"
        row = connection_row(integration)
        assert row.status == "expired"
        assert "freshly refreshed" in row.validation_error
        assert len(events_of(integration, "connection.expired")) == 1
        with transaction() as session:
            assert session.get(Integration, uuid.UUID(integration["id"])).status == "error"
        set_faults(own_sandbox)
        with pytest.raises(provider_api.ConnectionExpired):  # refused before any call
            send(tenant_admin, integration)

    def test_static_credentials_refused_mark_the_connection_error(self, client, tenant_admin, provider, own_sandbox):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        with transaction() as session:
            row = session.get(Integration, uuid.UUID(integration["id"]))
            connections.store(session, integration=row, user_id=None, auth_type="api_key",
                              credentials={"apiKey": "not-the-sandbox-key"})
        with pytest.raises(provider_api.CredentialsRejected) as raised:
            send(tenant_admin, integration)
        assert raised.value.status == 502 and raised.value.details == {"providerStatus": 401}
        assert connection_row(integration).status == "error"


class TestRefusals:
    def test_unknown_and_other_tenants_integration_is_not_found(self, tenant_admin, other_tenant_admin, integration):
        with pytest.raises(NotFound):
            send(other_tenant_admin, integration)
        with pytest.raises(NotFound):
            send(tenant_admin, {"id": str(uuid.uuid4())})

    def test_not_connected(self, client, tenant_admin, provider):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        with pytest.raises(provider_api.NotConnected) as raised:
            send(tenant_admin, integration)
        assert raised.value.status == 409 and raised.value.code == "NOT_CONNECTED"

    def test_a_users_connection_is_not_the_tenants(self, tenant_admin, member, integration):
        with pytest.raises(provider_api.NotConnected):
            send(tenant_admin, integration, user_id=uuid.UUID(member.user_id))

    @pytest.mark.parametrize("path", ["/../admin", "/a/%2e%2e/b", "/a\\b", "/me?x=1", "/me#f", "/a/./b", "/a\x00"])
    def test_paths_that_are_not_plain_are_refused(self, tenant_admin, integration, path):
        with pytest.raises(InvalidInput) as raised:
            send(tenant_admin, integration, path=path)
        assert raised.value.details == {"field": "path"}

    def test_ssrf_guard_refuses_a_private_address_not_allowlisted(self, tenant_admin, integration):
        strict = dataclasses.replace(flows(), policy=OutboundPolicy())
        with pytest.raises(provider_api.OutboundBlocked) as raised:
            send(tenant_admin, integration, ctx=strict)
        assert raised.value.status == 502 and raised.value.code == "OUTBOUND_REFUSED"
        assert "127.0.0.1" in raised.value.message

    def test_response_size_cap(self, tenant_admin, integration):
        with pytest.raises(provider_api.ResponseTooLarge) as raised:
            send(tenant_admin, integration, path="/accounts", params={"limit": "100"}, max_response_bytes=1000)
        assert raised.value.details == {"limitBytes": 1000}

    def test_timeout(self, tenant_admin, integration, own_sandbox):
        set_faults(own_sandbox, latencyMs=1500)
        with pytest.raises(provider_api.ProviderTimeout) as raised:
            send(tenant_admin, integration, timeout=0.3)
        assert raised.value.status == 504 and raised.value.code == "PROVIDER_TIMEOUT"
