"""Each role against each operation gets exactly what the spec declares.

A role may call an operation iff the scopes its role grants (`x-role-scopes`) cover the
operation's `x-required-scopes`; otherwise 403 PERMISSION_DENIED. Ids are random, so allowed
calls touch nothing that exists (they answer 404/400/... but never PERMISSION_DENIED).
"""

from __future__ import annotations

import uuid

import pytest

from server.app import API_SPEC, HTTP_METHODS, load_spec
from tests import factories

SPEC = load_spec(API_SPEC)
ROLE_SCOPES = SPEC["components"]["securitySchemes"]["bearerAuth"]["x-role-scopes"]
ROLES = sorted(ROLE_SCOPES)


def cases():
    for path, item in SPEC["paths"].items():
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None or op.get("security") == []:
                continue
            for role in ROLES:
                allowed = set(op["x-required-scopes"]) <= set(ROLE_SCOPES[role])
                yield pytest.param(path, method, op, role, allowed, id=f"{role}-{method.upper()} {path}")


def concrete(path: str) -> str:
    return path.replace("{category}", "crm").replace("{id}", str(uuid.uuid4())).replace(
        "{tenantId}", str(uuid.uuid4())).replace("{userId}", str(uuid.uuid4()))


@pytest.fixture(scope="module")
def accounts(client, super_admin):
    admin = factories.register(client)
    return {"super_admin": super_admin, "tenant_admin": admin, "user": factories.add_user(client, admin)}


@pytest.fixture(scope="module")
def served(app):
    """The app over TCP, for operations whose answer is an endless stream (the in-process client waits for the end)."""
    from tests.realtime_support import ServedHub

    hub = ServedHub(app).start()
    yield hub
    hub.stop()


def streams(op: dict) -> bool:
    return "text/event-stream" in op["responses"].get("200", {}).get("content", {})


@pytest.mark.parametrize("path,method,op,role,allowed", list(cases()))
def test_role_gets_what_the_spec_declares(request, client, accounts, path, method, op, role, allowed):
    body = None
    if "requestBody" in op:
        body = op["requestBody"]["content"]["application/json"]["schema"].get("example", {})
    if streams(op):
        import httpx

        served = request.getfixturevalue("served")
        with httpx.stream(method.upper(), served.http_url + "/api/v1" + concrete(path), headers=accounts[role].headers,
                          timeout=15) as response:
            response.read() if response.status_code != 200 else None  # the stream itself never ends
    else:
        response = client.request(method.upper(), "/api/v1" + concrete(path), json=body,
                                  headers=accounts[role].headers)
    denied = response.status_code == 403 and response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert denied is not allowed, f"{role} {method.upper()} {path}: {response.status_code} {response.text[:200]}"
    if denied:
        assert response.json()["error"]["details"] == {"requiredScopes": op["x-required-scopes"]}


def test_every_role_is_exercised():
    assert ROLES == ["super_admin", "tenant_admin", "user"]
