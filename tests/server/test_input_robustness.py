"""Odd but well-formed input a client can send answers 4xx in the envelope, never 500
(server/validation.py, issue 11 item 4).

Every operation that takes a JSON body is probed, the unauthenticated ones (login, register,
refresh) included: nesting far deeper than any schema, lone UTF-16 surrogates, non-finite numbers
(`NaN`, `Infinity`, `1e999`, which Python's JSON parser accepts), the media type in another case
(RFC 9110 section 8.3.1: case-insensitive) and a body with no media type at all (415).
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from server.app import API_SPEC, load_spec
MAX_DEPTH = 64  # server.validation.MAX_DEPTH
from tests.assertions import assert_error

HTTP_METHODS = ("post", "put", "patch", "delete")


def body_operations() -> list[tuple[str, str, str, list[str] | None]]:
    """(operationId, method, path with its parameters filled, required scopes or None) of every body-taking operation."""
    spec = load_spec(API_SPEC)
    found = []
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not operation or "requestBody" not in operation:
                continue
            if not operation["requestBody"]["content"].get("application/json", {}).get("schema"):
                # Raw bytes, never parsed (incoming provider webhooks, verified by signature): their
                # odd bodies are probed in tests/handlers/test_incoming_webhooks.py.
                continue
            filled = path
            for param in [*item.get("parameters", []), *operation.get("parameters", [])]:
                if param["in"] == "path":
                    schema = param.get("schema", {})
                    value = schema["enum"][0] if "enum" in schema else str(uuid.uuid4())
                    filled = filled.replace("{" + param["name"] + "}", value)
            security = operation.get("security", spec.get("security"))
            found.append((operation["operationId"], method, "/api/v1" + filled,
                          None if security == [] else operation.get("x-required-scopes", [])))
    return found


OPERATIONS = body_operations()
OPERATION_IDS = [operation[0] for operation in OPERATIONS]


@pytest.fixture(scope="module")
def tenant_admin_scopes() -> set[str]:
    spec = yaml.safe_load(API_SPEC.read_text())
    return set(spec["components"]["securitySchemes"]["bearerAuth"]["x-role-scopes"]["tenant_admin"])


@pytest.fixture(params=OPERATIONS, ids=OPERATION_IDS)
def send(request, client, super_admin, tenant_admin_scopes):
    """Send raw bytes with given headers to one body-taking operation, as a caller allowed to call it."""
    operation_id, method, path, scopes = request.param
    if scopes is None:
        auth = {}
    elif set(scopes) <= tenant_admin_scopes:
        auth = request.getfixturevalue("tenant_admin").headers
    else:
        auth = super_admin.headers

    def _send(content: bytes, content_type: str | None = "application/json"):
        headers = dict(auth)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return client.request(method.upper(), path, content=content, headers=headers)

    return _send


def nested(depth: int) -> bytes:
    return b'{"name": ' + b'{"a": ' * (depth - 1) + b"1" + b"}" * depth


class TestEveryBodyTakingOperation:
    def test_json_nested_ten_thousand_deep_answers_400(self, send):
        response = send(nested(10_000))

        assert_error(response, 400, "VALIDATION_ERROR", message=f"Request body is nested deeper than {MAX_DEPTH} levels",
                     details={"field": "body", "rule": "maxDepth", "limit": MAX_DEPTH})

    def test_json_nested_past_the_cap_but_parseable_answers_400(self, send):
        response = send(nested(MAX_DEPTH + 2))

        assert_error(response, 400, "VALIDATION_ERROR", message=f"Request body is nested deeper than {MAX_DEPTH} levels",
                     details={"field": "body", "rule": "maxDepth", "limit": MAX_DEPTH})

    def test_a_lone_surrogate_answers_400_naming_the_field(self, send):
        response = send(b'{"name": "ab\\ud800c"}')

        assert_error(response, 400, "VALIDATION_ERROR", message="name: must not contain unpaired surrogates (\\ud800-\\udfff)",
                     details={"field": "name", "rule": "noLoneSurrogates"})

    @pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
    def test_a_non_finite_number_answers_400_naming_the_field(self, send, number):
        response = send(b'{"settings": {"retries": [1, ' + number + b"]}}")

        assert_error(response, 400, "VALIDATION_ERROR", message="settings.retries.1: must be a finite number",
                     details={"field": "settings.retries.1", "rule": "finiteNumber"})

    def test_a_body_without_a_media_type_answers_415(self, send):
        response = send(b'{"name": "x"}', content_type=None)

        assert_error(response, 415, "VALIDATION_ERROR", message="The request body has no Content-Type; send application/json")

    @pytest.mark.parametrize("media_type", ["Application/JSON", "APPLICATION/JSON; charset=UTF-8"])
    def test_the_media_type_is_case_insensitive(self, send, media_type):
        # The body breaks the schema: a 400 proves the body was parsed and validated as JSON.
        response = send(b'{"zzUnexpected": 1}', content_type=media_type)

        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert response.json()["error"]["details"]["field"] in ("body", "zzUnexpected")


class TestLogin:
    """The unauthenticated entry point, with a body a client really sends."""

    def test_login_with_an_upper_case_media_type_signs_in(self, client):
        from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

        response = client.post("/api/v1/auth/login", headers={"Content-Type": "Application/JSON"},
                               content=f'{{"email": "{ADMIN_EMAIL}", "password": "{ADMIN_PASSWORD}"}}'.encode())

        assert response.status_code == 200, response.text
        assert set(response.json()) >= {"accessToken", "refreshToken"}

    def test_a_bodiless_post_without_a_media_type_is_not_refused_as_415(self, client):
        # No body, no media type: the schema's "required" body decides (400), not 415.
        response = client.post("/api/v1/auth/login")

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_a_finite_float_still_passes(self, client):
        response = client.post("/api/v1/auth/login", json={"email": "someone@example.com", "password": "x" * 8, "n": 1.5e3})

        assert response.status_code == 400  # an unexpected property, refused by the schema, not the number
        assert response.json()["error"]["details"]["field"] in ("body", "n")
