"""Operations of tag `auth`: register, login, refresh, logout, me, and the bearer scheme itself.

Covers the integration runbook's pre-production checklist (section 7.1) for authentication.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import ClassVar

import jwt
import pytest
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, RefreshToken, Tenant, User
from server.app import load_spec
from tests import factories
from tests.assertions import ANY
from tests.assertions import assert_envelope as assert_error
from tests.conftest import JWT_SECRET

ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
REGISTER = "/api/v1/auth/register"

OUR_KID = hashlib.sha256(JWT_SECRET.encode()).hexdigest()[:16]  # the hub's key id for JWT_SECRET
# What the spec grants each role (x-role-scopes of the bearer scheme), as /auth/me lists it.
ROLE_SCOPES = load_spec()["components"]["securitySchemes"]["bearerAuth"]["x-role-scopes"]
TENANT_ADMIN_SCOPES = sorted(ROLE_SCOPES["tenant_admin"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict:
    """Return a token's claims without verifying it (to find its row in the database)."""
    return jwt.decode(token, options={"verify_signature": False})


def forge(settings, account: factories.Account, *, secret: str = JWT_SECRET, algorithm: str = "HS256",
          kid: str | None = None, **overrides) -> str:
    """Build an access token by hand, as the hub would mint it, with `overrides` applied to the claims."""
    now = datetime.now(timezone.utc)
    claims = {
        "sub": account.user_id,
        "tid": account.tenant_id,
        "role": account.user["role"],
        "typ": "access",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": str(uuid.uuid4()),
        "fam": claims_of(account.refresh_token)["fam"],
    } | overrides
    kid = kid if kid is not None else hashlib.sha256(secret.encode()).hexdigest()[:16]
    return jwt.encode(claims, None if algorithm == "none" else secret, algorithm=algorithm, headers={"kid": kid})


def audit_entries(request_id: str, action: str) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.request_id == request_id,
                                                          AuditEntry.action == action)).all())


def family_rows(refresh_token: str) -> list[RefreshToken]:
    family_id = uuid.UUID(claims_of(refresh_token)["fam"])
    with transaction() as session:
        return list(session.exec(select(RefreshToken).where(RefreshToken.family_id == family_id)).all())


def refresh_row(refresh_token: str) -> RefreshToken | None:
    with transaction() as session:
        return session.get(RefreshToken, uuid.UUID(claims_of(refresh_token)["jti"]))


class TestLogin:
    def test_valid_credentials_answer_tokens_and_user(self, client, tenant_admin):
        response = client.post(LOGIN, json={"email": tenant_admin.email, "password": tenant_admin.password})

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"accessToken", "refreshToken", "tokenType", "expiresIn", "refreshExpiresIn", "user"}
        assert body["tokenType"] == "Bearer"
        assert body["expiresIn"] == 900
        assert body["refreshExpiresIn"] == 7 * 24 * 3600
        assert body["accessToken"] and body["refreshToken"]
        assert body["user"] == {"id": tenant_admin.user_id, "email": tenant_admin.email, "name": "Ada Admin",
                                "role": "tenant_admin", "tenantId": tenant_admin.tenant_id}
        assert client.get(ME, headers=bearer(body["accessToken"])).status_code == 200

    def test_wrong_password_is_invalid_credentials(self, client, tenant_admin):
        response = client.post(LOGIN, json={"email": tenant_admin.email, "password": "not-the-password"})

        assert_error(response, 401, "INVALID_CREDENTIALS")

    def test_unknown_email_answers_exactly_like_a_wrong_password(self, client, tenant_admin):
        wrong_password = client.post(LOGIN, json={"email": tenant_admin.email, "password": "not-the-password"})
        unknown_email = client.post(LOGIN, json={"email": f"{factories.unique('nobody')}@example.com",
                                                 "password": "not-the-password"})

        assert_error(unknown_email, 401, "INVALID_CREDENTIALS")
        assert unknown_email.status_code == wrong_password.status_code
        without_id = [{k: v for k, v in r.json()["error"].items() if k != "requestId"}
                      for r in (wrong_password, unknown_email)]
        assert without_id[0] == without_id[1]

    def test_email_is_case_insensitive(self, client, tenant_admin):
        response = client.post(LOGIN, json={"email": tenant_admin.email.upper(), "password": tenant_admin.password})

        assert response.status_code == 200, response.text
        assert response.json()["user"]["id"] == tenant_admin.user_id
        assert response.json()["user"]["email"] == tenant_admin.email

    def test_missing_password_is_a_validation_error(self, client, tenant_admin):
        response = client.post(LOGIN, json={"email": tenant_admin.email})

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)

    def test_failed_login_is_audited_without_the_password(self, client, tenant_admin):
        password = "Wrong-Password-" + factories.unique("p")
        response = client.post(LOGIN, json={"email": tenant_admin.email, "password": password})

        assert_error(response, 401, "INVALID_CREDENTIALS")
        entries = audit_entries(response.headers["x-request-id"], "auth.login")
        assert len(entries) == 1
        entry = entries[0]
        assert entry.outcome == "failure"
        assert entry.resource_type == "user"
        assert password not in json.dumps(entry.changes)
        assert tenant_admin.password not in json.dumps(entry.changes)
        assert not any("pass" in key.lower() and value != "[REDACTED]" for key, value in (entry.changes or {}).items())

    def test_successful_login_is_audited_and_stamps_last_login(self, client, tenant_admin):
        response = client.post(LOGIN, json={"email": tenant_admin.email, "password": tenant_admin.password})

        assert response.status_code == 200, response.text
        entries = audit_entries(response.headers["x-request-id"], "auth.login")
        assert len(entries) == 1
        assert entries[0].outcome == "success"
        assert entries[0].actor_id == uuid.UUID(tenant_admin.user_id)
        assert entries[0].tenant_id == uuid.UUID(tenant_admin.tenant_id)
        assert tenant_admin.password not in json.dumps(entries[0].changes)
        me = client.get(ME, headers=bearer(response.json()["accessToken"])).json()
        assert me["lastLogin"] is not None


