"""Cross-cutting behaviour of every operation: request ids, the error envelope, body and query
limits, routing errors and CORS (server/errors.py, server/request_log.py, server/app.py)."""

from __future__ import annotations

import json
import re

import pytest
from sqlmodel import select

from persistence import providers as provider_queries
from persistence.db import transaction
from persistence.models import Provider
from tests import factories
from tests.assertions import ANY_DETAILS, ANY_TEXT

CATALOG = "/api/v1/integrations"
ADMIN_PROVIDERS = "/api/v1/admin/integrations"
MAX_BODY = 1024 * 1024
WELL_FORMED_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,100}$")
ALLOWED_ORIGIN = "https://app.example.com"  # ALLOWED_ORIGINS in tests/conftest.py


def assert_error(response, status: int, code: str, *, message=ANY_TEXT, details=ANY_DETAILS) -> None:
    """Assert the status and the whole error envelope; its requestId must equal the X-Request-ID header.

    `details=None` asserts there are none; the default accepts any or none.
    """
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    error = {"code": code, "message": message, "requestId": response.headers["X-Request-ID"]}
    if details is not None and (details is not ANY_DETAILS or "details" in body.get("error", {})):
        error["details"] = details
    assert body == {"error": error}


def provider_rows(key: str) -> list[Provider]:
    with transaction() as session:
        return list(session.exec(select(Provider).where(Provider.provider == key)).all())


def json_headers(account: factories.Account) -> dict[str, str]:
    return {**account.headers, "Content-Type": "application/json"}


@pytest.fixture
def broken_catalog(monkeypatch):
    """Make the catalog query raise an unexpected exception (a stand-in for any server bug)."""

    def explode(*args, **kwargs):
        raise RuntimeError("boom: secret internals")

    monkeypatch.setattr(provider_queries, "list_page", explode)


@pytest.fixture(params=["ok", "not_found", "method_not_allowed", "no_token", "validation", "internal_error"])
def any_outcome(request, client, super_admin):
    """Send one request per kind of outcome; return (expected status, response)."""
    if request.param == "internal_error":
        request.getfixturevalue("broken_catalog")
    send = {
        "ok": (200, lambda headers: client.get(CATALOG, headers={**super_admin.headers, **headers})),
        "not_found": (404, lambda headers: client.get("/api/v1/no-such-thing", headers=headers)),
        "method_not_allowed": (405, lambda headers: client.delete(CATALOG, headers={**super_admin.headers, **headers})),
        "no_token": (401, lambda headers: client.get(CATALOG, headers=headers)),
        "validation": (400, lambda headers: client.get(CATALOG, params={"limit": 0}, headers={**super_admin.headers, **headers})),
        "internal_error": (500, lambda headers: client.get(CATALOG, headers={**super_admin.headers, **headers})),
    }
    return send[request.param]


class TestRequestId:
    def test_minted_on_every_response(self, any_outcome):
        status, send = any_outcome

        first, second = send({}), send({})

        assert (first.status_code, second.status_code) == (status, status)
        assert WELL_FORMED_ID.match(first.headers["X-Request-ID"])
        assert WELL_FORMED_ID.match(second.headers["X-Request-ID"])
        assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]

    def test_well_formed_incoming_id_is_echoed(self, any_outcome):
        status, send = any_outcome

        response = send({"X-Request-ID": "client-req-12345678"})

        assert response.status_code == status
        assert response.headers["X-Request-ID"] == "client-req-12345678"
        if status >= 400:
            assert response.json()["error"]["requestId"] == "client-req-12345678"

    @pytest.mark.parametrize("incoming", ["bad id with spaces", "short", "x" * 101, "semi;colon-12345", "é-accented-123"],
                             ids=["spaces", "too-short", "too-long", "semicolon", "non-ascii"])
    def test_malformed_incoming_id_is_replaced(self, client, super_admin, incoming):
        response = client.get(f"{ADMIN_PROVIDERS}/crm/00000000-0000-4000-8000-000000000000",
                              headers={**super_admin.headers, "X-Request-ID": incoming.encode("utf-8")})

        assert_error(response, 404, "PROVIDER_NOT_FOUND")
        assert response.headers["X-Request-ID"] != incoming
        assert WELL_FORMED_ID.match(response.headers["X-Request-ID"])

    def test_error_body_request_id_equals_header(self, client):
        response = client.get("/api/v1/no-such-thing", headers={"X-Request-ID": "trace.abc:123-XYZ"})

        assert_error(response, 404, "NOT_FOUND", message="No such resource", details=None)
        assert response.json()["error"]["requestId"] == "trace.abc:123-XYZ"

    @pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "https://evil.example"], ids=["allowed", "disallowed"])
    def test_minted_on_cors_preflight(self, client, origin):
        response = client.options(CATALOG, headers={"Origin": origin, "Access-Control-Request-Method": "GET"})

        assert "X-Request-ID" in response.headers, dict(response.headers)
        assert WELL_FORMED_ID.match(response.headers["X-Request-ID"])


