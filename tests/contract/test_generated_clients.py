"""Clients generated from the published bundle, used for real.

Python: openapi-python-client generates a client from build/openapi.yaml into build/ (never
committed), and a partner's whole flow runs through that client alone against the hub served
over loopback HTTP. TypeScript: openapi-typescript generates types from the bundle and
clients/typescript/usage.ts must type-check against them with `tsc --noEmit` (mandatory in CI).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests import factories
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.contract.spec_tools import BUILD, ROOT, run

PYTHON_CLIENT = BUILD / "python-client"
TYPESCRIPT_TYPES = BUILD / "typescript" / "api.d.ts"
GENERATOR_CONFIG = "project_name_override: hub-client\npackage_name_override: hub_client\npost_hooks: []\n"


@pytest.fixture(scope="module")
def hub_client(bundle_output):
    """The generated `hub_client` package, imported from build/python-client/."""
    generator = Path(sys.executable).with_name("openapi-python-client")
    assert generator.exists(), "openapi-python-client is not installed (pyproject.toml [dev] extra)"
    shutil.rmtree(PYTHON_CLIENT, ignore_errors=True)
    PYTHON_CLIENT.mkdir(parents=True)
    config = PYTHON_CLIENT / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    result = run([str(generator), "generate", "--path", str(BUILD / "openapi.yaml"), "--output-path",
                  str(PYTHON_CLIENT / "hub_client"), "--meta", "none", "--config", str(config), "--fail-on-warning"])
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(PYTHON_CLIENT))
    try:
        yield importlib.import_module("hub_client")
    finally:
        sys.path.remove(str(PYTHON_CLIENT))
        for name in [n for n in sys.modules if n == "hub_client" or n.startswith("hub_client.")]:
            del sys.modules[name]


def test_partner_flow_through_the_generated_python_client(hub_client, live_hub, sandbox):
    """Register, log in, refresh, browse the catalog, enable and connect an integration with an
    API key, test the connection and read the audit log: generated client only, real HTTP."""
    from hub_client import AuthenticatedClient, Client
    from hub_client.api.audit_logs import list_tenant_audit_logs
    from hub_client.api.auth import get_me, login, refresh, register
    from hub_client.api.catalog import list_catalog
    from hub_client.api.connections import (
        connect_api_key,
        get_connection,
        test_connection,
    )
    from hub_client.api.providers import create_provider
    from hub_client.api.tenant_integrations import create_tenant_integration
    from hub_client.models import (
        ApiKeyConnect,
        AuditPage,
        AuthTokens,
        Connected,
        Connection,
        ConnectionCheck,
        Integration,
        IntegrationCreate,
        IntegrationProvider,
        LoginRequest,
        Me,
        ProviderCreate,
        ProviderList,
        RefreshRequest,
        RegisterRequest,
    )

    base_url = f"{live_hub}/api/v1"

    def signed_in(tokens: AuthTokens) -> AuthenticatedClient:
        return AuthenticatedClient(base_url=base_url, token=tokens.access_token, raise_on_unexpected_status=True)

    anonymous = Client(base_url=base_url, raise_on_unexpected_status=True)

    # The platform admin adds a provider pointing at the sandbox (API key in X-API-Key).
    admin_tokens = login.sync(client=anonymous, body=LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
    assert isinstance(admin_tokens, AuthTokens), admin_tokens
    fields = factories.sandbox_provider_fields(sandbox.base_url, authType="api_key", oauthConfig=None,
                                               name="Partner Sandbox CRM", displayName="Partner Sandbox CRM")
    provider = create_provider.sync(client=signed_in(admin_tokens), body=ProviderCreate.from_dict(factories.provider_body(**fields)))
    assert isinstance(provider, IntegrationProvider), provider
    assert provider.api_key_header == "X-API-Key"

    # A partner registers a tenant, logs in, and rotates its refresh token.
    email, password = f"{factories.unique('partner')}@example.com", "partner-password-42"
    registered = register.sync(client=anonymous, body=RegisterRequest(
        email=email, password=password, name="Pat Partner", tenant_name=factories.unique("Partner Co ")))
    assert isinstance(registered, AuthTokens), registered
    tokens = login.sync(client=anonymous, body=LoginRequest(email=email, password=password))
    assert isinstance(tokens, AuthTokens) and tokens.token_type == "Bearer", tokens
    rotated = refresh.sync(client=anonymous, body=RefreshRequest(refresh_token=tokens.refresh_token))
    assert isinstance(rotated, AuthTokens) and rotated.refresh_token != tokens.refresh_token, rotated
    partner = signed_in(rotated)
    me = get_me.sync(client=partner)
    assert isinstance(me, Me) and me.email == email and me.role == "tenant_admin", me

    # The catalog lists the new provider; the partner enables it and connects it with an API key.
    catalog = list_catalog.sync(client=partner, search=provider.provider, limit=10)
    assert isinstance(catalog, ProviderList), catalog
    assert [p.id for p in catalog.providers] == [provider.id]
    integration = create_tenant_integration.sync(client=partner, body=IntegrationCreate(
        integration_id=provider.id, name="Partner CRM"))
    assert isinstance(integration, Integration) and integration.status == "pending", integration
    connected = connect_api_key.sync(integration.id, client=partner, body=ApiKeyConnect(api_key="sandbox-api-key"))
    assert isinstance(connected, Connected) and connected.status == "active", connected
    connection = get_connection.sync(integration.id, client=partner)
    assert isinstance(connection, Connection) and connection.auth_type == "api_key", connection
    check = test_connection.sync(integration.id, client=partner)
    assert isinstance(check, ConnectionCheck) and check.success is True, check

    # The audit log tells the story.
    page = list_tenant_audit_logs.sync(client=partner, limit=50)
    assert isinstance(page, AuditPage), page
    actions = {entry.action for entry in page.items}
    assert {"tenant.register", "auth.login", "integration.create", "connection.connect_api_key",
            "connection.test"} <= actions, sorted(actions)
    assert all(entry.tenant_id == me.tenant_id and entry.outcome == "success" for entry in page.items)
    created = next(entry for entry in page.items if entry.action == "integration.create")
    assert created.resource_id == str(integration.id)


def _node_tools() -> dict[str, Path] | None:
    tools = {name: ROOT / "node_modules" / ".bin" / name for name in ("openapi-typescript", "tsc")}
    if shutil.which("node") and all(path.exists() for path in tools.values()):
        return tools
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Node.js and the npm dev tools (npm ci) are required in CI for the TypeScript check", pytrace=False)
    pytest.skip("Node.js or node_modules missing (run `npm ci`): TypeScript client check skipped")
    return None


def test_typescript_usage_type_checks_against_generated_types(bundle_output):
    """openapi-typescript types from the bundle; clients/typescript/usage.ts compiles with them
    (its @ts-expect-error lines prove the types are precise, not `any`)."""
    tools = _node_tools()
    TYPESCRIPT_TYPES.parent.mkdir(parents=True, exist_ok=True)
    run([str(tools["openapi-typescript"]), str(BUILD / "openapi.yaml"), "--output", str(TYPESCRIPT_TYPES)])
    assert "IntegrationProvider" in TYPESCRIPT_TYPES.read_text()
    run([str(tools["tsc"]), "--noEmit", "-p", str(ROOT / "clients" / "typescript")])
