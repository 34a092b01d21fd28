"""Credentials never leave the vault: not in a response, a log record, an audit entry or a table.

One scenario, run once for the module with every logger at DEBUG: a tenant connects an API key,
basic, custom and OAuth2 integration (each secret carrying a unique sentinel, the OAuth
provider's client secret too), reads them back, tests them, replaces the credentials, tries
wrong ones, disconnects one; the super admin reads and edits the providers. Each test then
searches one place the secrets could have leaked to.

Runs with `-p no:logging` too: records are collected by a handler of this module, not caplog.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel, select

from persistence import connections
from persistence.db import engine, transaction
from persistence.models import AuditEntry, Connection
from tests import factories

BASE = "/api/v1/tenant/integrations"
PROVIDERS = "/api/v1/admin/integrations"
RETURN_URL = "https://app.example.com/done"
SENTINEL = "SNTNL" + uuid.uuid4().hex[:16].upper()
# The sandbox provider logs what it issues and receives (it is the other side, it may);
# its request threads are the only ones socketserver names like this in this scenario.
PROVIDER_THREAD = "process_request_thread"


@dataclass
class Secrets:
    """Every secret value of the scenario; each contains SENTINEL."""

    api_key: str = f"{SENTINEL}-api-key"
    api_key_wrong: str = f"{SENTINEL}-wrong-api-key"
    api_key_2: str = f"{SENTINEL}-api-key-2"
    custom_key: str = f"{SENTINEL}-custom"
    custom_key_2: str = f"{SENTINEL}-custom-2"
    basic_user: str = "sentinel-user-" + uuid.uuid4().hex[:8]
    basic_password: str = f"{SENTINEL}-password"
    basic_password_wrong: str = f"{SENTINEL}-wrong-password"
    basic_password_2: str = f"{SENTINEL}-password-2"
    client_secret: str = f"{SENTINEL}-client-secret"
    access_token: str = f"{SENTINEL}-access-token"
    refresh_token: str = f"{SENTINEL}-refresh-token"

    def basic_headers(self) -> list[str]:
        """The Authorization header values the hub sends for the basic credentials (no sentinel in clear)."""
        pairs = [(self.basic_user, p) for p in (self.basic_password, self.basic_password_wrong, self.basic_password_2)]
        return [base64.b64encode(f"{user}:{password}".encode()).decode() for user, password in pairs]


@dataclass
class Captured:
    """What the scenario left behind to search."""

    secrets: Secrets
    responses: list[dict] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)
    provider_tokens: list[str] = field(default_factory=list)  # issued by the sandbox during the OAuth flow
    hub_bearers: list[str] = field(default_factory=list)  # the callers' own Authorization header values
    hub_api_token: str = ""  # a hub API token (X-API-Key); shown once, in its creation response
    hub_jwts: list[str] = field(default_factory=list)  # access and refresh JWTs from register, login, refresh
    tenant_id: str = ""
    resource_ids: set[str] = field(default_factory=set)


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(level=logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


_FORMATTER = logging.Formatter("%(name)s %(levelname)s %(threadName)s %(message)s")


def rendered(record: logging.LogRecord) -> str:
    """Everything a log sink could write of `record`: message, arguments, extras, exception."""
    return _FORMATTER.format(record) + "\n" + repr(vars(record))


class _DebugEverywhere:
    """Send every logger's records, at DEBUG, to a collecting handler; undo on exit."""

    def __init__(self, into: list[logging.LogRecord]) -> None:
        self.handler = _Collect(into)
        self.saved: list[tuple[logging.Logger, int, bool]] = []

    def __enter__(self) -> None:
        root = logging.getLogger()
        loggers = [root] + [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        for logger in loggers:
            self.saved.append((logger, logger.level, logger.disabled))
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
            if logger is root or not logger.propagate:
                logger.addHandler(self.handler)

    def __exit__(self, *exc) -> None:
        for logger, level, disabled in self.saved:
            logger.setLevel(level)
            logger.disabled = disabled
            if self.handler in logger.handlers:
                logger.removeHandler(self.handler)


def _expect(response, status: int) -> dict:
    assert response.status_code == status, (response.request.method, str(response.request.url), response.text)
    return response.json() if response.content and response.headers.get("content-type", "").startswith("application/json") else {}


def _run_scenario(client, super_admin: factories.Account, sandbox, secrets: Secrets, captured: Captured) -> None:
    base_url = sandbox.base_url
    # Registered with an Idempotency-Key (its answer, two JWTs, is kept for replays), then
    # signed in again and refreshed: every JWT the hub hands out here is searched for below.
    email = f"{factories.unique('leak')}@example.com"
    registered = _expect(client.post("/api/v1/auth/register", headers={"Idempotency-Key": factories.unique("reg-")},
                                     json={"email": email, "password": factories.PASSWORD, "name": "Lea Leak",
                                           "tenantName": factories.unique("Leak ")}), 201)
    signed_in = _expect(client.post("/api/v1/auth/login", json={"email": email, "password": factories.PASSWORD}), 200)
    refreshed = _expect(client.post("/api/v1/auth/refresh", json={"refreshToken": signed_in["refreshToken"]}), 200)
    for answer in (registered, signed_in, refreshed):
        captured.hub_jwts += [answer["accessToken"], answer["refreshToken"]]
    admin = factories.Account(email, factories.PASSWORD, refreshed["accessToken"], refreshed["refreshToken"],
                              refreshed["user"], refreshed)
    captured.tenant_id = admin.tenant_id
    captured.hub_bearers += [admin.access_token, super_admin.access_token]

    # The super admin configures four providers at the sandbox; the OAuth one with a client secret.
    plain = {"oauthConfig": None, "apiKeyHeader": None}
    api_key_provider = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(
        base_url, authType="api_key", oauthConfig=None))
    basic_provider = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(
        base_url, authType="basic", **plain))
    custom_provider = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(
        base_url, authType="custom", **plain))
    oauth_fields = factories.sandbox_provider_fields(base_url)
    oauth_fields["oauthConfig"] = oauth_fields["oauthConfig"] | {"clientSecret": secrets.client_secret}
    oauth_provider = factories.create_provider(client, super_admin, **oauth_fields)
    all_providers = [api_key_provider, basic_provider, custom_provider, oauth_provider]
    for provider in all_providers:
        item = f"{PROVIDERS}/{provider['category']}/{provider['id']}"
        _expect(client.get(item, headers=super_admin.headers), 200)
        _expect(client.post(f"{item}/test", headers=super_admin.headers), 200)
    oauth_item = f"{PROVIDERS}/{oauth_provider['category']}/{oauth_provider['id']}"
    _expect(client.patch(oauth_item, json={"oauthConfig": oauth_fields["oauthConfig"]}, headers=super_admin.headers), 200)
    _expect(client.get(PROVIDERS, params={"limit": 100}, headers=super_admin.headers), 200)

    # The tenant enables them and connects each, after a refused attempt where there is one.
    api_key, basic, custom, oauth = (factories.enable_integration(client, admin, p["id"]) for p in all_providers)
    integrations = [api_key, basic, custom, oauth]
    captured.resource_ids |= {i["id"] for i in integrations} | {p["id"] for p in all_providers}
    _expect(client.post(f"{BASE}/{api_key['id']}/connect/api-key", json={"apiKey": secrets.api_key_wrong},
                        headers=admin.headers), 400)
    _expect(client.post(f"{BASE}/{api_key['id']}/connect/api-key",
                        json={"apiKey": secrets.api_key, "displayName": "Sales key"}, headers=admin.headers), 200)
    _expect(client.post(f"{BASE}/{basic['id']}/connect/basic", headers=admin.headers,
                        json={"username": secrets.basic_user, "password": secrets.basic_password_wrong}), 400)
    _expect(client.post(f"{BASE}/{basic['id']}/connect/basic", headers=admin.headers,
                        json={"username": secrets.basic_user, "password": secrets.basic_password}), 200)
    _expect(client.post(f"{BASE}/{custom['id']}/connect/custom", headers=admin.headers,
                        json={"credentials": {"X-API-Key": secrets.custom_key}}), 200)
    started = _expect(client.post(f"{BASE}/{oauth['id']}/connect/oauth", json={"returnUrl": RETURN_URL},
                                  headers=admin.headers), 200)
    redirect = factories.follow_authorization(started["authorizationUrl"])
    done = client.get(factories.callback_path(redirect.headers["location"]), follow_redirects=False)
    assert done.status_code == 302 and "status=connected" in done.headers["location"], done.headers
    with transaction() as session:
        for integration in integrations:
            row = session.exec(select(Connection).where(Connection.integration_id == uuid.UUID(integration["id"]))).one()
            captured.resource_ids.add(str(row.id))
            if integration is oauth:
                tokens = connections.credentials(row)
                captured.provider_tokens += [tokens["accessToken"], tokens["refreshToken"]]

    # Read everything back and test every connection.
    for integration in integrations:
        _expect(client.get(f"{BASE}/{integration['id']}/connection", headers=admin.headers), 200)
        _expect(client.get(f"{BASE}/{integration['id']}", headers=admin.headers), 200)
        assert _expect(client.post(f"{BASE}/{integration['id']}/connection/test", headers=admin.headers), 200)["success"]
    _expect(client.get(BASE, headers=admin.headers), 200)
    _expect(client.get("/api/v1/integrations", headers=admin.headers), 200)

    # Replace the credentials (one refused), then test again.
    sandbox.config.basic_users[secrets.basic_user] = secrets.basic_password_2
    _expect(client.patch(f"{BASE}/{api_key['id']}/credentials", headers=admin.headers,
                         json={"credentialType": "api_key", "credentials": {"apiKey": secrets.api_key_wrong}}), 400)
    for integration, body in [
        (api_key, {"credentialType": "api_key", "credentials": {"apiKey": secrets.api_key_2}}),
        (basic, {"credentialType": "basic",
                 "credentials": {"username": secrets.basic_user, "password": secrets.basic_password_2}}),
        (custom, {"credentialType": "custom", "credentials": {"X-API-Key": secrets.custom_key_2}}),
        (oauth, {"credentialType": "oauth", "credentials": {
            "accessToken": secrets.access_token, "refreshToken": secrets.refresh_token,
            "expiresAt": (datetime.now(UTC) + timedelta(seconds=30)).isoformat()}}),
    ]:
        _expect(client.patch(f"{BASE}/{integration['id']}/credentials", json=body, headers=admin.headers), 200)
    for integration in (api_key, basic, custom):
        assert _expect(client.post(f"{BASE}/{integration['id']}/connection/test", headers=admin.headers), 200)["success"]
    # The stored refresh token is the sentinel one: the refresh is refused and the connection expires.
    refused = _expect(client.post(f"{BASE}/{oauth['id']}/connection/test", headers=admin.headers), 200)
    assert refused["success"] is False, refused
    for integration in integrations:
        _expect(client.get(f"{BASE}/{integration['id']}/connection", headers=admin.headers), 200)
    _expect(client.get(BASE, headers=admin.headers), 200)
    _expect(client.post(f"{BASE}/{api_key['id']}/disconnect", headers=admin.headers), 200)

    # The audit log, read through the API by the tenant (with a hub API token too) and the platform.
    created = _expect(client.post("/api/v1/tenant/api-tokens",
                                  headers=admin.headers | {"Idempotency-Key": factories.unique("tok-")},
                                  json={"name": "audit reader", "scopes": ["integrations:read", "audit:read"]}), 201)
    captured.hub_api_token = created["token"]
    for headers in (admin.headers, {"X-API-Key": created["token"]}, {"Authorization": f"Bearer {created['token']}"}):
        _read_all_pages(client, "/api/v1/tenant/audit-logs", {}, headers)
        _expect(client.get(BASE, headers=headers), 200)
    _read_all_pages(client, "/api/v1/admin/audit-logs", {"tenantId": admin.tenant_id}, super_admin.headers)
    _read_all_pages(client, "/api/v1/admin/audit-logs", {}, super_admin.headers, pages=3)