class TestBearerToken:
    """The bearerAuth scheme, exercised through GET /auth/me."""

    def test_no_token_is_no_token(self, client):
        response = client.get(ME)

        assert_error(response, 401, "NO_TOKEN")

    def test_non_bearer_authorization_is_no_token(self, client, tenant_admin):
        response = client.get(ME, headers={"Authorization": f"Basic {tenant_admin.access_token}"})

        assert_error(response, 401, "NO_TOKEN")

    def test_garbage_token_is_invalid_token(self, client):
        response = client.get(ME, headers=bearer("not.a.jwt"))

        assert_error(response, 401, "INVALID_TOKEN")

    def test_a_correctly_forged_token_is_accepted(self, client, settings, tenant_admin):
        """Control for the rejections below: the hand-built token is right in every other respect."""
        response = client.get(ME, headers=bearer(forge(settings, tenant_admin)))

        assert response.status_code == 200, response.text
        assert response.json()["id"] == tenant_admin.user_id

    def test_expired_token_is_invalid_token(self, client, settings, tenant_admin):
        past = datetime.now(timezone.utc) - timedelta(minutes=20)
        token = forge(settings, tenant_admin, iat=past, exp=past + timedelta(minutes=15))

        response = client.get(ME, headers=bearer(token))

        assert_error(response, 401, "INVALID_TOKEN")

    def test_refresh_token_is_not_an_access_token(self, client, tenant_admin):
        response = client.get(ME, headers=bearer(tenant_admin.refresh_token))

        assert_error(response, 401, "INVALID_TOKEN")

    @pytest.mark.parametrize("kid_of", ["other", "ours"])
    def test_token_signed_with_another_secret_is_invalid_token(self, client, settings, tenant_admin, kid_of):
        other_secret = "another-secret-" + "y" * 40
        kid = hashlib.sha256(other_secret.encode()).hexdigest()[:16] if kid_of == "other" else OUR_KID
        token = forge(settings, tenant_admin, secret=other_secret, kid=kid)

        response = client.get(ME, headers=bearer(token))

        assert_error(response, 401, "INVALID_TOKEN")

    def test_alg_none_token_is_invalid_token(self, client, settings, tenant_admin):
        token = forge(settings, tenant_admin, algorithm="none", kid=OUR_KID)

        response = client.get(ME, headers=bearer(token))

        assert_error(response, 401, "INVALID_TOKEN")

    @pytest.mark.parametrize("claim", ["iss", "aud"])
    def test_wrong_issuer_or_audience_is_invalid_token(self, client, settings, tenant_admin, claim):
        response = client.get(ME, headers=bearer(forge(settings, tenant_admin, **{claim: "someone-else"})))

        assert_error(response, 401, "INVALID_TOKEN")

    def test_token_of_an_unknown_user_is_invalid_token(self, client, settings, tenant_admin):
        response = client.get(ME, headers=bearer(forge(settings, tenant_admin, sub=str(uuid.uuid4()))))

        assert_error(response, 401, "INVALID_TOKEN")


