"""Tests of the sandbox provider over real loopback HTTP: a SandboxServer per test, httpx, no mocks."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connectors.sandbox import SandboxConfig, SandboxServer, create_sandbox_app
from connectors.sandbox.cli import default_redirect_uri

REPO_ROOT = Path(__file__).resolve().parents[3]
CLIENT_AUTH = ("hub-sandbox-client", "hub-sandbox-secret")
API_KEY = {"X-API-Key": "sandbox-api-key"}
BASIC_AUTH = ("sandbox-user", "sandbox-password")


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def start_sandbox():
    """Start SandboxServers with config overrides; stop them all after the test."""
    servers: list[SandboxServer] = []

    def start(**overrides) -> SandboxServer:
        server = SandboxServer(SandboxConfig(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sandbox(start_sandbox) -> SandboxServer:
    """A sandbox with the default configuration."""
    return start_sandbox()


@pytest.fixture
def http(sandbox):
    """An httpx client on the default sandbox that does not follow redirects."""
    with httpx.Client(base_url=sandbox.base_url, follow_redirects=False, timeout=10) as client:
        yield client


def pkce_pair() -> tuple[str, str]:
    """Return a fresh (code_verifier, S256 code_challenge) pair, RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")
    return verifier, challenge


def authorize_params(server: SandboxServer, challenge: str | None, **overrides) -> dict:
    """Return authorization request parameters; overrides set to None are left out."""
    params = {
        "response_type": "code",
        "client_id": server.config.client_id,
        "redirect_uri": server.config.redirect_uris[0],
        "scope": "crm.read crm.write",
        "state": "st-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


def redirect_query(response: httpx.Response) -> dict[str, str]:
    """Return the query parameters of a redirect's Location as a flat dict."""
    return {key: values[0] for key, values in parse_qs(urlsplit(response.headers["location"]).query).items()}


def obtain_code(http: httpx.Client, server: SandboxServer, challenge: str, **overrides) -> str:
    """Run the authorization request and return the code from the redirect."""
    response = http.get("/oauth/authorize", params=authorize_params(server, challenge, **overrides))
    assert response.status_code == 302, response.text
    return redirect_query(response)["code"]


def exchange_code(http: httpx.Client, server: SandboxServer, code: str, verifier: str | None) -> httpx.Response:
    """POST the code to /oauth/token with client_secret_basic."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": server.config.redirect_uris[0]}
    if verifier is not None:
        form["code_verifier"] = verifier
    return http.post("/oauth/token", data=form, auth=CLIENT_AUTH)


def connect(http: httpx.Client, server: SandboxServer, **overrides) -> dict:
    """Run the whole authorization code + PKCE flow and return the token response."""
    verifier, challenge = pkce_pair()
    response = exchange_code(http, server, obtain_code(http, server, challenge, **overrides), verifier)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    """POST a refresh_token grant with client_secret_basic."""
    return http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}, auth=CLIENT_AUTH)


def bearer(access_token: str) -> dict[str, str]:
    """Return the Authorization header of `access_token`."""
    return {"Authorization": f"Bearer {access_token}"}


def page_through(http: httpx.Client, path: str, headers: dict, **params) -> list[dict]:
    """Follow nextCursor from the first page to the last; return all records in order."""
    records, cursor = [], None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = http.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "nextCursor"}
        records.extend(body["data"])
        cursor = body["nextCursor"]
        if cursor is None:
            return records


# -- OAuth2 authorization endpoint ----------------------------------------------------------------


class TestAuthorize:
    def test_approves_at_once_and_redirects_with_code_and_state(self, http, sandbox):
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge))
        assert response.status_code == 302
        assert response.headers["location"].startswith(sandbox.config.redirect_uris[0] + "?")
        query = redirect_query(response)
        assert set(query) == {"code", "state"}
        assert query["state"] == "st-123"

    @pytest.mark.parametrize(
        ("overrides", "description"),
        [
            ({"code_challenge": None, "code_challenge_method": None}, "PKCE is required: missing 'code_challenge'"),
            ({"code_challenge_method": None}, "PKCE 'code_challenge_method' must be S256"),
            ({"code_challenge_method": "plain"}, "PKCE 'code_challenge_method' must be S256"),
        ],
        ids=["no-challenge", "no-method-means-plain", "plain"],
    )
    def test_refuses_missing_or_plain_pkce_with_error_redirect(self, http, sandbox, overrides, description):
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge, **overrides))
        assert response.status_code == 302
        assert response.headers["location"].startswith(sandbox.config.redirect_uris[0] + "?")
        assert redirect_query(response) == {"error": "invalid_request", "error_description": description, "state": "st-123"}

    @pytest.mark.parametrize(
        "redirect_uri",
        [
            "http://evil.test/api/v1/integrations/oauth/callback",
            "http://127.0.0.1:8000/api/v1/integrations/oauth/callback/extra",
            "http://127.0.0.1:8000/api/v1/integrations/oauth/callback?x=1",
        ],
        ids=["other-host", "longer-path", "extra-query"],
    )
    def test_unregistered_redirect_uri_answers_400_without_redirect(self, http, sandbox, redirect_uri):
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge, redirect_uri=redirect_uri))
        assert response.status_code == 400
        assert "location" not in response.headers
        assert response.json() == {
            "error": "invalid_request",
            "error_description": f"Redirect URI {redirect_uri} is not supported by client.",
            "state": "st-123",
        }

    def test_missing_redirect_uri_answers_400_without_redirect(self, http, sandbox):
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge, redirect_uri=None))
        assert response.status_code == 400
        assert "location" not in response.headers
        assert response.json() == {"error": "invalid_request", "error_description": "Missing 'redirect_uri' in request.", "state": "st-123"}

    def test_unknown_client_answers_400_without_redirect(self, http, sandbox):
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge, client_id="someone-else"))
        assert response.status_code == 400
        assert "location" not in response.headers
        assert response.json() == {"error": "invalid_client", "error_description": "The client does not exist on this server.", "state": "st-123"}

    def test_unknown_scope_redirects_invalid_scope(self, http, sandbox):
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge, scope="crm.read admin"))
        assert response.status_code == 302
        assert redirect_query(response) == {
            "error": "invalid_scope",
            "error_description": "The requested scope is invalid, unknown, or malformed.",
            "state": "st-123",
        }

    def test_deny_parameter_redirects_access_denied(self, http, sandbox):
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge, deny="1"))
        assert response.status_code == 302
        assert redirect_query(response) == {
            "error": "access_denied",
            "error_description": "The resource owner or authorization server denied the request",
            "state": "st-123",
        }

    def test_deny_all_setting_redirects_access_denied(self, http, sandbox):
        sandbox.config.deny_all = True
        _, challenge = pkce_pair()
        response = http.get("/oauth/authorize", params=authorize_params(sandbox, challenge))
        assert response.status_code == 302
        assert redirect_query(response)["error"] == "access_denied"

    def test_consent_page_when_auto_approve_is_off(self, http, sandbox):
        sandbox.config.auto_approve = False
        verifier, challenge = pkce_pair()
        params = authorize_params(sandbox, challenge)
        page = http.get("/oauth/authorize", params=params)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'value="approve"' in page.text
        denied = http.post("/oauth/authorize", params=params, data={"decision": "deny"})
        assert redirect_query(denied)["error"] == "access_denied"
        approved = http.post("/oauth/authorize", params=params, data={"decision": "approve"})
        assert approved.status_code == 302
        assert exchange_code(http, sandbox, redirect_query(approved)["code"], verifier).status_code == 200


# -- OAuth2 token endpoint: authorization_code --------------------------------------------------


class TestTokenAuthorizationCode:
    def test_full_flow_with_client_secret_basic_gives_working_tokens(self, http, sandbox):
        verifier, challenge = pkce_pair()
        code = obtain_code(http, sandbox, challenge)
        response = exchange_code(http, sandbox, code, verifier)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        token = response.json()
        assert set(token) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 3600
        assert token["scope"] == "crm.read crm.write"
        me = http.get("/me", headers=bearer(token["access_token"]))
        assert me.status_code == 200
        assert me.json() == {
            "id": "usr_sandbox",
            "name": "Sandbox User",
            "email": "sandbox-user@sandbox.test",
            "authMethod": "oauth2",
            "scopes": ["crm.read", "crm.write"],
        }

    def test_client_secret_post_is_accepted(self, http, sandbox):
        verifier, challenge = pkce_pair()
        code = obtain_code(http, sandbox, challenge)
        response = http.post("/oauth/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": sandbox.config.redirect_uris[0],
            "code_verifier": verifier, "client_id": CLIENT_AUTH[0], "client_secret": CLIENT_AUTH[1],
        })
        assert response.status_code == 200
        assert response.json()["token_type"] == "Bearer"

    def test_omitted_scope_grants_every_configured_scope(self, http, sandbox):
        assert connect(http, sandbox, scope=None)["scope"] == "crm.read crm.write"

    def test_wrong_verifier_is_invalid_grant(self, http, sandbox):
        _, challenge = pkce_pair()
        other_verifier, _ = pkce_pair()
        response = exchange_code(http, sandbox, obtain_code(http, sandbox, challenge), other_verifier)
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_grant", "error_description": "Code challenge failed."}

    def test_missing_verifier_is_invalid_request(self, http, sandbox):
        _, challenge = pkce_pair()
        response = exchange_code(http, sandbox, obtain_code(http, sandbox, challenge), None)
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_request", "error_description": "Missing 'code_verifier'"}

    def test_redirect_uri_must_match_the_authorization_request(self, start_sandbox):
        sandbox = start_sandbox(redirect_uris=["http://127.0.0.1:8000/cb-one", "http://127.0.0.1:8000/cb-two"])
        verifier, challenge = pkce_pair()
        with httpx.Client(base_url=sandbox.base_url) as http:
            code = obtain_code(http, sandbox, challenge, redirect_uri="http://127.0.0.1:8000/cb-two")
            response = exchange_code(http, sandbox, code, verifier)  # sends cb-one
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_grant", "error_description": "Invalid 'redirect_uri' in request."}

    def test_reused_code_is_invalid_grant_and_revokes_tokens_issued_from_it(self, http, sandbox):
        verifier, challenge = pkce_pair()
        code = obtain_code(http, sandbox, challenge)
        first = exchange_code(http, sandbox, code, verifier)
        assert first.status_code == 200
        again = exchange_code(http, sandbox, code, verifier)
        assert again.status_code == 400
        assert again.json() == {"error": "invalid_grant", "error_description": "Invalid 'code' in request."}
        assert http.get("/me", headers=bearer(first.json()["access_token"])).status_code == 401
        assert refresh(http, first.json()["refresh_token"]).json()["error"] == "invalid_grant"

    def test_wrong_client_secret_is_invalid_client_401(self, http, sandbox):
        verifier, challenge = pkce_pair()
        code = obtain_code(http, sandbox, challenge)
        response = http.post("/oauth/token", auth=(CLIENT_AUTH[0], "wrong"), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": sandbox.config.redirect_uris[0],
            "code_verifier": verifier,
        })
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic ")

    def test_unsupported_grant_type(self, http, sandbox):
        response = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT_AUTH)
        assert response.status_code == 400
        assert response.json() == {"error": "unsupported_grant_type"}


# -- OAuth2 token endpoint: refresh_token -------------------------------------------------------


class TestTokenRefresh:
    def test_rotates_the_refresh_token_and_refuses_the_old_one(self, http, sandbox):
        first = connect(http, sandbox)
        response = refresh(http, first["refresh_token"])
        assert response.status_code == 200
        second = response.json()
        assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert second["scope"] == first["scope"]
        assert http.get("/me", headers=bearer(second["access_token"])).status_code == 200
        third = refresh(http, second["refresh_token"])
        assert third.status_code == 200

    def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(self, http, sandbox):
        first = connect(http, sandbox)
        second = refresh(http, first["refresh_token"]).json()
        replay = refresh(http, first["refresh_token"])
        assert replay.status_code == 400
        assert replay.json() == {
            "error": "invalid_grant",
            "error_description": "Refresh token was already used; every token of this grant is now revoked",
        }
        for access_token in (first["access_token"], second["access_token"]):
            response = http.get("/me", headers=bearer(access_token))
            assert response.status_code == 401
            assert response.json() == {"error": "unauthorized", "message": "The access token was revoked"}
        latest = refresh(http, second["refresh_token"])
        assert latest.status_code == 400
        assert latest.json() == {"error": "invalid_grant"}

    def test_concurrent_refreshes_with_one_token_let_exactly_one_through(self, http, sandbox):
        token = connect(http, sandbox)
        barrier = threading.Barrier(8)

        def attempt(_: int) -> int:
            with httpx.Client(base_url=sandbox.base_url, timeout=10) as own_http:
                barrier.wait()
                return refresh(own_http, token["refresh_token"]).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = sorted(pool.map(attempt, range(8)))
        assert statuses == [200] + [400] * 7

    def test_family_revocation_spares_other_authorizations(self, http, sandbox):
        victim, bystander = connect(http, sandbox), connect(http, sandbox)
        refresh(http, victim["refresh_token"])
        refresh(http, victim["refresh_token"])
        assert http.get("/me", headers=bearer(bystander["access_token"])).status_code == 200
        assert refresh(http, bystander["refresh_token"]).status_code == 200

    def test_narrower_scope_on_refresh(self, http, sandbox):
        token = connect(http, sandbox)
        response = http.post("/oauth/token", auth=CLIENT_AUTH, data={
            "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "scope": "crm.read",
        })
        assert response.status_code == 200
        assert response.json()["scope"] == "crm.read"

    def test_unknown_refresh_token_is_invalid_grant(self, http, sandbox):
        response = refresh(http, "sbx_rt_unknown")
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_grant"}


class TestAccessTokenExpiry:
    def test_expired_access_token_answers_401_invalid_token(self, http, sandbox):
        sandbox.config.access_token_ttl = 2
        token = connect(http, sandbox)
        assert token["expires_in"] == 2
        assert http.get("/me", headers=bearer(token["access_token"])).status_code == 200
        time.sleep(2.2)
        response = http.get("/me", headers=bearer(token["access_token"]))
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized", "message": "The access token expired"}
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="The access token expired"'
        renewed = refresh(http, token["refresh_token"])
        assert renewed.status_code == 200
        assert http.get("/me", headers=bearer(renewed.json()["access_token"])).status_code == 200


# -- OAuth2 revocation endpoint (RFC 7009) -------------------------------------------------------


class TestRevoke:
    def test_revoking_an_access_token_keeps_the_refresh_token(self, http, sandbox):
        token = connect(http, sandbox)
        response = http.post("/oauth/revoke", auth=CLIENT_AUTH, data={"token": token["access_token"], "token_type_hint": "access_token"})
        assert response.status_code == 200
        assert response.json() == {}
        assert http.get("/me", headers=bearer(token["access_token"])).status_code == 401
        assert refresh(http, token["refresh_token"]).status_code == 200

    def test_revoking_a_refresh_token_revokes_its_access_tokens(self, http, sandbox):
        token = connect(http, sandbox)
        response = http.post("/oauth/revoke", data={
            "token": token["refresh_token"], "client_id": CLIENT_AUTH[0], "client_secret": CLIENT_AUTH[1],
        })
        assert response.status_code == 200
        assert http.get("/me", headers=bearer(token["access_token"])).status_code == 401
        assert refresh(http, token["refresh_token"]).json() == {"error": "invalid_grant"}

    def test_unknown_token_answers_200(self, http, sandbox):
        response = http.post("/oauth/revoke", auth=CLIENT_AUTH, data={"token": "sbx_at_unknown"})
        assert response.status_code == 200

    def test_requires_client_authentication(self, http, sandbox):
        token = connect(http, sandbox)
        response = http.post("/oauth/revoke", data={"token": token["access_token"]})
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert http.get("/me", headers=bearer(token["access_token"])).status_code == 200

    def test_revoke_all_from_the_state(self, http, sandbox):
        token = connect(http, sandbox)
        sandbox.state.revoke_all()
        assert http.get("/me", headers=bearer(token["access_token"])).status_code == 401
        assert refresh(http, token["refresh_token"]).status_code == 400


# -- REST API authentication --------------------------------------------------------------------


class TestMe:
    def test_api_key(self, http):
        response = http.get("/me", headers=API_KEY)
        assert response.status_code == 200
        assert response.json() == {
            "id": "usr_sandbox",
            "name": "Sandbox User",
            "email": "sandbox-user@sandbox.test",
            "authMethod": "api_key",
            "scopes": ["crm.read", "crm.write"],
        }

    def test_wrong_api_key(self, http):
        response = http.get("/me", headers={"X-API-Key": "wrong"})
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized", "message": "Invalid API key"}

    def test_basic_auth(self, http):
        response = http.get("/me", auth=BASIC_AUTH)
        assert response.status_code == 200
        assert response.json()["authMethod"] == "basic"

    @pytest.mark.parametrize("credentials", [("sandbox-user", "wrong"), ("nobody", "sandbox-password")], ids=["password", "user"])
    def test_wrong_basic_credentials(self, http, credentials):
        response = http.get("/me", auth=credentials)
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized", "message": "Invalid basic credentials"}
        assert response.headers["www-authenticate"] == 'Basic realm="sandbox"'

    def test_no_credentials(self, http):
        response = http.get("/me")
        assert response.status_code == 401
        assert response.json() == {
            "error": "unauthorized",
            "message": "Credentials required: a bearer token, an X-API-Key header or HTTP Basic",
        }
        assert response.headers["www-authenticate"] == 'Bearer realm="sandbox"'

    def test_unknown_bearer_token(self, http):
        response = http.get("/me", headers=bearer("sbx_at_forged"))
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized", "message": "The access token is unknown"}
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    def test_unsupported_scheme(self, http):
        response = http.get("/me", headers={"Authorization": "Digest abc"})
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized", "message": "Unsupported authorization scheme"}

    def test_bad_authorization_header_is_not_rescued_by_an_api_key(self, http):
        response = http.get("/me", headers={"Authorization": "Bearer sbx_at_forged", **API_KEY})
        assert response.status_code == 401


class TestHealth:
    def test_needs_no_credentials(self, http):
        response = http.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


# -- REST API lists -----------------------------------------------------------------------------


class TestListAccounts:
    def test_paging_yields_every_account_exactly_once_in_order(self, http, sandbox):
        records = page_through(http, "/accounts", API_KEY, limit=7)
        ids = [record["id"] for record in records]
        assert len(ids) == 120
        assert sorted(ids) == [f"acc_{index:04d}" for index in range(1, 121)]
        keys = [(record["updatedAt"], record["id"]) for record in records]
        assert keys == sorted(keys)
        assert set(records[0]) == {"id", "name", "industry", "website", "updatedAt"}

    def test_default_limit_is_25(self, http):
        body = http.get("/accounts", headers=API_KEY).json()
        assert len(body["data"]) == 25
        assert body["nextCursor"]

    def test_max_limit_serves_everything_in_two_pages(self, http):
        first = http.get("/accounts", headers=API_KEY, params={"limit": 100}).json()
        second = http.get("/accounts", headers=API_KEY, params={"limit": 100, "cursor": first["nextCursor"]}).json()
        assert (len(first["data"]), len(second["data"]), second["nextCursor"]) == (100, 20, None)

    def test_updated_since_is_inclusive(self, http):
        everything = page_through(http, "/accounts", API_KEY, limit=100)
        since = everything[50]["updatedAt"]
        selected = page_through(http, "/accounts", API_KEY, limit=10, updated_since=since)
        assert selected == everything[50:]

    def test_updated_since_with_offset(self, http):
        everything = page_through(http, "/accounts", API_KEY, limit=100)
        since = datetime.fromisoformat(everything[100]["updatedAt"]).astimezone().isoformat()
        assert page_through(http, "/accounts", API_KEY, limit=100, updated_since=since) == everything[100:]

    def test_q_searches_names_case_insensitively(self, http):
        records = page_through(http, "/accounts", API_KEY, q="ACME")
        assert len(records) == 10
        assert all("acme" in record["name"].lower() for record in records)

    def test_data_is_deterministic_across_instances(self, http, start_sandbox):
        other = start_sandbox()
        with httpx.Client(base_url=other.base_url) as other_http:
            assert page_through(other_http, "/accounts", API_KEY, limit=100) == page_through(http, "/accounts", API_KEY, limit=100)

    def test_record_count_follows_the_config(self, start_sandbox):
        small = start_sandbox(records=5)
        with httpx.Client(base_url=small.base_url) as small_http:
            assert len(page_through(small_http, "/accounts", API_KEY)) == 5
            assert len(page_through(small_http, "/contacts", API_KEY)) == 10

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"limit": "0"}, "limit must be an integer between 1 and 100"),
            ({"limit": "101"}, "limit must be an integer between 1 and 100"),
            ({"limit": "ten"}, "limit must be an integer between 1 and 100"),
            ({"cursor": "not-a-cursor"}, "cursor is not valid"),
            ({"cursor": base64.urlsafe_b64encode(b'{"a":1}').decode()}, "cursor is not valid"),
            ({"updated_since": "yesterday"}, "updated_since must be an RFC 3339 timestamp such as 2024-12-01T00:00:00Z"),
            ({"updated_since": "2024-12-01T00:00:00"}, "updated_since must carry a time zone offset (Z or +hh:mm)"),
            ({"q": "x" * 101}, "q must be at most 100 characters"),
        ],
        ids=["limit-0", "limit-101", "limit-text", "cursor-garbage", "cursor-shape", "since-garbage", "since-naive", "q-long"],
    )
    def test_bad_parameters_answer_400(self, http, params, message):
        response = http.get("/accounts", headers=API_KEY, params=params)
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_request", "message": message}

    def test_token_without_read_scope_is_refused(self, http, sandbox):
        token = connect(http, sandbox, scope="crm.write")
        response = http.get("/accounts", headers=bearer(token["access_token"]))
        assert response.status_code == 403
        assert response.json() == {"error": "insufficient_scope", "message": "This operation needs the 'crm.read' scope"}

    def test_bearer_token_reads_accounts(self, http, sandbox):
        token = connect(http, sandbox, scope="crm.read")
        assert len(page_through(http, "/accounts", bearer(token["access_token"]), limit=100)) == 120

    def test_touched_record_moves_to_the_end(self, http, sandbox):
        sandbox.state.touch("acc_0001", name="Acme Renamed")
        last = page_through(http, "/accounts", API_KEY, limit=100)[-1]
        assert (last["id"], last["name"]) == ("acc_0001", "Acme Renamed")


class TestListContacts:
    def test_paging_breaks_timestamp_ties_by_id(self, http):
        records = page_through(http, "/contacts", API_KEY, limit=3)  # odd limit splits same-timestamp pairs
        assert sorted(record["id"] for record in records) == [f"con_{index:04d}" for index in range(1, 241)]
        keys = [(record["updatedAt"], record["id"]) for record in records]
        assert keys == sorted(keys)
        assert len({record["updatedAt"] for record in records}) == 120
        assert set(records[0]) == {"id", "accountId", "firstName", "lastName", "email", "updatedAt"}

    def test_every_contact_belongs_to_an_account(self, http):
        account_ids = {record["id"] for record in page_through(http, "/accounts", API_KEY, limit=100)}
        assert {record["accountId"] for record in page_through(http, "/contacts", API_KEY, limit=100)} == account_ids

    def test_q_matches_first_last_and_full_names_and_email(self, http):
        by_first = page_through(http, "/contacts", API_KEY, q="ada")
        assert by_first and all("ada" in f"{r['firstName']} {r['lastName']} {r['email']}".lower() for r in by_first)
        full = page_through(http, "/contacts", API_KEY, q="Ada Lovelace")
        assert [record["id"] for record in full] == ["con_0001"]
        by_email = page_through(http, "/contacts", API_KEY, q="ADA.LOVELACE.0001@")
        assert [record["id"] for record in by_email] == ["con_0001"]

    def test_filters_combine_with_paging(self, http):
        everything = page_through(http, "/contacts", API_KEY, limit=100, q="hopper")
        since = everything[len(everything) // 2]["updatedAt"]
        selected = page_through(http, "/contacts", API_KEY, limit=1, q="hopper", updated_since=since)
        assert selected == [record for record in everything if record["updatedAt"] >= since]


# -- rate limiting ------------------------------------------------------------------------------


class TestRateLimit:
    def test_answers_429_with_retry_after_past_the_limit(self, start_sandbox):
        sandbox = start_sandbox(rate_limit_per_minute=3)
        with httpx.Client(base_url=sandbox.base_url) as http:
            assert [http.get("/me", headers=API_KEY).status_code for _ in range(3)] == [200, 200, 200]
            response = http.get("/accounts", headers=API_KEY)
            assert response.status_code == 429
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert response.json() == {
                "error": "rate_limit_exceeded",
                "message": f"More than 3 requests per minute; retry in {response.headers['retry-after']} s",
            }
            assert http.get("/me", auth=BASIC_AUTH).status_code == 200  # another credential has its own budget
            assert http.get("/health").status_code == 200

    def test_counts_per_oauth_grant(self, start_sandbox):
        sandbox = start_sandbox(rate_limit_per_minute=2)
        with httpx.Client(base_url=sandbox.base_url) as http:
            first, second = connect(http, sandbox), connect(http, sandbox)
            assert [http.get("/me", headers=bearer(first["access_token"])).status_code for _ in range(3)] == [200, 200, 429]
            renewed = refresh(http, first["refresh_token"]).json()
            assert http.get("/me", headers=bearer(renewed["access_token"])).status_code == 429  # a refresh is no escape
            assert http.get("/me", headers=bearer(second["access_token"])).status_code == 200

    def test_forced_rate_limit_and_reset(self, http, sandbox):
        sandbox.state.force_rate_limit(30)
        response = http.get("/me", headers=API_KEY)
        assert response.status_code == 429
        assert 29 <= int(response.headers["retry-after"]) <= 30
        sandbox.state.reset_rate_limits()
        assert http.get("/me", headers=API_KEY).status_code == 200


# -- server and CLI -----------------------------------------------------------------------------


class TestSandboxServer:
    def test_context_manager_serves_on_a_free_loopback_port_and_stops(self):
        with SandboxServer() as server:
            base_url = server.base_url
            assert base_url.startswith("http://127.0.0.1:")
            assert httpx.get(base_url + "/health").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(base_url + "/health")
        with pytest.raises(RuntimeError):
            server.base_url

    def test_unknown_path_and_method_answer_json(self, http):
        missing = http.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
        wrong_method = http.delete("/me")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error"] == "method_not_allowed"

    def test_app_factory_works_without_a_server(self):
        client = create_sandbox_app(SandboxConfig()).test_client()
        assert client.get("/health").get_json() == {"status": "ok"}


class TestCli:
    def test_default_redirect_uri_follows_hub_public_url(self):
        assert default_redirect_uri({}) == "http://127.0.0.1:8000/api/v1/integrations/oauth/callback"
        assert default_redirect_uri({"HUB_PUBLIC_URL": "https://hub.test/"}) == "https://hub.test/api/v1/integrations/oauth/callback"

    def test_serves_and_prints_credentials(self):
        env = dict(os.environ, HUB_PUBLIC_URL="http://hub.test:9000", PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "connectors.sandbox", "--port", "0", "--access-token-ttl", "5"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            lines = [process.stdout.readline() for _ in range(10)]
            base_url = lines[0].strip().rsplit(" ", 1)[-1]
            assert base_url.startswith("http://127.0.0.1:")
            printed = "".join(lines)
            for expected in ("hub-sandbox-client", "hub-sandbox-secret", "sandbox-api-key", "sandbox-user / sandbox-password",
                             "http://hub.test:9000/api/v1/integrations/oauth/callback"):
                assert expected in printed
            assert httpx.get(base_url + "/health", timeout=10).json() == {"status": "ok"}
            assert httpx.get(base_url + "/me", headers=API_KEY, timeout=10).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=10)
