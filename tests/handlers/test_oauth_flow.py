"""The OAuth2 connection flow end to end, over real HTTP against the sandbox provider.

POST /tenant/integrations/{id}/connect/oauth (tag `connections`), the provider's authorization
endpoint, GET /integrations/oauth/callback (tag `oauth`), then POST .../connection/test, which
refreshes a token that expires within 60 s. Every refusal stores nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from sqlmodel import select

from connectors import connection_flows
from handlers import views
from persistence import connections
from persistence.db import transaction
from persistence.models import AuditEntry, Connection, Integration, OAuthState, as_utc
from server import runtime
from tests import factories
from tests.handlers.test_providers import assert_error

BASE = "/api/v1/tenant/integrations"
RETURN_URL = "https://app.example.com/done"
CLIENT = ("hub-sandbox-client", "hub-sandbox-secret")
STATE_REFUSED = "The OAuth state is unknown, expired or already used"
REFRESH_REFUSED = "The provider refused the refresh token (invalid_grant); authorize the connection again"


# -- helpers ----------------------------------------------------------------------------------


def start(client, admin: factories.Account, integration: dict, return_url: str = RETURN_URL):
    """POST .../connect/oauth and return the response."""
    return client.post(f"{BASE}/{integration['id']}/connect/oauth", json={"returnUrl": return_url},
                       headers=admin.headers)


def authorize(client, admin: factories.Account, integration: dict, **params: str) -> tuple[dict, httpx.Response]:
    """Start the flow and open the authorization URL; return (start body, the provider's redirect)."""
    started = start(client, admin, integration)
    assert started.status_code == 200, started.text
    redirect = factories.follow_authorization(started.json()["authorizationUrl"], **params)
    assert redirect.status_code == 302, redirect.text
    return started.json(), redirect


def callback(client, location: str, **headers: str):
    """Follow the provider's redirect to the hub's callback (no redirect following)."""
    return client.get(factories.callback_path(location), follow_redirects=False, headers=headers)


def connect(client, admin: factories.Account, integration: dict) -> httpx.Response:
    """Run the whole flow; assert it ends connected; return the callback response."""
    _, redirect = authorize(client, admin, integration)
    response = callback(client, redirect.headers["location"])
    assert response.status_code == 302, response.text
    assert response.headers["location"] == returned(integration, status="connected")
    return response


def returned(integration: dict, **outcome: str) -> str:
    """The returnUrl with the outcome the callback appends."""
    return f"{RETURN_URL}?{urlencode({**outcome, 'integrationId': integration['id']})}"


def with_state(location: str, state: str) -> str:
    """`location` with its `state` query parameter replaced."""
    parts = urlsplit(location)
    query = [(k, state if k == "state" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def tamper(value: str) -> str:
    """`value` with one character changed."""
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def db_connection(integration: dict) -> Connection | None:
    with transaction() as session:
        stmt = select(Connection).where(Connection.integration_id == uuid.UUID(integration["id"]))
        return session.exec(stmt).first()


def db_integration(integration: dict) -> Integration:
    with transaction() as session:
        return session.get(Integration, uuid.UUID(integration["id"]))


def db_states(integration: dict) -> list[OAuthState]:
    with transaction() as session:
        stmt = select(OAuthState).where(OAuthState.integration_id == uuid.UUID(integration["id"]))
        return list(session.exec(stmt).all())


def db_state(state: str) -> OAuthState | None:
    with transaction() as session:
        digest = hashlib.sha256(state.encode()).hexdigest()
        return session.exec(select(OAuthState).where(OAuthState.state_hash == digest)).first()


def stored_credentials(integration: dict) -> dict:
    return connections.credentials(db_connection(integration))


def audit_entries(resource_id: str, action: str, outcome: str | None = None) -> list[AuditEntry]:
    with transaction() as session:
        stmt = select(AuditEntry).where(AuditEntry.resource_id == str(resource_id), AuditEntry.action == action)
        if outcome:
            stmt = stmt.where(AuditEntry.outcome == outcome)
        return list(session.exec(stmt).all())


def get_connection(client, admin: factories.Account, integration: dict) -> dict:
    response = client.get(f"{BASE}/{integration['id']}/connection", headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def get_integration(client, admin: factories.Account, integration: dict) -> dict:
    response = client.get(f"{BASE}/{integration['id']}", headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def connection_test(client, admin: factories.Account, integration: dict) -> dict:
    """POST .../connection/test; assert 200 and return the result."""
    response = client.post(f"{BASE}/{integration['id']}/connection/test", headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()



def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_nothing_stored(client, admin: factories.Account, integration: dict) -> None:
    """No connection row; the integration is still pending; GET connection answers 404."""
    assert db_connection(integration) is None
    assert db_integration(integration).status == "pending"
    response = client.get(f"{BASE}/{integration['id']}/connection", headers=admin.headers)
    assert_error(response, 404, "CONNECTION_NOT_FOUND", message=f"Connection of integration {integration['id']} not found",
                 details=None)


def assert_state_refused(response) -> None:
    assert_error(response, 400, "VALIDATION_ERROR", message=STATE_REFUSED, details={"field": "state"})


@pytest.fixture
def token_requests(sandbox, monkeypatch) -> list[dict]:
    """Every request the sandbox's token endpoint receives from now on (form fields, decoded)."""
    seen: list[dict] = []
    inner = sandbox.app.wsgi_app

    def counting(environ, start_response):
        if environ.get("PATH_INFO") == "/oauth/token":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(raw)
            seen.append(dict(parse_qsl(raw.decode())))
        return inner(environ, start_response)

    monkeypatch.setattr(sandbox.app, "wsgi_app", counting)
    return seen


@pytest.fixture
def short_lived_tokens(sandbox, monkeypatch) -> None:
    """Access tokens issued from now on live 5 s: inside the hub's 60 s refresh buffer."""
    monkeypatch.setattr(sandbox.config, "access_token_ttl", 5)


# -- POST /tenant/integrations/{id}/connect/oauth -----------------------------------------------


class TestStartOAuthConnection:
    def test_answers_authorization_url_with_pkce_s256(self, client, tenant_admin, sandbox_integration, sandbox,
                                                      settings):
        response = start(client, tenant_admin, sandbox_integration)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"authorizationUrl", "state"}
        url = urlsplit(body["authorizationUrl"])
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{sandbox.base_url}/oauth/authorize"
        query = parse_qs(url.query)
        assert all(len(values) == 1 for values in query.values()), query
        params = {k: v[0] for k, v in query.items()}
        assert params["response_type"] == "code"
        assert params["client_id"] == "hub-sandbox-client"
        assert params["redirect_uri"] == settings.oauth_redirect_uri
        assert params["scope"] == "crm.read crm.write"
        assert params["state"] == body["state"]
        assert params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) >= 43
        assert set(params["code_challenge"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert "code_verifier" not in params and "client_secret" not in params

    def test_stores_a_hashed_single_use_state_bound_to_the_caller(self, client, tenant_admin, sandbox_integration):
        before = datetime.now(UTC)
        body = start(client, tenant_admin, sandbox_integration).json()

        [row] = db_states(sandbox_integration)
        assert row.state_hash == hashlib.sha256(body["state"].encode()).hexdigest()
        assert body["state"] not in row.sealed_verifier
        assert row.tenant_id == uuid.UUID(tenant_admin.tenant_id)
        assert row.user_id == uuid.UUID(tenant_admin.user_id)
        assert row.user_scoped is False
        assert row.return_url == RETURN_URL
        assert row.used_at is None
        assert before + timedelta(minutes=10) <= as_utc(row.expires_at) <= datetime.now(UTC) + timedelta(minutes=10)

    def test_challenge_is_the_s256_of_the_stored_verifier(self, client, tenant_admin, sandbox_integration):
        from persistence import vault

        body = start(client, tenant_admin, sandbox_integration).json()
        [row] = db_states(sandbox_integration)

        verifier = vault.open_sealed(row.sealed_verifier, binding=f"oauth-state:{row.id}")
        challenge = parse_qs(urlsplit(body["authorizationUrl"]).query)["code_challenge"][0]
        assert 43 <= len(verifier) <= 128
        assert verifier not in body["authorizationUrl"]
        assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")

    def test_each_start_gets_a_fresh_state_and_verifier(self, client, tenant_admin, sandbox_integration):
        first = start(client, tenant_admin, sandbox_integration).json()
        second = start(client, tenant_admin, sandbox_integration).json()

        assert first["state"] != second["state"]
        challenges = {parse_qs(urlsplit(b["authorizationUrl"]).query)["code_challenge"][0] for b in (first, second)}
        assert len(challenges) == 2

    @pytest.mark.parametrize("return_url", [
        "https://evil.example/x",
        "https://app.example.com.evil.example/done",
        "https://app.example.com@evil.example/done",
        "http://app.example.com/done",
        "https://app.example.com:8443/done",
    ])
    def test_foreign_return_url_is_refused_and_stores_no_state(self, client, tenant_admin, sandbox_integration,
                                                                return_url):
        response = start(client, tenant_admin, sandbox_integration, return_url=return_url)

        assert_error(response, 400, "VALIDATION_ERROR", message="returnUrl must be on an allowed origin (ALLOWED_ORIGINS)",
                     details={"field": "returnUrl"})
        assert db_states(sandbox_integration) == []
        assert audit_entries(sandbox_integration["id"], "connection.oauth_start") == []

    def test_other_tenants_integration_is_not_found(self, client, other_tenant_admin, sandbox_integration):
        response = start(client, other_tenant_admin, sandbox_integration)

        assert_error(response, 404, "INTEGRATION_NOT_FOUND", message=f"Integration {sandbox_integration['id']} not found",
                     details=None)
        assert db_states(sandbox_integration) == []


# -- GET /integrations/oauth/callback -------------------------------------------------------------


class TestOAuthCallback:
    def test_connects_and_redirects_to_return_url(self, client, tenant_admin, sandbox_integration, sandbox):
        before = datetime.now(UTC)
        started, redirect = authorize(client, tenant_admin, sandbox_integration)

        response = callback(client, redirect.headers["location"])

        assert response.status_code == 302
        assert response.headers["location"] == returned(sandbox_integration, status="connected")
        assert response.headers["cache-control"] == "no-store"
        assert response.content == b""
        connection = get_connection(client, tenant_admin, sandbox_integration)
        row = db_connection(sandbox_integration)
        assert connection == {
            "connectionId": str(row.id),
            "integrationId": sandbox_integration["id"],
            "status": "active",
            "authType": "oauth2",
            "displayName": None,
            "scopes": ["crm.read", "crm.write"],
            "connectedAt": connection["connectedAt"],
            "lastValidatedAt": None,
            "validationError": None,
            "expiresAt": connection["expiresAt"],
            "credentialSecretName": f"connections/{row.id}/v1",
        }
        assert before <= parse_time(connection["connectedAt"]) <= datetime.now(UTC)
        expires_at = parse_time(connection["expiresAt"])
        assert before + timedelta(seconds=3590) <= expires_at <= datetime.now(UTC) + timedelta(seconds=3600)
        integration = get_integration(client, tenant_admin, sandbox_integration)
        assert integration["status"] == "connected"
        assert integration["connectionStatus"] == "active"
        assert integration["lastError"] is None
        assert db_state(started["state"]).used_at is not None

    def test_stores_the_tokens_sealed(self, client, tenant_admin, sandbox_integration, sandbox):
        connect(client, tenant_admin, sandbox_integration)

        row = db_connection(sandbox_integration)
        credentials = connections.credentials(row)
        assert set(credentials) == {"accessToken", "refreshToken"}
        assert credentials["accessToken"].startswith("sbx_at_") and credentials["refreshToken"].startswith("sbx_rt_")
        assert row.secret.startswith("v1:")
        assert credentials["accessToken"] not in row.secret and credentials["refreshToken"] not in row.secret
        token = sandbox.state.find_access_token(credentials["accessToken"])
        assert token is not None and token.refresh_token == credentials["refreshToken"]

    def test_audits_the_callback_for_the_user_who_started(self, client, tenant_admin, sandbox_integration):
        response = connect(client, tenant_admin, sandbox_integration)

        row = db_connection(sandbox_integration)
        [entry] = audit_entries(row.id, "connection.oauth_callback")
        assert entry.tenant_id == uuid.UUID(tenant_admin.tenant_id)
        assert entry.actor_id == uuid.UUID(tenant_admin.user_id)
        assert entry.outcome == "success"
        assert entry.request_id == response.headers["X-Request-ID"]
        assert entry.changes == {"integrationId": sandbox_integration["id"], "error": None}

    def test_connection_test_uses_the_token(self, client, tenant_admin, sandbox_integration, sandbox, token_requests):
        connect(client, tenant_admin, sandbox_integration)
        credentials = stored_credentials(sandbox_integration)

        result = connection_test(client, tenant_admin, sandbox_integration)

        assert result["success"] is True
        assert result["message"] == f"GET {sandbox.base_url}/me answered 200 as expected"
        assert result["details"]["authMethod"] == "oauth2"
        assert result["details"]["scopes"] == ["crm.read", "crm.write"]
        assert "error" not in result
        assert stored_credentials(sandbox_integration) == credentials  # a 1 h token is not refreshed
        assert [r["grant_type"] for r in token_requests] == ["authorization_code"]
        assert audit_entries(db_connection(sandbox_integration).id, "connection.refresh") == []
        assert get_connection(client, tenant_admin, sandbox_integration)["lastValidatedAt"] == result["testedAt"]

    def test_tampered_state_is_refused_and_stores_nothing(self, client, tenant_admin, sandbox_integration,
                                                          token_requests):
        started, redirect = authorize(client, tenant_admin, sandbox_integration)

        response = callback(client, with_state(redirect.headers["location"], tamper(started["state"])))

        assert_state_refused(response)
        assert_nothing_stored(client, tenant_admin, sandbox_integration)
        assert db_state(started["state"]).used_at is None
        assert token_requests == []

    def test_unknown_state_is_refused(self, client, tenant_admin, sandbox_integration):
        response = client.get("/api/v1/integrations/oauth/callback",
                              params={"state": "not-a-state-" + uuid.uuid4().hex, "code": "abc"}, follow_redirects=False)

        assert_state_refused(response)
        assert_nothing_stored(client, tenant_admin, sandbox_integration)

    def test_missing_state_is_refused(self, client):
        response = client.get("/api/v1/integrations/oauth/callback", params={"code": "abc"}, follow_redirects=False)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_replayed_callback_is_refused(self, client, tenant_admin, sandbox_integration, token_requests):
        _, redirect = authorize(client, tenant_admin, sandbox_integration)
        assert callback(client, redirect.headers["location"]).status_code == 302
        first = db_connection(sandbox_integration)

        response = callback(client, redirect.headers["location"])

        assert_state_refused(response)
        again = db_connection(sandbox_integration)
        assert (again.secret, again.secret_version, again.status) == (first.secret, 1, "active")
        # The code was redeemed once: a second redemption would make the provider revoke the tokens.
        assert [r["grant_type"] for r in token_requests] == ["authorization_code"]
        assert connection_test(client, tenant_admin, sandbox_integration)["success"] is True

    def test_expired_state_is_refused_and_stores_nothing(self, client, tenant_admin, sandbox_integration,
                                                         token_requests):
        started, redirect = authorize(client, tenant_admin, sandbox_integration)
        with transaction() as session:
            row = session.exec(select(OAuthState).where(
                OAuthState.state_hash == hashlib.sha256(started["state"].encode()).hexdigest())).one()
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
            session.add(row)

        response = callback(client, redirect.headers["location"])

        assert_state_refused(response)
        assert_nothing_stored(client, tenant_admin, sandbox_integration)
        assert token_requests == []

    def test_missing_pkce_is_refused_by_the_provider(self, client, tenant_admin, sandbox_integration,
                                                      token_requests):
        started = start(client, tenant_admin, sandbox_integration).json()
        parts = urlsplit(started["authorizationUrl"])
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "code_challenge"]
        redirect = httpx.get(urlunsplit(parts._replace(query=urlencode(query))), follow_redirects=False, timeout=10)
        assert redirect.status_code == 302, redirect.text
        assert parse_qs(urlsplit(redirect.headers["location"]).query)["error"] == ["invalid_request"]

        response = callback(client, redirect.headers["location"])

        assert response.status_code == 302, response.text
        assert response.headers["location"] == returned(sandbox_integration, status="error", error="invalid_request")
        row = db_connection(sandbox_integration)
        assert (row.status, row.secret, row.auth_type) == ("error", None, "oauth2")
        assert row.validation_error.startswith("The provider refused the authorization (invalid_request)")
        assert db_integration(sandbox_integration).status == "error"
        assert token_requests == []
        [entry] = audit_entries(row.id, "connection.oauth_callback")
        assert entry.outcome == "failure"
        assert entry.changes == {"integrationId": sandbox_integration["id"], "error": "invalid_request"}

    def test_access_denied_marks_the_connection_error(self, client, tenant_admin, sandbox_integration,
                                                       token_requests):
        _, redirect = authorize(client, tenant_admin, sandbox_integration, deny="1")
        assert parse_qs(urlsplit(redirect.headers["location"]).query)["error"] == ["access_denied"]

        response = callback(client, redirect.headers["location"])

        assert response.status_code == 302, response.text
        assert response.headers["location"] == returned(sandbox_integration, status="error", error="access_denied")
        connection = get_connection(client, tenant_admin, sandbox_integration)
        assert connection["status"] == "error"
        assert connection["validationError"] == "The user or the provider denied access"
        assert connection["credentialSecretName"] is None
        assert db_connection(sandbox_integration).secret is None
        integration = get_integration(client, tenant_admin, sandbox_integration)
        assert (integration["status"], integration["lastError"]) == ("error", "The user or the provider denied access")
        assert token_requests == []

    def test_denied_reauthorization_keeps_working_tokens(self, client, tenant_admin, sandbox_integration):
        connect(client, tenant_admin, sandbox_integration)
        credentials = stored_credentials(sandbox_integration)
        _, redirect = authorize(client, tenant_admin, sandbox_integration, deny="1")

        callback(client, redirect.headers["location"])

        assert stored_credentials(sandbox_integration) == credentials
        assert db_connection(sandbox_integration).status == "error"

    def test_error_code_is_cleaned_before_it_reaches_the_return_url(self, client, tenant_admin, sandbox_integration):
        started = start(client, tenant_admin, sandbox_integration).json()

        response = client.get("/api/v1/integrations/oauth/callback", follow_redirects=False, params={
            "state": started["state"], "error": "bad\r\nSet-Cookie: x=1&status=connected"})

        assert response.status_code == 302, response.text
        assert response.headers["location"] == returned(sandbox_integration, status="error",
                                                        error="badSetCookiex1statusconnected")

    def test_state_of_one_tenant_connects_only_that_tenant(self, client, tenant_admin, other_tenant_admin,
                                                           sandbox_provider, sandbox_integration):
        other_integration = factories.enable_integration(client, other_tenant_admin, sandbox_provider["id"])
        started, redirect = authorize(client, tenant_admin, sandbox_integration)

        # The callback is public: a browser signed in to another tenant may deliver it.
        response = callback(client, redirect.headers["location"], Authorization=f"Bearer {other_tenant_admin.access_token}")

        assert response.status_code == 302, response.text
        assert response.headers["location"] == returned(sandbox_integration, status="connected")
        row = db_connection(sandbox_integration)
        assert (row.tenant_id, row.status) == (uuid.UUID(tenant_admin.tenant_id), "active")
        assert db_connection(other_integration) is None
        other = client.get(f"{BASE}/{other_integration['id']}/connection", headers=other_tenant_admin.headers)
        assert_error(other, 404, "CONNECTION_NOT_FOUND", details=None)
        assert get_integration(client, other_tenant_admin, other_integration)["status"] == "pending"
        assert client.get(f"{BASE}/{sandbox_integration['id']}/connection",
                          headers=other_tenant_admin.headers).status_code == 404
        [entry] = audit_entries(row.id, "connection.oauth_callback")
        assert (entry.tenant_id, entry.actor_id) == (uuid.UUID(tenant_admin.tenant_id), uuid.UUID(tenant_admin.user_id))
        # ... and it stays single use, whoever presents it next.
        again = callback(client, with_state(redirect.headers["location"], started["state"]),
                         Authorization=f"Bearer {tenant_admin.access_token}")
        assert_state_refused(again)


# -- POST /tenant/integrations/{id}/connection/test: token refresh ------------------------------


class TestBrowserBinding:
    """A flow started from a cookie session completes only in that browser (issue 11 item 7, RFC 6749 section 10.12).

    Each browser is a client keeping its own cookies over https (the cookies are Secure); the
    authorization itself is followed at the sandbox over real HTTP.
    """

    CSRF: ClassVar[dict[str, str]] = {"X-Requested-With": "fetch"}

    @pytest.fixture
    def browsers(self, app):
        """Make browsers: in-process clients of the hub, each with its own cookie jar."""
        from starlette.testclient import TestClient

        opened = []

        def make() -> TestClient:
            browser = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)
            opened.append(browser.__enter__())
            return browser

        yield make
        for browser in opened:
            browser.__exit__(None, None, None)

    def sign_in(self, browser, account: factories.Account):
        response = browser.post("/api/v1/auth/login",
                                json={"email": account.email, "password": account.password, "cookie": True})
        assert response.status_code == 200, response.text

    def start_in(self, browser, integration: dict, base: str = BASE) -> tuple[dict, list[str]]:
        """Start the flow with the session cookie; return the body and the binding cookie's Set-Cookie parts."""
        response = browser.post(f"{base}/{integration['id']}/connect/oauth", json={"returnUrl": RETURN_URL},
                                headers=self.CSRF)
        assert response.status_code == 200, response.text
        [set_cookie] = response.headers.get_list("set-cookie")
        return response.json(), set_cookie.split("; ")

    def consent(self, started: dict) -> str:
        """Open the authorization URL at the sandbox (auto-approving); return the hub callback's path."""
        redirect = factories.follow_authorization(started["authorizationUrl"])
        assert redirect.status_code == 302, redirect.text
        return factories.callback_path(redirect.headers["location"])

    def test_the_flow_is_bound_by_an_httponly_cookie_sent_only_to_the_callback(self, browsers, tenant_admin,
                                                                              sandbox_integration):
        browser = browsers()
        self.sign_in(browser, tenant_admin)

        started, (pair, *attributes) = self.start_in(browser, sandbox_integration)

        name, _, nonce = pair.partition("=")
        assert name == "hub_oauth_" + hashlib.sha256(started["state"].encode()).hexdigest()[:16]
        assert set(attributes) == {"Max-Age=600", "Path=/api/v1/integrations/oauth/callback", "HttpOnly", "Secure",
                                   "SameSite=Lax"}
        random_part, binding = started["state"].split(".")
        assert len(random_part) == 43 and len(nonce) == 43
        assert binding == base64.urlsafe_b64encode(hashlib.sha256(nonce.encode()).digest()).rstrip(b"=").decode()
        assert nonce not in started["authorizationUrl"]
        [entry] = audit_entries(sandbox_integration["id"], "connection.oauth_start")
        assert entry.changes == {"userScoped": False, "browserBound": True}

    def test_completes_in_the_browser_that_started_it(self, browsers, tenant_admin, sandbox_integration):
        browser = browsers()
        self.sign_in(browser, tenant_admin)
        started, _ = self.start_in(browser, sandbox_integration)

        response = browser.get(self.consent(started), follow_redirects=False)

        assert response.status_code == 302, response.text
        assert response.headers["location"] == returned(sandbox_integration, status="connected")
        [cleared] = response.headers.get_list("set-cookie")
        assert cleared.startswith("hub_oauth_") and "Max-Age=0" in cleared.split("; ")
        assert not [c for c in browser.cookies.jar if c.name.startswith("hub_oauth_")]
        assert db_connection(sandbox_integration).status == "active"
        assert stored_credentials(sandbox_integration)["accessToken"].startswith("sbx_at_")

    def test_another_client_without_the_cookie_is_refused_and_nothing_is_stored(self, client, browsers, tenant_admin,
                                                                                sandbox_integration, token_requests):
        browser = browsers()
        self.sign_in(browser, tenant_admin)
        started, _ = self.start_in(browser, sandbox_integration)
        path = self.consent(started)

        elsewhere = client.get(path, follow_redirects=False)  # the URL opened by someone else

        assert elsewhere.status_code == 302, elsewhere.text
        assert elsewhere.headers["location"] == returned(sandbox_integration, status="error", error="browser_mismatch")
        assert "set-cookie" not in elsewhere.headers
        assert elsewhere.headers["cache-control"] == "no-store"
        assert_nothing_stored(client, tenant_admin, sandbox_integration)
        assert token_requests == []  # the code was never exchanged
        assert db_state(started["state"]).used_at is not None
        [entry] = audit_entries(sandbox_integration["id"], "connection.oauth_callback", outcome="denied")
        assert entry.actor_id == uuid.UUID(tenant_admin.user_id)
        assert entry.request_id == elsewhere.headers["X-Request-ID"]
        assert entry.changes == {"error": "browser_mismatch", "browserNonce": False}
        # Consumed: the browser that started it cannot complete it any more either.
        assert_state_refused(browser.get(path, follow_redirects=False))
        assert_nothing_stored(client, tenant_admin, sandbox_integration)

    def test_another_cookie_session_is_refused(self, client, browsers, tenant_admin, sandbox_integration,
                                               token_requests):
        starter, other = browsers(), browsers()
        self.sign_in(starter, tenant_admin)
        self.sign_in(other, tenant_admin)
        started, _ = self.start_in(starter, sandbox_integration)
        self.start_in(other, sandbox_integration)  # the other browser holds a binding cookie of its own flow

        response = other.get(self.consent(started), follow_redirects=False)

        assert response.headers["location"] == returned(sandbox_integration, status="error", error="browser_mismatch")
        assert_nothing_stored(client, tenant_admin, sandbox_integration)
        assert token_requests == []

    def test_a_forged_cookie_of_the_right_name_is_refused(self, client, browsers, tenant_admin, sandbox_integration,
                                                          token_requests):
        browser = browsers()
        self.sign_in(browser, tenant_admin)
        started, (pair, *_) = self.start_in(browser, sandbox_integration)
        name = pair.partition("=")[0]
        forger = browsers()
        forger.cookies.set(name, tamper(pair.partition("=")[2]), domain="testserver.local",
                           path="/api/v1/integrations/oauth/callback")

        response = forger.get(self.consent(started), follow_redirects=False)

        assert response.headers["location"] == returned(sandbox_integration, status="error", error="browser_mismatch")
        [cleared] = response.headers.get_list("set-cookie")
        assert cleared.startswith(f"{name}=") and "Max-Age=0" in cleared.split("; ")
        assert_nothing_stored(client, tenant_admin, sandbox_integration)
        assert token_requests == []
        [entry] = audit_entries(sandbox_integration["id"], "connection.oauth_callback", outcome="denied")
        assert entry.changes == {"error": "browser_mismatch", "browserNonce": True}

    def test_two_flows_in_one_browser_keep_their_own_cookies(self, browsers, tenant_admin, sandbox_integration):
        browser = browsers()
        self.sign_in(browser, tenant_admin)
        first, _ = self.start_in(browser, sandbox_integration)
        self.start_in(browser, sandbox_integration)

        response = browser.get(self.consent(first), follow_redirects=False)

        assert response.headers["location"] == returned(sandbox_integration, status="connected")

    def test_a_user_scoped_flow_is_bound_too(self, client, browsers, tenant_admin, member, sandbox_provider,
                                             token_requests):
        integration = factories.enable_integration(client, tenant_admin, sandbox_provider["id"], userScoped=True)
        browser = browsers()
        self.sign_in(browser, member)
        started, _ = self.start_in(browser, integration, base="/api/v1/user/integrations")
        path = self.consent(started)

        refused = client.get(path, follow_redirects=False)

        assert refused.headers["location"] == returned(integration, status="error", error="browser_mismatch")
        assert db_connection(integration) is None
        assert token_requests == []
        started, _ = self.start_in(browser, integration, base="/api/v1/user/integrations")
        completed = browser.get(self.consent(started), follow_redirects=False)
        assert completed.headers["location"] == returned(integration, status="connected")
        row = db_connection(integration)
        assert (row.user_id, row.status) == (uuid.UUID(member.user_id), "active")

    def test_a_bearer_started_flow_is_not_bound(self, client, browsers, tenant_admin, sandbox_integration):
        started = start(client, tenant_admin, sandbox_integration)

        assert "set-cookie" not in started.headers
        assert "." not in started.json()["state"]
        [entry] = audit_entries(sandbox_integration["id"], "connection.oauth_start")
        assert entry.changes == {"userScoped": False, "browserBound": False}
        # Whoever opens the URL completes it (documented: the URL is a secret, single use, 10 minutes).
        response = browsers().get(self.consent(started.json()), follow_redirects=False)
        assert response.headers["location"] == returned(sandbox_integration, status="connected")


class TestTokenRefresh:
    def test_token_expiring_within_the_buffer_is_refreshed(self, client, tenant_admin, sandbox_integration,
                                                           short_lived_tokens, token_requests):
        connect(client, tenant_admin, sandbox_integration)
        connection = get_connection(client, tenant_admin, sandbox_integration)
        assert parse_time(connection["expiresAt"]) <= datetime.now(UTC) + timedelta(seconds=5)
        old = stored_credentials(sandbox_integration)

        result = connection_test(client, tenant_admin, sandbox_integration)

        assert result["success"] is True, result
        assert result["details"]["authMethod"] == "oauth2"
        new = stored_credentials(sandbox_integration)
        assert new["refreshToken"] != old["refreshToken"]
        assert new["accessToken"] != old["accessToken"]
        assert [r["grant_type"] for r in token_requests] == ["authorization_code", "refresh_token"]
        assert token_requests[1]["refresh_token"] == old["refreshToken"]
        row = db_connection(sandbox_integration)
        [entry] = audit_entries(row.id, "connection.refresh")
        assert (entry.outcome, entry.tenant_id) == ("success", uuid.UUID(tenant_admin.tenant_id))
        after = get_connection(client, tenant_admin, sandbox_integration)
        assert after["status"] == "active"
        assert parse_time(after["expiresAt"]) > parse_time(connection["expiresAt"])
        assert after["credentialSecretName"] == connection["credentialSecretName"]

    def test_refresh_token_reuse_at_the_provider_expires_the_connection(self, client, tenant_admin, sandbox,
                                                                         sandbox_integration, short_lived_tokens):
        connect(client, tenant_admin, sandbox_integration)
        old = stored_credentials(sandbox_integration)
        assert connection_test(client, tenant_admin, sandbox_integration)["success"] is True  # rotates the refresh token
        assert stored_credentials(sandbox_integration)["refreshToken"] != old["refreshToken"]

        replay = httpx.post(f"{sandbox.base_url}/oauth/token", auth=CLIENT, timeout=10,
                            data={"grant_type": "refresh_token", "refresh_token": old["refreshToken"]})
        assert replay.status_code == 400, replay.text
        assert replay.json()["error"] == "invalid_grant"

        result = connection_test(client, tenant_admin, sandbox_integration)

        assert result["success"] is False
        assert result["error"] == REFRESH_REFUSED
        assert result["responseTime"] is None
        connection = get_connection(client, tenant_admin, sandbox_integration)
        assert (connection["status"], connection["validationError"]) == ("expired", REFRESH_REFUSED)
        assert "authorize" in connection["validationError"]
        integration = get_integration(client, tenant_admin, sandbox_integration)
        assert (integration["status"], integration["lastError"]) == ("error", REFRESH_REFUSED)
        assert integration["connectionStatus"] == "expired"
        row = db_connection(sandbox_integration)
        assert [e.changes for e in audit_entries(row.id, "connection.refresh", "failure")] == [{"error": "invalid_grant"}]

    def test_expired_connection_is_not_refreshed_again(self, client, tenant_admin, sandbox, sandbox_integration,
                                                       short_lived_tokens, token_requests):
        connect(client, tenant_admin, sandbox_integration)
        family = sandbox.state.find_access_token(stored_credentials(sandbox_integration)["accessToken"]).family_id
        sandbox.state.revoke_family(family)
        first = connection_test(client, tenant_admin, sandbox_integration)
        assert first["error"] == REFRESH_REFUSED
        requests_so_far = len(token_requests)

        second = connection_test(client, tenant_admin, sandbox_integration)
        third = connection_test(client, tenant_admin, sandbox_integration)

        assert (second["success"], second["error"]) == (False, REFRESH_REFUSED)
        assert (third["success"], third["error"]) == (False, REFRESH_REFUSED)
        assert len(token_requests) == requests_so_far == 2  # the code exchange and the one refused refresh
        row = db_connection(sandbox_integration)
        assert row.status == "expired"
        assert len(audit_entries(row.id, "connection.refresh", "failure")) == 1
        assert audit_entries(row.id, "connection.refresh", "success") == []

    def test_reconnecting_revives_an_expired_connection(self, client, tenant_admin, sandbox, sandbox_integration,
                                                        short_lived_tokens):
        connect(client, tenant_admin, sandbox_integration)
        sandbox.state.revoke_family(
            sandbox.state.find_access_token(stored_credentials(sandbox_integration)["accessToken"]).family_id)
        assert connection_test(client, tenant_admin, sandbox_integration)["error"] == REFRESH_REFUSED

        connect(client, tenant_admin, sandbox_integration)

        connection = get_connection(client, tenant_admin, sandbox_integration)
        assert (connection["status"], connection["validationError"]) == ("active", None)
        assert connection["credentialSecretName"].endswith("/v2")
        assert get_integration(client, tenant_admin, sandbox_integration)["status"] == "connected"
        assert connection_test(client, tenant_admin, sandbox_integration)["success"] is True

    def test_concurrent_refreshes_spend_the_refresh_token_once(self, client, tenant_admin, sandbox, sandbox_integration,
                                                               short_lived_tokens, token_requests, monkeypatch):
        connect(client, tenant_admin, sandbox_integration)
        monkeypatch.setattr(sandbox.config, "access_token_ttl", 3600)  # the refreshed token is good for an hour
        tenant_id, integration_id = uuid.UUID(tenant_admin.tenant_id), uuid.UUID(sandbox_integration["id"])
        context = runtime.get().flows(present_connection=views.connection)
        barrier = threading.Barrier(4)
        answers: list = []

        def refresh() -> None:
            barrier.wait()
            answers.append(connection_flows.fresh_credentials(context, tenant_id=tenant_id, integration_id=integration_id))

        threads = [threading.Thread(target=refresh) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert len(answers) == 4
        assert all(reason is None for _, reason in answers), answers
        assert len({credentials["accessToken"] for credentials, _ in answers}) == 1
        assert [r["grant_type"] for r in token_requests] == ["authorization_code", "refresh_token"]
        assert db_connection(sandbox_integration).status == "active"
        assert connection_test(client, tenant_admin, sandbox_integration)["success"] is True


class TestRevocationAtTheProvider:
    """Issue 11 item 7: tokens the hub drops are revoked at the provider (RFC 7009), best effort, audited."""

    def _provider_token(self, sandbox, value: str):
        return sandbox.state.find_access_token(value) or sandbox.state.find_refresh_token(value)

    def _sandbox_api(self, sandbox, access_token: str) -> int:
        return httpx.get(f"{sandbox.base_url}/me", headers={"Authorization": f"Bearer {access_token}"}).status_code

    def test_disconnect_revokes_the_tokens_at_the_provider(self, client, tenant_admin, sandbox_integration, sandbox):
        connect(client, tenant_admin, sandbox_integration)
        tokens = stored_credentials(sandbox_integration)
        assert self._sandbox_api(sandbox, tokens["accessToken"]) == 200

        response = client.post(f"{BASE}/{sandbox_integration['id']}/disconnect", headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert self._sandbox_api(sandbox, tokens["accessToken"]) == 401
        assert self._provider_token(sandbox, tokens["refreshToken"]).refresh_revoked
        row = db_connection(sandbox_integration)
        [entry] = audit_entries(row.id, "connection.revoke")
        assert entry.outcome == "success"
        assert entry.changes == {"reason": "disconnect", "tokenTypeHint": "refresh_token", "error": None}

    def test_a_provider_that_fails_does_not_block_the_disconnect(self, client, super_admin, tenant_admin, sandbox):
        fields = factories.sandbox_provider_fields(sandbox.base_url)
        fields["oauthConfig"] = fields["oauthConfig"] | {"revocationUrl": f"{sandbox.base_url}/no-such-endpoint"}
        provider = factories.create_provider(client, super_admin, **fields)
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        connect(client, tenant_admin, integration)
        tokens = stored_credentials(integration)

        response = client.post(f"{BASE}/{integration['id']}/disconnect", headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert db_connection(integration).status == "revoked"
        [entry] = audit_entries(db_connection(integration).id, "connection.revoke")
        assert entry.outcome == "failure"
        assert entry.changes["error"] == "the revocation endpoint answered 404"
        assert self._sandbox_api(sandbox, tokens["accessToken"]) == 200  # the provider was not told

    def test_replaced_oauth_credentials_are_revoked(self, client, tenant_admin, sandbox_integration, sandbox):
        connect(client, tenant_admin, sandbox_integration)
        old = stored_credentials(sandbox_integration)

        response = client.patch(f"{BASE}/{sandbox_integration['id']}/credentials", headers=tenant_admin.headers,
                                json={"credentialType": "oauth", "credentials": {"accessToken": "replacement-token"}})

        assert response.status_code == 200, response.text
        assert self._sandbox_api(sandbox, old["accessToken"]) == 401
        [entry] = audit_entries(db_connection(sandbox_integration).id, "connection.revoke")
        assert (entry.outcome, entry.changes["reason"]) == ("success", "credentials_replaced")

    def test_without_a_revocation_url_nothing_is_sent(self, client, super_admin, tenant_admin, sandbox):
        fields = factories.sandbox_provider_fields(sandbox.base_url)
        fields["oauthConfig"] = {k: v for k, v in fields["oauthConfig"].items() if k != "revocationUrl"}
        provider = factories.create_provider(client, super_admin, **fields)
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        connect(client, tenant_admin, integration)
        tokens = stored_credentials(integration)

        assert client.post(f"{BASE}/{integration['id']}/disconnect", headers=tenant_admin.headers).status_code == 200

        assert audit_entries(db_connection(integration).id, "connection.revoke") == []
        assert self._sandbox_api(sandbox, tokens["accessToken"]) == 200


class TestRefreshAsksForNoScope:
    def test_the_refresh_request_carries_no_scope(self, client, tenant_admin, sandbox_integration,
                                                  short_lived_tokens, token_requests):
        connect(client, tenant_admin, sandbox_integration)

        assert connection_test(client, tenant_admin, sandbox_integration)["success"] is True

        refresh = [r for r in token_requests if r["grant_type"] == "refresh_token"]
        assert len(refresh) == 1
        assert "scope" not in refresh[0], refresh[0]