class TestRefresh:
    def test_rotates_into_new_tokens(self, client, tenant_admin):
        response = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["tokenType"] == "Bearer"
        assert body["expiresIn"] == 900
        assert body["accessToken"] != tenant_admin.access_token
        assert body["refreshToken"] != tenant_admin.refresh_token
        assert body["user"]["id"] == tenant_admin.user_id
        assert client.get(ME, headers=bearer(body["accessToken"])).status_code == 200
        assert claims_of(body["refreshToken"])["fam"] == claims_of(tenant_admin.refresh_token)["fam"]
        assert refresh_row(tenant_admin.refresh_token).used_at is not None

    def test_used_refresh_token_is_rejected(self, client, tenant_admin):
        assert client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token}).status_code == 200

        response = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})

        assert_error(response, 401, "INVALID_TOKEN")

    def test_reuse_revokes_the_whole_family(self, client, tenant_admin):
        first = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})
        assert first.status_code == 200, first.text
        successor = first.json()["refreshToken"]

        reuse = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})
        after = client.post(REFRESH, json={"refreshToken": successor})

        assert_error(reuse, 401, "INVALID_TOKEN")
        assert_error(after, 401, "INVALID_TOKEN")
        rows = family_rows(successor)
        assert len(rows) == 2
        assert all(row.revoked_at is not None for row in rows)

    def test_reuse_leaves_other_logins_alone(self, client, tenant_admin):
        other_login = factories.login(client, tenant_admin.email, tenant_admin.password)
        assert client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token}).status_code == 200
        assert client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token}).status_code == 401

        response = client.post(REFRESH, json={"refreshToken": other_login.refresh_token})

        assert response.status_code == 200, response.text

    def test_access_token_is_not_a_refresh_token(self, client, tenant_admin):
        response = client.post(REFRESH, json={"refreshToken": tenant_admin.access_token})

        assert_error(response, 401, "INVALID_TOKEN")

    def test_garbage_is_invalid_token(self, client):
        response = client.post(REFRESH, json={"refreshToken": "garbage"})

        assert_error(response, 401, "INVALID_TOKEN")

    def test_expired_refresh_token_is_invalid_token(self, client, settings, tenant_admin):
        claims = claims_of(tenant_admin.refresh_token)
        past = datetime.now(timezone.utc) - timedelta(days=8)
        token = forge(settings, tenant_admin, typ="refresh", fam=claims["fam"], jti=claims["jti"],
                      iat=past, exp=past + timedelta(days=7))

        response = client.post(REFRESH, json={"refreshToken": token})

        assert_error(response, 401, "INVALID_TOKEN")
        assert refresh_row(tenant_admin.refresh_token).used_at is None

    def test_missing_refresh_token_is_a_validation_error(self, client):
        response = client.post(REFRESH, json={})

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)


