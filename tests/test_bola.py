"""Broken object-level authorization: every operation on a tenant-owned id, called by another
tenant's admin, answers 404 exactly like an unknown id and changes nothing.

The operations are walked from the spec, so a new operation under a tenant-owned path is
covered without touching this file.
"""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import select

from persistence.db import transaction
from server.app import load_spec
from persistence.models import (
    AuditEntry,
    Connection,
    Integration,
    OAuthState,
    RefreshToken,
    User,
)
from tests import factories
from tests.handlers.test_tenant_integrations import (
    assert_error,
    connect_api_key,
    static_provider,
)

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
INTEGRATION_PATHS = ("/tenant/integrations/{id}", "/user/integrations/{id}", "/integrations/{id}/")
USER_PATHS = ("/tenant/users/{userId}",)
# What the walk must find at least (it finds new operations by itself).
KNOWN_INTEGRATION_OPERATIONS = {
    "get_tenant_integration", "update_tenant_integration", "delete_tenant_integration",
    "activate_tenant_integration", "deactivate_tenant_integration", "start_oauth_connection", "connect_api_key",
    "connect_basic", "connect_custom", "get_connection", "test_connection", "disconnect", "update_credentials",
    "start_user_oauth_connection", "get_user_connection", "disconnect_user_connection", "search_integration",
    "list_records", "create_record", "get_record", "update_record", "delete_record",
    "proxy_get", "proxy_post", "proxy_put", "proxy_patch", "proxy_delete",
}
KNOWN_USER_OPERATIONS = {"get_user", "update_user", "delete_user"}


def operations(prefixes: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """(method, path, operation) of every spec operation whose path starts with one of `prefixes`."""
    spec = load_spec()
    found = []
    for path, item in spec["paths"].items():
        if path.startswith(prefixes):
            found += [(method, path, item[method]) for method in HTTP_METHODS if method in item]
    return found


def example_body(operation: dict) -> dict | None:
    """The JSON request body example of the operation's schema, or None when it takes no body."""
    if "requestBody" not in operation:
        return None
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "example" in schema, f"{operation['operationId']}: the request schema has no example"
    return schema["example"]


def param(walked: list[tuple[str, str, dict]]) -> list:
    return [pytest.param(method, path, operation, id=f"{method.upper()} {path}") for method, path, operation in walked]


INTEGRATION_OPERATIONS = operations(INTEGRATION_PATHS)
USER_OPERATIONS = operations(USER_PATHS)


def snapshot_integration(integration_id: str) -> dict:
    """Everything a cross-tenant call could touch: the integration, its connections, states and audit."""
    key = uuid.UUID(integration_id)
    with transaction() as session:
        connections = session.exec(select(Connection).where(Connection.integration_id == key)).all()
        audited = {integration_id} | {str(row.id) for row in connections}
        return {
            "integration": session.get(Integration, key).model_dump(),
            "connections": sorted((row.model_dump() for row in connections), key=lambda row: str(row["id"])),
            "oauth_states": len(session.exec(select(OAuthState).where(OAuthState.integration_id == key)).all()),
            "audit": len(session.exec(select(AuditEntry).where(AuditEntry.resource_id.in_(audited))).all()),
        }


def snapshot_user(user_id: str) -> dict:
    key = uuid.UUID(user_id)
    with transaction() as session:
        return {
            "user": session.get(User, key).model_dump(),
            "refresh_tokens": len(session.exec(select(RefreshToken).where(RefreshToken.user_id == key)).all()),
            "audit": len(session.exec(select(AuditEntry).where(AuditEntry.resource_id == user_id)).all()),
        }


def required_query(operation: dict) -> dict:
    """The operation's required query parameters at their examples: an attacker sends a valid request."""
    return {param["name"]: param.get("example", param["schema"].get("example"))
            for param in operation.get("parameters", []) if param.get("in") == "query" and param.get("required")}


def call(client, method: str, path: str, operation: dict, caller: factories.Account, **ids: str):
    # Ids below the integration (a record, a proxied provider path) are made up: the integration answers first.
    ids = {"recordId": str(uuid.uuid4()), "path": "me", **ids}
    url = "/api/v1" + path.format(**ids)
    return client.request(method.upper(), url, json=example_body(operation), params=required_query(operation),
                          headers=caller.headers, follow_redirects=False)


@pytest.fixture
def victim(client, super_admin, tenant_admin, sandbox) -> dict:
    """Tenant A's user-scoped integration, connected with an API key (so a connection with a secret exists)."""
    provider = static_provider(client, super_admin, sandbox, "api_key")
    integration = factories.enable_integration(client, tenant_admin, provider["id"], userScoped=True)
    connect_api_key(client, tenant_admin, integration["id"])
    return integration


def test_the_walk_finds_every_known_operation():
    assert KNOWN_INTEGRATION_OPERATIONS <= {operation["operationId"] for _, _, operation in INTEGRATION_OPERATIONS}
    assert KNOWN_USER_OPERATIONS <= {operation["operationId"] for _, _, operation in USER_OPERATIONS}


@pytest.mark.parametrize(("method", "path", "operation"), param(INTEGRATION_OPERATIONS))
def test_another_tenants_integration_is_not_found_and_unchanged(client, tenant_admin, other_tenant_admin, victim,
                                                                 method, path, operation):
    integration_id = victim["id"]
    before = snapshot_integration(integration_id)
    assert before["integration"]["status"] == "connected" and before["connections"][0]["secret"]

    response = call(client, method, path, operation, other_tenant_admin, id=integration_id)

    messages = {"INTEGRATION_NOT_FOUND": f"Integration {integration_id} not found",
                "CONNECTION_NOT_FOUND": f"Connection of integration {integration_id} not found"}
    code = response.json().get("error", {}).get("code") if response.status_code == 404 else None
    assert code in messages, (response.status_code, response.text)
    assert_error(response, 404, code, message=messages[code], details=None)
    assert snapshot_integration(integration_id) == before


@pytest.mark.parametrize(("method", "path", "operation"), param(USER_OPERATIONS))
def test_another_tenants_user_is_not_found_and_unchanged(client, member, other_tenant_admin, method, path, operation):
    before = snapshot_user(member.user_id)

    response = call(client, method, path, operation, other_tenant_admin, userId=member.user_id)

    assert_error(response, 404, "USER_NOT_FOUND", message=f"User {member.user_id} not found", details=None)
    assert snapshot_user(member.user_id) == before
