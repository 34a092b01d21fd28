"""Property-based tests of every operation of both contracts, in-process (Schemathesis).

Each operation is called with a token allowed to call it (the role whose scopes cover the
operation's `x-required-scopes`), with positive and negative data, and its responses checked
against the spec. A stateful run follows the spec's OpenAPI links (create -> get/patch/delete).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from schemathesis.engine import events, from_schema

from server import runtime
from tests import factories

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    use_after_free,
]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@pytest.fixture(scope="session")
def tokens_by_role(client, super_admin) -> dict[str, factories.Account]:
    """One signed-in account per role, in a tenant of their own."""
    admin = factories.register(client)
    return {"super_admin": super_admin, "tenant_admin": admin, "user": factories.add_user(client, admin)}


@pytest.fixture(scope="session")
def headers_for(tokens_by_role):
    """Return the Authorization headers of a role allowed to call the given operationId."""
    rt = runtime.get()

    def pick(operation_id: str) -> dict[str, str]:
        required = rt.operation_scopes.get(operation_id)
        if required is None:
            return {}
        for role in ("tenant_admin", "super_admin", "user"):
            if set(required) <= set(rt.role_scopes[role]):
                return tokens_by_role[role].headers
        raise AssertionError(f"no role may call {operation_id}")

    return pick


@pytest.fixture(scope="session")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)


@pytest.fixture(scope="session")
def root_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


api = schemathesis.pytest.from_fixture("api_schema")
root = schemathesis.pytest.from_fixture("root_schema")


@api.parametrize()
@FUZZ
def test_api_operation(case, headers_for):
    """Every operation of /api/v1 conforms to the contract for generated valid and invalid input."""
    case.call_and_validate(headers=headers_for(case.operation.definition.raw["operationId"]), checks=CHECKS)


@root.parametrize()
@FUZZ
def test_root_operation(case, headers_for):
    """The operations served at the root path (health) conform to their contract."""
    case.call_and_validate(headers=headers_for(case.operation.definition.raw["operationId"]), checks=CHECKS)


def test_stateful_links(app, headers_for):
    """Sequences driven by the spec's OpenAPI links (create -> get/patch/delete) conform.

    Runs Schemathesis' own engine (stateful phase only) in-process: unlike a bare Hypothesis
    state machine it tolerates the API's state changing between replays (a replayed create
    may now conflict), which is what a stateful API does.
    """
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    schema.config.phases.update(phases=["stateful"])
    schema.config.checks.update(included_check_names=[check.__name__ for check in CHECKS])
    schema.config.generation.update(max_examples=40)

    @schema.auth()
    class RoleToken:
        def get(self, case, context):
            return headers_for(case.operation.definition.raw["operationId"])

        def set(self, case, data, context):
            case.headers = {**(case.headers or {}), **data}

    failures, errors, scenarios, checked = [], [], 0, 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            checked += sum(len(checks) for checks in event.recorder.checks.values())
            for checks in event.recorder.checks.values():
                failures += [f"{c.name}: {c.failure_info.failure.title}" for c in checks if c.failure_info]
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(repr(getattr(event, "error", None) or getattr(event, "exception", None)))
    print(f"stateful: {scenarios} scenarios, {checked} check results")
    assert scenarios > 0, "the stateful phase ran no scenario: the spec's links are not followed"
    assert not errors, errors
    assert not failures, sorted(set(failures))