def _read_all_pages(client, path: str, params: dict, headers: dict, pages: int = 20) -> None:
    cursor = None
    for _ in range(pages):
        page = _expect(client.get(path, params={**params, "limit": 100, **({"cursor": cursor} if cursor else {})},
                                  headers=headers), 200)
        if not page["hasMore"]:
            return
        cursor = page["nextCursor"]


@pytest.fixture(scope="module")
def captured(client, super_admin, sandbox) -> Captured:
    """Run the scenario once with every response and log record collected."""
    secrets = Secrets()
    result = Captured(secrets)

    def keep(response) -> None:
        response.read()
        result.responses.append({"request": f"{response.request.method} {response.request.url}",
                                 "status": response.status_code, "headers": list(response.headers.multi_items()),
                                 "body": response.text})

    hooks = client.event_hooks
    client.event_hooks = {"request": list(hooks["request"]), "response": [*hooks["response"], keep]}
    try:
        with pytest.MonkeyPatch.context() as patch, _DebugEverywhere(result.records):
            patch.setattr(sandbox.config, "api_keys", [*sandbox.config.api_keys, secrets.api_key, secrets.api_key_2,
                                                       secrets.custom_key, secrets.custom_key_2])
            patch.setattr(sandbox.config, "basic_users", {**sandbox.config.basic_users,
                                                          secrets.basic_user: secrets.basic_password})
            patch.setattr(sandbox.config, "client_secret", secrets.client_secret)
            _run_scenario(client, super_admin, sandbox, secrets, result)
    finally:
        client.event_hooks = hooks
    return result