class TestUnknownPath:
    @pytest.mark.parametrize("path", ["/api/v1/no-such-thing", "/no-such-thing", "/api/v1/integrations/crm"])
    def test_answers_not_found_envelope(self, client, super_admin, path):
        response = client.get(path, headers=super_admin.headers)

        assert_error(response, 404, "NOT_FOUND", message="No such resource", details=None)


class TestWrongMethod:
    def test_answers_method_not_allowed_envelope_with_allow(self, client, super_admin):
        response = client.delete(CATALOG, headers=super_admin.headers)

        assert_error(response, 405, "METHOD_NOT_ALLOWED", details=None)
        allowed = {method.strip() for method in response.headers["Allow"].split(",")}
        assert "GET" in allowed and "DELETE" not in allowed

    @pytest.mark.parametrize(("path", "expected"), [
        ("/api/v1/tenant/integrations", {"GET", "HEAD", "POST"}),
        ("/api/v1/tenant/users/3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("/api/v1/auth/login", {"POST"}),
    ])
    def test_allow_lists_every_method_the_contract_defines(self, client, tenant_admin, path, expected):
        response = client.put(path, json={}, headers=tenant_admin.headers)

        assert_error(response, 405, "METHOD_NOT_ALLOWED", details=None)
        assert {method.strip() for method in response.headers["Allow"].split(",")} == expected

    def test_unauthenticated_wrong_method_is_still_method_not_allowed(self, client):
        response = client.put(CATALOG, json={})

        assert_error(response, 405, "METHOD_NOT_ALLOWED", details=None)
        assert "GET" in response.headers["Allow"]


class TestUnsupportedMediaType:
    def test_text_plain_body_is_refused(self, client, super_admin):
        body = factories.provider_body()

        response = client.post(ADMIN_PROVIDERS, content=json.dumps(body),
                               headers={**super_admin.headers, "Content-Type": "text/plain"})

        assert_error(response, 415, "VALIDATION_ERROR")
        assert "text/plain" in response.json()["error"]["message"]
        assert provider_rows(body["provider"]) == []


class TestBodyTooLarge:
    @staticmethod
    def _oversized(body: dict) -> bytes:
        """A valid JSON document of `body`, padded with whitespace past the cap."""
        return json.dumps(body).encode() + b" " * (MAX_BODY + 1)

    def test_declared_content_length_over_cap_is_refused(self, client, super_admin):
        body = factories.provider_body()

        response = client.post(ADMIN_PROVIDERS, content=self._oversized(body), headers=json_headers(super_admin))

        assert_error(response, 413, "VALIDATION_ERROR", message=f"Request body exceeds {MAX_BODY} bytes",
                     details={"maxBytes": MAX_BODY})
        assert provider_rows(body["provider"]) == []

    def test_chunked_body_over_cap_is_refused(self, client, super_admin):
        body = factories.provider_body()
        payload = self._oversized(body)

        def chunks():
            for start in range(0, len(payload), 64 * 1024):
                yield payload[start:start + 64 * 1024]

        response = client.post(ADMIN_PROVIDERS, content=chunks(), headers=json_headers(super_admin))

        assert "content-length" not in {name.lower() for name in response.request.headers}
        assert_error(response, 413, "VALIDATION_ERROR", message=f"Request body exceeds {MAX_BODY} bytes",
                     details={"maxBytes": MAX_BODY})
        assert provider_rows(body["provider"]) == []

    def test_body_just_under_cap_is_accepted(self, client, super_admin):
        body = factories.provider_body()
        document = json.dumps(body).encode()
        payload = document + b" " * (MAX_BODY - len(document))

        response = client.post(ADMIN_PROVIDERS, content=payload, headers=json_headers(super_admin))

        assert response.status_code == 201, response.text
        assert len(provider_rows(body["provider"])) == 1


class TestMalformedBody:
    def test_invalid_json_is_rejected(self, client, super_admin):
        response = client.post(ADMIN_PROVIDERS, content=b'{"name": "Acme",', headers=json_headers(super_admin))

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_non_utf8_body_is_rejected(self, client, super_admin):
        body = factories.provider_body(name="PLACEHOLDER")
        payload = json.dumps(body).encode().replace(b"PLACEHOLDER", b"Caf\xe9")  # latin-1, not UTF-8

        response = client.post(ADMIN_PROVIDERS, content=payload, headers=json_headers(super_admin))

        assert_error(response, 400, "VALIDATION_ERROR", message="Request body is not valid UTF-8")
        assert provider_rows(body["provider"]) == []

    def test_json_that_is_not_an_object_is_rejected(self, client, super_admin):
        response = client.post(ADMIN_PROVIDERS, content=b"[1, 2, 3]", headers=json_headers(super_admin))

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_empty_body_is_rejected(self, client, super_admin):
        response = client.post(ADMIN_PROVIDERS, content=b"", headers=json_headers(super_admin))

        assert_error(response, 400, "VALIDATION_ERROR")


class TestQueryValidation:
    @pytest.mark.parametrize("params", [
        {"limit": 0},
        {"limit": 101},
        {"limit": 10**30},
        {"limit": "ten"},
        {"offset": -1},
        {"sortOrder": "sideways"},
    ], ids=["limit-0", "limit-101", "limit-huge", "limit-not-int", "offset-negative", "sort-order-unknown"])
    def test_out_of_range_parameter_is_rejected(self, client, member, params):
        response = client.get(CATALOG, params=params, headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_unknown_parameter_is_rejected(self, client, member):
        response = client.get(CATALOG, params={"bogus": "1"}, headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert "bogus" in response.json()["error"]["message"]

    @pytest.mark.parametrize("params", [{"limit": 1}, {"limit": 100}, {"offset": 0}], ids=["limit-1", "limit-100", "offset-0"])
    def test_boundary_values_are_accepted(self, client, member, params):
        response = client.get(CATALOG, params=params, headers=member.headers)

        assert response.status_code == 200, response.text


class TestInternalError:
    def test_unexpected_exception_answers_envelope_without_internals(self, client, member, broken_catalog):
        response = client.get(CATALOG, headers={**member.headers, "X-Request-ID": "client-req-500-0001"})

        assert_error(response, 500, "INTERNAL_ERROR", message="An unexpected error occurred", details=None)
        assert response.headers["X-Request-ID"] == "client-req-500-0001"
        assert "boom" not in response.text and "Traceback" not in response.text


class TestCors:
    def test_preflight_from_allowed_origin_is_allowed(self, client):
        response = client.options(CATALOG, headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET",
                                                    "Access-Control-Request-Headers": "authorization,x-request-id"})

        assert response.status_code == 200, response.text
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        allowed_headers = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "x-request-id", "content-type"} <= allowed_headers

    def test_preflight_from_other_origin_gets_no_allow_origin(self, client):
        response = client.options(CATALOG, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})

        assert "Access-Control-Allow-Origin" not in response.headers

    def test_response_to_allowed_origin_exposes_request_id(self, client, member):
        response = client.get(CATALOG, params={"limit": 1}, headers={**member.headers, "Origin": ALLOWED_ORIGIN})

        assert response.status_code == 200, response.text
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert "x-request-id" in exposed

    def test_error_response_to_allowed_origin_exposes_request_id(self, client):
        response = client.get(CATALOG, headers={"Origin": ALLOWED_ORIGIN})

        assert_error(response, 401, "NO_TOKEN", details=None)
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        assert "x-request-id" in response.headers["Access-Control-Expose-Headers"].lower()

    def test_response_to_other_origin_gets_no_allow_origin(self, client, member):
        response = client.get(CATALOG, params={"limit": 1}, headers={**member.headers, "Origin": "https://evil.example"})

        assert response.status_code == 200, response.text
        assert "Access-Control-Allow-Origin" not in response.headers