class TestLogout:
    def test_revokes_the_refresh_token(self, client, tenant_admin):
        response = client.post(LOGOUT, json={"refreshToken": tenant_admin.refresh_token}, headers=tenant_admin.headers)

        assert response.status_code == 204, response.text
        assert response.content == b""
        assert refresh_row(tenant_admin.refresh_token).revoked_at is not None
        entries = audit_entries(response.headers["x-request-id"], "auth.logout")
        assert len(entries) == 1
        assert entries[0].actor_id == uuid.UUID(tenant_admin.user_id)
        refused = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})
        assert_error(refused, 401, "INVALID_TOKEN")

    def test_is_idempotent(self, client, tenant_admin):
        body = {"refreshToken": tenant_admin.refresh_token}
        assert client.post(LOGOUT, json=body, headers=tenant_admin.headers).status_code == 204
        other_login = factories.login(client, tenant_admin.email, tenant_admin.password)

        response = client.post(LOGOUT, json=body, headers=other_login.headers)

        assert response.status_code == 204, response.text

    def test_another_users_refresh_token_is_left_alone(self, client, tenant_admin, member):
        response = client.post(LOGOUT, json={"refreshToken": member.refresh_token}, headers=tenant_admin.headers)

        assert response.status_code == 204, response.text
        assert refresh_row(member.refresh_token).revoked_at is None
        assert client.post(REFRESH, json={"refreshToken": member.refresh_token}).status_code == 200

    def test_malformed_refresh_token_is_a_validation_error(self, client, tenant_admin):
        response = client.post(LOGOUT, json={"refreshToken": "not-a-token"}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details={"field": "refreshToken"})

    def test_without_access_token_is_no_token(self, client, tenant_admin):
        response = client.post(LOGOUT, json={"refreshToken": tenant_admin.refresh_token})

        assert_error(response, 401, "NO_TOKEN")
        assert refresh_row(tenant_admin.refresh_token).revoked_at is None


class TestAccessTokenFollowsItsLogin:
    """Issue 11 item 5: an access token dies with its login (refresh-token family), not 15 minutes later."""

    def test_logout_refuses_the_access_token_at_once(self, client, tenant_admin):
        assert client.get(ME, headers=tenant_admin.headers).status_code == 200

        logout = client.post(LOGOUT, json={"refreshToken": tenant_admin.refresh_token}, headers=tenant_admin.headers)

        assert logout.status_code == 204, logout.text
        assert_error(client.get(ME, headers=tenant_admin.headers), 401, "INVALID_TOKEN")

    def test_refresh_token_reuse_refuses_the_access_tokens_of_the_family(self, client, tenant_admin):
        rotated = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})
        assert rotated.status_code == 200, rotated.text
        successor_access = rotated.json()["accessToken"]
        assert client.get(ME, headers=bearer(successor_access)).status_code == 200

        reuse = client.post(REFRESH, json={"refreshToken": tenant_admin.refresh_token})

        assert_error(reuse, 401, "INVALID_TOKEN")
        assert_error(client.get(ME, headers=bearer(successor_access)), 401, "INVALID_TOKEN")
        assert_error(client.get(ME, headers=tenant_admin.headers), 401, "INVALID_TOKEN")

    def test_other_logins_of_the_user_keep_working(self, client, tenant_admin):
        other_login = factories.login(client, tenant_admin.email, tenant_admin.password)

        client.post(LOGOUT, json={"refreshToken": tenant_admin.refresh_token}, headers=tenant_admin.headers)

        assert client.get(ME, headers=other_login.headers).status_code == 200

    def test_the_access_token_names_its_login(self, tenant_admin):
        assert claims_of(tenant_admin.access_token)["fam"] == claims_of(tenant_admin.refresh_token)["fam"]

    def test_an_access_token_without_a_login_is_invalid(self, client, tenant_admin):
        claims = {k: v for k, v in claims_of(tenant_admin.access_token).items() if k != "fam"}
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"kid": OUR_KID})

        assert_error(client.get(ME, headers=bearer(token)), 401, "INVALID_TOKEN")