def _hub_records(captured: Captured) -> list[logging.LogRecord]:
    return [r for r in captured.records if PROVIDER_THREAD not in r.threadName]


def _found(needles: list[str], haystacks: list[str]) -> list[tuple[str, str]]:
    return [(needle, hay[:300]) for hay in haystacks for needle in needles if needle in hay]


class TestScenario:
    def test_ran_and_was_observed(self, captured):
        assert len(captured.responses) >= 40
        assert any(r.name.startswith("hub.") for r in captured.records)
        assert len(captured.provider_tokens) == 2
        assert captured.hub_api_token
        assert len(captured.hub_jwts) == 6


class TestResponses:
    def test_no_body_carries_a_secret(self, captured):
        assert _found([SENTINEL, *captured.secrets.basic_headers(), *captured.provider_tokens],
                      [r["body"] for r in captured.responses]) == []

    def test_hub_api_token_is_shown_only_once(self, captured):
        shown = [r["request"] for r in captured.responses if captured.hub_api_token in r["body"] + repr(r["headers"])]
        assert shown == ["POST http://testserver/api/v1/tenant/api-tokens"]

    def test_no_header_carries_a_secret(self, captured):
        assert _found([SENTINEL, *captured.secrets.basic_headers(), *captured.provider_tokens],
                      [repr(r["headers"]) for r in captured.responses]) == []


