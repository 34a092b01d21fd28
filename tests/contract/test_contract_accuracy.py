"""The contract says what the hub does (issue 11 items 10, 11): rate-limit headers where the hub
sends them, examples that fit their operation, no stale promises, people-worded 400s, and free
text that excludes what the hub refuses (NUL)."""

from __future__ import annotations

import re

import pytest

from server.app import API_SPEC, load_spec
from server.validation import TEXT_PATTERN
from tests import factories
from tests.assertions import assert_error

RATE_LIMIT_HEADERS = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def spec() -> dict:
    return load_spec(API_SPEC)


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def test_every_refusal_after_the_rate_limit_declares_its_headers(spec):
    # 413 is answered before the rate limit runs (server/request_log.py), so it carries none.
    missing = [f"{method.upper()} {path} {status}" for path, method, op in operations(spec)
               for status, response in op["responses"].items()
               if status.startswith("4") and status != "413" and not RATE_LIMIT_HEADERS <= set(response.get("headers", {}))]

    assert missing == []


def test_an_idempotency_mismatch_carries_the_declared_rate_limit_headers(client, tenant_admin):
    headers = {**tenant_admin.headers, "Idempotency-Key": factories.unique("key-")}
    first = client.post("/api/v1/tenant/api-tokens", json={"name": "ci", "scopes": ["integrations:read"]}, headers=headers)
    assert first.status_code == 201, first.text

    second = client.post("/api/v1/tenant/api-tokens", json={"name": "other", "scopes": ["integrations:read"]}, headers=headers)

    assert second.status_code == 422
    assert {name.lower() for name in RATE_LIMIT_HEADERS} <= set(second.headers.keys())


def test_public_operations_document_no_scope_refusal(spec):
    wrong = []
    for path, method, op in operations(spec):
        if op.get("security") != [] or "403" not in op["responses"]:
            continue
        content = op["responses"]["403"].get("content", {}).get("application/json", {})
        examples = [content["example"]] if "example" in content else [e["value"] for e in content.get("examples", {}).values()]
        wrong += [f"{method.upper()} {path}" for example in examples if example["error"]["code"] == "PERMISSION_DENIED"]

    assert wrong == []


def test_the_description_promises_nothing_for_later(spec):
    assert "(soon)" not in spec["info"]["description"]


class TestPeopleWordedErrors:
    def test_a_query_parameter_past_its_bound(self, client, tenant_admin):
        response = client.get("/api/v1/integrations", params={"limit": 500}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="limit: must be at most 100",
                     details={"field": "limit", "rule": "maximum", "expected": 100, "in": "query"})

    def test_a_body_field_past_its_length(self, client, tenant_admin, sandbox_provider):
        response = client.post("/api/v1/tenant/integrations", headers=tenant_admin.headers,
                               json={"integrationId": sandbox_provider["id"], "name": "x" * 201})

        assert_error(response, 400, "VALIDATION_ERROR", message="name: must be at most 200 characters",
                     details={"field": "name", "rule": "maxLength", "expected": 200})

    def test_a_missing_required_field_is_named(self, client):
        response = client.post("/api/v1/auth/login", json={"email": "someone@example.com"})

        assert_error(response, 400, "VALIDATION_ERROR", message="password: is required",
                     details={"field": "password", "rule": "required"})


def request_strings(schema: dict, path: str, seen: set[int]):
    """Yield (path, schema) of every string schema a request body can carry."""
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen.add(id(schema))
    if schema.get("readOnly"):
        return
    if schema.get("type") == "string":
        yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from request_strings(sub, f"{path}.{name}", seen)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from request_strings(schema["additionalProperties"], f"{path}.*", seen)
    if isinstance(schema.get("items"), dict):
        yield from request_strings(schema["items"], f"{path}[]", seen)
    for key in ("allOf", "anyOf", "oneOf"):
        for index, sub in enumerate(schema.get(key) or []):
            yield from request_strings(sub, path, seen)


def admits_nul(schema: dict) -> bool:
    """True when a string holding NUL could satisfy `schema`: free text without a pattern that excludes it.

    A `format` (date-time, email, uuid, uri, ...) names a grammar that has no NUL in it.
    """
    if "format" in schema:
        return False
    if "enum" in schema:
        return any("\x00" in str(value) for value in schema["enum"])
    pattern = schema.get("pattern")
    return pattern is None or any(re.search(pattern, probe) for probe in ("\x00", "a\x00", "\x00a", "a\x00b"))


def test_no_request_string_admits_a_nul(spec):
    """The hub refuses NUL in every string (PostgreSQL text cannot hold it): the contract says so."""
    admitting = []
    for path, method, op in operations(spec):
        label = f"{method.upper()} {path}"
        for param in op.get("parameters", []) + spec["paths"][path].get("parameters", []):
            # A header value cannot carry NUL at all (RFC 9110 section 5.5).
            if param["in"] != "header" and param.get("schema", {}).get("type") == "string" and admits_nul(param["schema"]):
                admitting.append(f"{label} {param['in']} {param['name']}")
        body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
        for where, schema in request_strings(body or {}, "body", set()):
            if admits_nul(schema):
                admitting.append(f"{label} {where}")

    assert admitting == []


def test_the_free_text_pattern_is_the_one_the_hub_names():
    assert re.search(TEXT_PATTERN, "any text, ünïcode, \U0001F600") and not re.search(TEXT_PATTERN, "a\x00b")
