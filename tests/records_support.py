"""Shared set-up of the provider API, records and proxy tests: a sandbox provider with the sync
definitions of the bundled sandbox CRM, connected by OAuth (tenant or user connection), and the
sandbox's control endpoints (faults, records)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from handlers import views
from persistence import bootstrap
from server import runtime
from tests import factories
from tests.handlers.test_oauth_flow import connect
from tests.handlers.test_user_connections import connect_own_account

BASE = "/api/v1/tenant/integrations"


@pytest.fixture(scope="module")
def own_sandbox(settings) -> Iterator:
    """A sandbox of this module's own: its writes and fault plans cannot disturb other modules' data."""
    from connectors.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(redirect_uris=[settings.oauth_redirect_uri])).start()
    yield server
    server.stop()


def sandbox_entities(base_url: str) -> list[dict]:
    """The `availableEntities` (Account, Contact, with sync and write definitions) of the bundled sandbox CRM."""
    document = bootstrap.sandbox_documents(base_url, client_id="hub-sandbox-client", client_secret="x")[0]
    return document["availableEntities"]


def data_provider(client, super_admin, sandbox, **overrides) -> dict:
    """Create a sandbox provider (OAuth) whose entities declare sync and write-through."""
    fields = factories.sandbox_provider_fields(sandbox.base_url, availableEntities=sandbox_entities(sandbox.base_url),
                                               supportedSyncDirections=["pull", "push", "bidirectional"],
                                               capabilities=["read", "write", "sync"])
    return factories.create_provider(client, super_admin, **(fields | overrides))


@pytest.fixture
def provider(client, super_admin, own_sandbox) -> dict:
    """A data provider (sync and write definitions) of the module's own sandbox."""
    return data_provider(client, super_admin, own_sandbox)


@pytest.fixture
def integration(client, tenant_admin, provider) -> dict:
    """`tenant_admin`'s integration of `provider`, connected by OAuth."""
    return connected_integration(client, tenant_admin, provider)


def connected_integration(client, admin, provider: dict, **overrides) -> dict:
    """Enable `provider` for `admin`'s tenant and connect it by OAuth at the sandbox; return the integration."""
    integration = factories.enable_integration(client, admin, provider["id"], **overrides)
    if not integration.get("userScoped"):
        connect(client, admin, integration)
    return integration


def connect_user(client, account, integration: dict) -> None:
    """Connect `account`'s own sandbox account to a user-scoped integration."""
    answer = connect_own_account(client, account, integration["id"])
    assert answer.status_code == 302 and "status=connected" in answer.headers["location"], answer.text


def flows():
    """The FlowContext the handlers use (policy of the running app, the API view of a connection)."""
    return runtime.get().flows(present_connection=views.connection)


def set_faults(sandbox, **faults: int) -> None:
    """Replace the sandbox's fault plan (camelCase fields); an empty call clears it."""
    response = httpx.post(f"{sandbox.base_url}/_control/faults", json=faults, timeout=5)
    assert response.status_code == 200, response.text


def sandbox_record(sandbox, kind: str, record_id: str) -> dict | None:
    """Read one live record straight from the sandbox's state (None when unknown or deleted)."""
    return sandbox.state.get_record(kind, record_id)


def uuid_of(value: str) -> uuid.UUID:
    return uuid.UUID(value)