class TestLogs:
    def test_no_record_carries_a_sentinel(self, captured):
        assert _found([SENTINEL], [rendered(r) for r in captured.records]) == []

    def test_no_hub_record_carries_an_outbound_credential(self, captured):
        needles = [*captured.secrets.basic_headers(), *captured.provider_tokens]
        assert _found(needles, [rendered(r) for r in _hub_records(captured)]) == []

    def test_no_record_carries_the_callers_authorization_header(self, captured):
        assert _found(captured.hub_bearers, [rendered(r) for r in captured.records]) == []

    def test_no_record_carries_the_hub_api_token(self, captured):
        assert _found([captured.hub_api_token], [rendered(r) for r in captured.records]) == []


class TestAudit:
    def test_no_entry_carries_a_secret(self, captured):
        with transaction() as session:
            entries = list(session.exec(select(AuditEntry).where(sa.or_(
                AuditEntry.tenant_id == uuid.UUID(captured.tenant_id),
                AuditEntry.resource_id.in_(captured.resource_ids)))).all())
        actions = {entry.action for entry in entries}
        assert {"provider.create", "provider.update", "connection.connect_api_key", "connection.connect_basic",
                "connection.connect_custom", "connection.oauth_callback", "connection.credentials_update",
                "connection.test", "connection.disconnect"} <= actions
        needles = [SENTINEL, *captured.secrets.basic_headers(), *captured.provider_tokens]
        assert _found(needles, [repr(entry.model_dump()) for entry in entries]) == []

    def test_replaced_credentials_are_audited_redacted(self, captured):
        with transaction() as session:
            entries = list(session.exec(select(AuditEntry).where(
                AuditEntry.tenant_id == uuid.UUID(captured.tenant_id),
                AuditEntry.action == "connection.credentials_update")).all())
        assert sorted(entry.changes["credentialType"] for entry in entries) == ["api_key", "basic", "custom", "oauth2"]
        assert all(entry.changes["credentials"] == "[REDACTED]" for entry in entries)


class TestTables:
    def test_no_column_of_any_table_holds_a_secret_in_clear(self, captured):
        reflected = sa.MetaData()
        reflected.reflect(bind=engine())
        assert {t.name for t in SQLModel.metadata.sorted_tables} <= set(reflected.tables)
        cells = []
        with engine().connect() as conn:
            for table in reflected.sorted_tables:
                cells += [f"{table.name}: {tuple(row)!r}" for row in conn.execute(sa.select(table))]
        needles = [SENTINEL, *captured.secrets.basic_headers(), *captured.provider_tokens, captured.hub_api_token,
                   *captured.hub_jwts]
        assert _found(needles, cells) == []


class TestValidationErrors:
    def test_an_over_long_api_key_is_not_echoed(self, client, tenant_admin, sandbox_integration):
        secret = f"{SENTINEL}-too-long-" + "k" * 4096

        response = client.post(f"{BASE}/{sandbox_integration['id']}/connect/api-key", json={"apiKey": secret},
                               headers=tenant_admin.headers)

        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert SENTINEL not in response.text

    def test_an_over_long_custom_credential_is_not_echoed(self, client, tenant_admin, sandbox_integration):
        secret = f"{SENTINEL}-too-long-" + "c" * 4096

        response = client.patch(f"{BASE}/{sandbox_integration['id']}/credentials", headers=tenant_admin.headers,
                                json={"credentialType": "custom", "credentials": {"X-API-Key": secret}})

        assert response.status_code == 400, response.text
        assert SENTINEL not in response.text
