"""Security headers (issue 11 item 6): nosniff everywhere, HSTS in production, no-store on answers
that carry secrets, WWW-Authenticate on every 401 (RFC 6750 section 3)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from server.security import SecurityHeadersMiddleware
from tests import factories

ME = "/api/v1/auth/me"
REALM = 'Bearer realm="integration-hub"'


class TestEveryAnswer:
    @pytest.mark.parametrize("path", ["/health", "/api/v1/integrations", "/api/v1/no-such-path"])
    def test_carries_nosniff(self, client, path):
        assert client.get(path).headers["X-Content-Type-Options"] == "nosniff"

    def test_development_answers_carry_no_hsts(self, client):
        assert "Strict-Transport-Security" not in client.get("/health").headers

    def test_production_answers_carry_hsts(self, app):
        with TestClient(SecurityHeadersMiddleware(app, production=True), raise_server_exceptions=False) as prod:
            answers = [prod.get("/health"), prod.get(ME)]

        assert [a.headers["Strict-Transport-Security"] for a in answers] == ["max-age=31536000; includeSubDomains"] * 2


class TestNoStore:
    def test_login_register_refresh_answers_are_not_stored(self, client):
        registered = client.post("/api/v1/auth/register", json={
            "email": f"{factories.unique('ns')}@example.com", "password": factories.PASSWORD, "name": "N",
            "tenantName": factories.unique("NoStore ")})
        email = registered.json()["user"]["email"]
        signed_in = client.post("/api/v1/auth/login", json={"email": email, "password": factories.PASSWORD})
        refreshed = client.post("/api/v1/auth/refresh", json={"refreshToken": signed_in.json()["refreshToken"]})

        assert [r.status_code for r in (registered, signed_in, refreshed)] == [201, 200, 200]
        assert [r.headers.get("Cache-Control") for r in (registered, signed_in, refreshed)] == ["no-store"] * 3

    def test_a_new_api_token_is_not_stored(self, client, tenant_admin):
        created = client.post("/api/v1/tenant/api-tokens", json={"name": "ci", "scopes": ["integrations:read"]},
                              headers=tenant_admin.headers)

        assert created.status_code == 201, created.text
        assert created.headers["Cache-Control"] == "no-store"

    def test_answers_without_secrets_stay_cacheable(self, client, tenant_admin):
        assert "Cache-Control" not in client.get(ME, headers=tenant_admin.headers).headers


class TestWwwAuthenticate:
    def test_no_token_names_the_realm(self, client):
        response = client.get(ME)

        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == REALM

    @pytest.mark.parametrize("headers", [{"Authorization": "Bearer garbage"}, {"X-API-Key": "hub_abc_def"}])
    def test_a_refused_token_is_invalid_token(self, client, headers):
        response = client.get(ME, headers=headers)

        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == f'{REALM}, error="invalid_token"'

    def test_wrong_password_names_the_realm(self, client, tenant_admin):
        response = client.post("/api/v1/auth/login", json={"email": tenant_admin.email, "password": "wrong-password"})

        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == REALM

    def test_other_errors_carry_none(self, client, tenant_admin):
        assert "WWW-Authenticate" not in client.get("/api/v1/tenant/users/nope", headers=tenant_admin.headers).headers