class TestRegister:
    def test_creates_a_free_tenant_and_its_tenant_admin(self, client):
        email = f"{factories.unique('founder')}@example.com"
        tenant_name = factories.unique("Register Co ")
        response = client.post(REGISTER, json={"email": email, "password": factories.PASSWORD, "name": "Fay Founder",
                                               "tenantName": tenant_name})

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["tokenType"] == "Bearer"
        assert body["expiresIn"] == 900
        assert body["user"]["email"] == email
        assert body["user"]["name"] == "Fay Founder"
        assert body["user"]["role"] == "tenant_admin"
        assert factories.PASSWORD not in response.text
        with transaction() as session:
            tenant = session.get(Tenant, uuid.UUID(body["user"]["tenantId"]))
            user = session.get(User, uuid.UUID(body["user"]["id"]))
        assert (tenant.name, tenant.plan, tenant.status) == (tenant_name, "free", "active")
        assert (user.tenant_id, user.role, user.active) == (tenant.id, "tenant_admin", True)
        assert user.password_hash != factories.PASSWORD
        entries = audit_entries(response.headers["x-request-id"], "tenant.register")
        assert len(entries) == 1
        assert factories.PASSWORD not in json.dumps(entries[0].changes)
        me = client.get(ME, headers=bearer(body["accessToken"])).json()
        assert me["tenant"] == {"id": str(tenant.id), "name": tenant_name, "plan": "free", "status": "active"}

    def test_duplicate_email_is_a_conflict(self, client, tenant_admin):
        tenant_name = factories.unique("Duplicate Co ")
        response = client.post(REGISTER, json={"email": tenant_admin.email.upper(), "password": factories.PASSWORD,
                                               "name": "Copy Cat", "tenantName": tenant_name})

        assert_error(response, 409, "CONFLICT", details={"field": "email"})
        with transaction() as session:
            assert session.exec(select(Tenant).where(Tenant.name == tenant_name)).first() is None

    def test_too_short_password_is_a_validation_error_and_creates_nothing(self, client):
        email = f"{factories.unique('short')}@example.com"
        tenant_name = factories.unique("Short Co ")
        response = client.post(REGISTER, json={"email": email, "password": "tiny-pw", "name": "Sho Rt",
                                               "tenantName": tenant_name})

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        assert "tiny-pw" not in response.text
        with transaction() as session:
            assert session.exec(select(User).where(User.email == email)).first() is None
            assert session.exec(select(Tenant).where(Tenant.name == tenant_name)).first() is None

    def test_email_is_stored_in_lower_case(self, client):
        email = f"{factories.unique('Mixed')}@Example.COM"
        response = client.post(REGISTER, json={"email": email, "password": factories.PASSWORD, "name": "Mo Mixed",
                                               "tenantName": factories.unique("Mixed Co ")})

        assert response.status_code == 201, response.text
        assert response.json()["user"]["email"] == email.lower()
        factories.login(client, email.lower(), factories.PASSWORD)

    def test_malformed_email_is_a_validation_error(self, client):
        tenant_name = factories.unique("No Email Co ")
        response = client.post(REGISTER, json={"email": "not-an-email", "password": factories.PASSWORD,
                                               "name": "No Email", "tenantName": tenant_name})

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)
        with transaction() as session:
            assert session.exec(select(Tenant).where(Tenant.name == tenant_name)).first() is None

    def test_unknown_field_is_a_validation_error(self, client):
        response = client.post(REGISTER, json={"email": f"{factories.unique('x')}@example.com",
                                               "password": factories.PASSWORD, "name": "X", "tenantName": "X",
                                               "role": "super_admin"})

        assert_error(response, 400, "VALIDATION_ERROR", details=ANY)


class TestGetMe:
    def test_tenant_admin_sees_itself_its_tenant_and_its_permissions(self, client, tenant_admin):
        response = client.get(ME, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"id", "email", "name", "role", "tenantId", "tenant", "permissions", "createdAt",
                             "lastLogin"}
        assert body["id"] == tenant_admin.user_id
        assert body["email"] == tenant_admin.email
        assert body["role"] == "tenant_admin"
        assert body["tenantId"] == tenant_admin.tenant_id
        assert set(body["tenant"]) == {"id", "name", "plan", "status"}
        assert body["tenant"]["id"] == tenant_admin.tenant_id
        assert (body["tenant"]["plan"], body["tenant"]["status"]) == ("free", "active")
        assert "profile" in body["permissions"]
        assert body["permissions"] == TENANT_ADMIN_SCOPES
        assert body["createdAt"].endswith("Z")

    def test_plain_user_holds_only_what_its_role_grants(self, client, member):
        response = client.get(ME, headers=member.headers)

        assert response.status_code == 200, response.text
        assert response.json()["role"] == "user"
        assert response.json()["permissions"] == sorted(ROLE_SCOPES["user"])
        assert "users:read" not in response.json()["permissions"]

    def test_super_admin_has_no_tenant(self, client, super_admin):
        response = client.get(ME, headers=super_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["role"], body["tenantId"], body["tenant"]) == ("super_admin", None, None)
        assert {"profile", "tenants:read", "tenants:write"} <= set(body["permissions"])
        assert "users:write" not in body["permissions"]


class TestCookieSession:
    """Login may set the session as HttpOnly cookies (backend integration guide, "Or using cookie-based auth")."""

    CSRF: ClassVar[dict[str, str]] = {"X-Requested-With": "fetch"}

    @pytest.fixture
    def browser(self, app):
        """A client that keeps cookies, over https (the cookies are Secure)."""
        from starlette.testclient import TestClient

        with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as browser:
            yield browser

    def _sign_in(self, browser, account: factories.Account):
        response = browser.post(LOGIN, json={"email": account.email, "password": account.password, "cookie": True})
        assert response.status_code == 200, response.text
        return response

    @staticmethod
    def _set_cookies(response) -> dict[str, list[str]]:
        """The response's `Set-Cookie` headers by cookie name: [value, attribute, ...]."""
        found = {}
        for header in response.headers.get_list("set-cookie"):
            first, *attributes = header.split("; ")
            name, _, value = first.partition("=")
            found[name] = [value, *attributes]
        return found

    def test_login_sets_httponly_secure_session_and_refresh_cookies(self, browser, tenant_admin):
        response = self._sign_in(browser, tenant_admin)

        cookies = self._set_cookies(response)
        assert set(cookies) == {"hub_session", "hub_refresh"}
        session, refresh = cookies["hub_session"], cookies["hub_refresh"]
        assert session[0] == response.json()["accessToken"]
        assert set(session[1:]) == {"HttpOnly", "Secure", "SameSite=Lax", "Path=/api/v1", "Max-Age=900"}
        assert refresh[0] == response.json()["refreshToken"]
        assert set(refresh[1:]) == {"HttpOnly", "Secure", "SameSite=Strict", "Path=/api/v1/auth", "Max-Age=604800"}
        assert response.headers["cache-control"] == "no-store"

    def test_without_the_flag_no_cookie_is_set(self, browser, tenant_admin):
        response = browser.post(LOGIN, json={"email": tenant_admin.email, "password": tenant_admin.password})

        assert "set-cookie" not in response.headers

    def test_the_deployment_setting_turns_cookies_on_unless_the_login_says_no(self, browser, tenant_admin, monkeypatch):
        from server import runtime

        monkeypatch.setattr(runtime.get().settings, "session_cookies", True)
        credentials = {"email": tenant_admin.email, "password": tenant_admin.password}

        by_setting = browser.post(LOGIN, json=credentials)
        declined = browser.post(LOGIN, json={**credentials, "cookie": False})

        assert by_setting.status_code == 200 and set(self._set_cookies(by_setting)) == {"hub_session", "hub_refresh"}
        assert declined.status_code == 200 and "set-cookie" not in declined.headers

    def test_the_cookie_is_accepted_like_the_bearer_token(self, browser, tenant_admin):
        self._sign_in(browser, tenant_admin)

        response = browser.get(ME)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == tenant_admin.user_id

    def test_unsafe_methods_need_the_csrf_header(self, browser, tenant_admin):
        self._sign_in(browser, tenant_admin)
        body = {"name": "ci", "scopes": ["integrations:read"]}

        forged = browser.post("/api/v1/tenant/api-tokens", json=body)
        sent_by_the_app = browser.post("/api/v1/tenant/api-tokens", json=body, headers=self.CSRF)

        error = assert_error(forged, 403, "PERMISSION_DENIED", details={"header": "X-Requested-With"})
        assert error["message"] == "A cookie session needs the X-Requested-With header on POST"
        assert sent_by_the_app.status_code == 201, sent_by_the_app.text

    def test_logout_clears_both_cookies_and_ends_the_session(self, browser, tenant_admin):
        signed_in = self._sign_in(browser, tenant_admin)

        out = browser.post(LOGOUT, json={"refreshToken": signed_in.json()["refreshToken"]}, headers=self.CSRF)

        assert out.status_code == 204, out.text
        cookies = self._set_cookies(out)
        assert {name: (value.strip('"'), "Max-Age=0" in rest) for name, (value, *rest) in cookies.items()} == {
            "hub_session": ("", True), "hub_refresh": ("", True)}
        assert "hub_session" not in browser.cookies and "hub_refresh" not in browser.cookies
        assert_error(browser.get(ME), 401, "NO_TOKEN")
        browser.cookies.set("hub_session", signed_in.json()["accessToken"], domain="testserver.local")
        assert_error(browser.get(ME), 401, "INVALID_TOKEN")  # the cookie replayed after logout

    def test_logout_without_a_body_revokes_the_cookie_login(self, browser, tenant_admin):
        signed_in = self._sign_in(browser, tenant_admin)

        out = browser.post(LOGOUT, headers=self.CSRF)

        assert out.status_code == 204, out.text
        assert "hub_refresh" not in browser.cookies
        refused = browser.post(REFRESH, json={"refreshToken": signed_in.json()["refreshToken"]})
        assert_error(refused, 401, "INVALID_TOKEN")
        family = uuid.UUID(_claims(signed_in.json()["refreshToken"])["fam"])
        with transaction() as session:
            rows = session.exec(select(RefreshToken).where(RefreshToken.family_id == family)).all()
            assert rows and all(row.revoked_at is not None for row in rows)

    def test_refresh_by_cookie_rotates_both_cookies(self, browser, tenant_admin):
        signed_in = self._sign_in(browser, tenant_admin)

        rotated = browser.post(REFRESH, headers=self.CSRF)

        assert rotated.status_code == 200, rotated.text
        body = rotated.json()
        assert body["refreshToken"] != signed_in.json()["refreshToken"]
        assert _claims(body["refreshToken"])["fam"] == _claims(signed_in.json()["refreshToken"])["fam"]
        cookies = self._set_cookies(rotated)
        assert (cookies["hub_session"][0], cookies["hub_refresh"][0]) == (body["accessToken"], body["refreshToken"])
        assert "Path=/api/v1/auth" in cookies["hub_refresh"] and "SameSite=Strict" in cookies["hub_refresh"]
        assert rotated.headers["cache-control"] == "no-store"
        assert browser.get(ME).status_code == 200
        # The rotated-away token is single use: presenting it again revokes the login.
        reused = browser.post(REFRESH, json={"refreshToken": signed_in.json()["refreshToken"]})
        assert_error(reused, 401, "INVALID_TOKEN")
        assert_error(browser.post(REFRESH, headers=self.CSRF), 401, "INVALID_TOKEN")

    def test_refresh_by_cookie_needs_the_csrf_header(self, browser, tenant_admin):
        signed_in = self._sign_in(browser, tenant_admin)

        forged = browser.post(REFRESH)

        error = assert_error(forged, 403, "PERMISSION_DENIED", details={"header": "X-Requested-With"})
        assert error["message"] == "A cookie session needs the X-Requested-With header on POST"
        with transaction() as session:  # nothing was consumed: the app's own refresh still works
            row = session.get(RefreshToken, uuid.UUID(_claims(signed_in.json()["refreshToken"])["jti"]))
            assert row.used_at is None
        assert browser.post(REFRESH, headers=self.CSRF).status_code == 200

    def test_refresh_with_a_body_token_sets_no_cookie(self, browser, tenant_admin):
        signed_in = self._sign_in(browser, tenant_admin)

        rotated = browser.post(REFRESH, json={"refreshToken": signed_in.json()["refreshToken"]})

        assert rotated.status_code == 200, rotated.text
        assert "set-cookie" not in rotated.headers

    def test_refresh_without_body_or_cookie_is_a_validation_error(self, browser):
        response = browser.post(REFRESH)

        error = assert_error(response, 400, "VALIDATION_ERROR", details={"field": "refreshToken"})
        assert error["message"] == "refreshToken is required (in the body, or the hub_refresh cookie)"

    def test_a_forged_refresh_cookie_is_refused(self, browser):
        browser.cookies.set("hub_refresh", "not-a-token", domain="testserver.local", path="/api/v1/auth")

        response = browser.post(REFRESH, headers=self.CSRF)

        assert_error(response, 401, "INVALID_TOKEN")
        assert response.headers["www-authenticate"] == 'Bearer realm="integration-hub", error="invalid_token"'

    def test_an_api_token_is_no_session_cookie(self, browser, tenant_admin):
        created = browser.post("/api/v1/tenant/api-tokens", json={"name": "ci", "scopes": ["integrations:read"]},
                               headers=tenant_admin.headers)

        browser.cookies.set("hub_session", created.json()["token"], domain="testserver.local")
        response = browser.get(ME)

        assert_error(response, 401, "INVALID_TOKEN")


def _claims(token: str) -> dict:
    """A JWT's claims, unverified (the test only reads them)."""
    return jwt.decode(token, options={"verify_signature": False})
