"""persistence.vault: AES-256-GCM sealing bound to the owning row, and key rotation (server.cli.rotate_keys).

The session's app seals with the keyring installed at start-up; every test that installs
another keyring puts the original back, and rotation is undone (re-sealed under the original
key) before the test ends, so no other test finds a secret it cannot open.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from sqlmodel import select

from connectors.connection_flows import UNREADABLE
from persistence import connections, incoming_webhooks, providers, vault
from persistence.db import transaction
from persistence.models import Connection, Integration, OAuthState, Provider, utcnow
from server.cli import rotate_keys
from tests import factories
from tests.handlers.test_oauth_flow import authorize, callback, returned

BASE = "/api/v1/tenant/integrations"
pytestmark = pytest.mark.usefixtures("app")  # the app configures the database and the session keyring


@pytest.fixture
def original_keyring():
    """The session's keyring; it is installed again after the test, whatever the test did."""
    ring = vault.keyring()
    yield ring
    vault.configure(ring)


@pytest.fixture
def keyring(original_keyring) -> vault.Keyring:
    """A fresh one-key keyring installed for the test (unit tests of seal/open)."""
    ring = vault.Keyring.from_strings([vault.generate_key()])
    vault.configure(ring)
    return ring


def encoded(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def api_key_integration(client, super_admin, admin: factories.Account, sandbox) -> dict:
    """Enable an api_key provider pointing at the sandbox for `admin`'s tenant."""
    provider = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(
        sandbox.base_url, authType="api_key", oauthConfig=None))
    return factories.enable_integration(client, admin, provider["id"])


def connect_api_key(client, admin: factories.Account, integration: dict, api_key: str) -> None:
    response = client.post(f"{BASE}/{integration['id']}/connect/api-key", json={"apiKey": api_key}, headers=admin.headers)
    assert response.status_code == 200, response.text


def db_connection(integration: dict) -> Connection:
    with transaction() as session:
        return session.exec(select(Connection).where(Connection.integration_id == uuid.UUID(integration["id"]))).one()


def set_secret(connection_id: uuid.UUID, secret: str | None) -> None:
    with transaction() as session:
        row = session.get(Connection, connection_id)
        row.secret = secret
        session.add(row)


def sealed_secrets() -> tuple[list[Connection], list[Provider], list[OAuthState]]:
    """Every row holding a sealed secret: connections, providers' client secrets, pending OAuth verifiers."""
    with transaction() as session:
        rows = list(session.exec(select(Connection).where(Connection.secret.is_not(None))).all())
        provider_rows = list(session.exec(select(Provider).where(Provider.oauth_client_secret.is_not(None))).all())
        pending = list(session.exec(select(OAuthState).where(OAuthState.used_at.is_(None))).all())
    return rows, provider_rows, pending


def webhook_secret_rows() -> list[Integration]:
    """Integrations holding a sealed incoming-webhook secret."""
    with transaction() as session:
        return list(session.exec(select(Integration).where(Integration.webhook_secret.is_not(None))).all())


def key_id_of(token: str) -> str:
    return token.split(":", 2)[1]


class TestSealAndOpen:
    @pytest.mark.parametrize("value", [
        {"apiKey": "k-123", "nested": {"list": [1, 2, None]}},
        "a plain string",
        "ünïcødé ✓",
        {"accessToken": "x" * 5000},
        None,
    ])
    def test_round_trip(self, keyring, value):
        sealed = vault.seal(value, binding="connection:t1:c1")

        assert vault.open_sealed(sealed, binding="connection:t1:c1") == value

    def test_sealed_form_names_the_key_and_hides_the_value(self, keyring):
        sealed = vault.seal({"apiKey": "visible-if-leaked"}, binding="connection:t1:c1")

        prefix, key_id, payload = sealed.split(":", 2)
        assert (prefix, key_id) == ("v1", keyring.newest_id)
        assert "visible-if-leaked" not in sealed
        assert b"visible-if-leaked" not in base64.urlsafe_b64decode(payload)
        assert len(base64.urlsafe_b64decode(payload)) == 12 + len(b'{"apiKey": "visible-if-leaked"}') + 16

    def test_each_seal_uses_a_fresh_nonce(self, keyring):
        first = vault.seal("same", binding="b")
        second = vault.seal("same", binding="b")

        assert first != second
        assert base64.urlsafe_b64decode(first.split(":")[2])[:12] != base64.urlsafe_b64decode(second.split(":")[2])[:12]

    @pytest.mark.parametrize("other", [
        "connection:t2:c1",  # another tenant
        "connection:t1:c2",  # another connection of the tenant
        "connection:t1:c1 ",
        "provider:c1",
        "",
    ])
    def test_another_binding_does_not_open(self, keyring, other):
        sealed = vault.seal({"apiKey": "k"}, binding="connection:t1:c1")

        with pytest.raises(vault.VaultError, match="secret does not open: tampered, or bound to another row"):
            vault.open_sealed(sealed, binding=other)

    def test_tampered_ciphertext_does_not_open(self, keyring):
        sealed = vault.seal({"apiKey": "k"}, binding="b")
        prefix, key_id, payload = sealed.split(":", 2)
        raw = bytearray(base64.urlsafe_b64decode(payload))
        raw[15] ^= 0x01
        tampered = f"{prefix}:{key_id}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"

        with pytest.raises(vault.VaultError, match="tampered"):
            vault.open_sealed(tampered, binding="b")

    def test_unknown_key_does_not_open(self, keyring, original_keyring):
        vault.configure(original_keyring)
        sealed = vault.seal("s", binding="b")
        vault.configure(keyring)

        with pytest.raises(vault.VaultError, match=f"encryption key {original_keyring.newest_id} is not configured"):
            vault.open_sealed(sealed, binding="b")

    @pytest.mark.parametrize("token", ["", "no-colons", "v1:abcd", "v1:abcd:!!!not-base64!!!", None])
    def test_malformed_secret_does_not_open(self, keyring, token):
        with pytest.raises(vault.VaultError):
            vault.open_sealed(token, binding="b")

    def test_unknown_format_does_not_open(self, keyring):
        sealed = vault.seal("s", binding="b")

        with pytest.raises(vault.VaultError, match="unknown sealed-secret format"):
            vault.open_sealed("v2" + sealed[2:], binding="b")

    def test_older_key_still_opens_and_needs_rotation(self, original_keyring):
        old, new = vault.generate_key(), vault.generate_key()
        vault.configure(vault.Keyring.from_strings([old]))
        sealed = vault.seal({"k": 1}, binding="b")
        vault.configure(vault.Keyring.from_strings([new, old]))

        assert vault.open_sealed(sealed, binding="b") == {"k": 1}
        assert vault.needs_rotation(sealed) is True
        assert vault.needs_rotation(vault.seal({"k": 1}, binding="b")) is False

    @pytest.mark.parametrize("keys", [[], ["too-short"], [base64.urlsafe_b64encode(b"x" * 16).decode()]])
    def test_keyring_refuses_bad_keys(self, keys):
        with pytest.raises(ValueError):
            vault.Keyring.from_strings(keys)

    def test_key_id_is_a_digest_prefix(self):
        ring = vault.Keyring.from_strings([vault.generate_key(), vault.generate_key()])

        assert ring.newest_id == vault.Keyring.key_id(ring.keys[0])
        assert len(ring.newest_id) == 8 and int(ring.newest_id, 16) >= 0
        assert ring.find(vault.Keyring.key_id(ring.keys[1])) == ring.keys[1]


class TestSecretCopiedToAnotherRow:
    def test_connection_test_fails_cleanly_and_discloses_nothing(self, client, super_admin, tenant_admin,
                                                                 other_tenant_admin, sandbox, monkeypatch):
        victim_key = "victim-key-" + uuid.uuid4().hex
        monkeypatch.setattr(sandbox.config, "api_keys", [*sandbox.config.api_keys, victim_key])
        victim = api_key_integration(client, super_admin, tenant_admin, sandbox)
        thief = api_key_integration(client, super_admin, other_tenant_admin, sandbox)
        connect_api_key(client, tenant_admin, victim, victim_key)
        connect_api_key(client, other_tenant_admin, thief, "sandbox-api-key")
        victim_row, thief_row = db_connection(victim), db_connection(thief)
        presented: list[str | None] = []
        inner = sandbox.app.wsgi_app

        def recording(environ, start_response):
            presented.append(environ.get("HTTP_X_API_KEY"))
            return inner(environ, start_response)

        monkeypatch.setattr(sandbox.app, "wsgi_app", recording)
        set_secret(thief_row.id, victim_row.secret)
        try:
            with pytest.raises(vault.VaultError):
                connections.credentials(db_connection(thief))

            response = client.post(f"{BASE}/{thief['id']}/connection/test", headers=other_tenant_admin.headers)
            shown = client.get(f"{BASE}/{thief['id']}/connection", headers=other_tenant_admin.headers)
        finally:
            set_secret(thief_row.id, thief_row.secret)  # leave no row that fails to open (rotation walks them all)

        assert victim_key not in response.text and victim_key not in str(response.headers)
        assert victim_key not in presented  # the victim's key never reached the provider for the thief
        assert shown.status_code == 200, shown.text
        assert victim_key not in shown.text
        assert connections.credentials(db_connection(victim)) == {"apiKey": victim_key}
        assert response.status_code == 200, response.text  # a failed check, not a server error
        result = response.json()
        assert (result["success"], result["error"], result["responseTime"]) == (False, UNREADABLE, None)
        assert (shown.json()["status"], shown.json()["validationError"]) == ("error", UNREADABLE)
        assert "victim" not in UNREADABLE and str(victim_row.id) not in response.text

    def test_provider_client_secret_copied_to_another_provider_does_not_open(self, client, super_admin, sandbox):
        first = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(sandbox.base_url))
        second = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(sandbox.base_url))
        with transaction() as session:
            one, two = session.get(Provider, uuid.UUID(first["id"])), session.get(Provider, uuid.UUID(second["id"]))

            assert providers.client_secret(one) == "hub-sandbox-secret"
            with pytest.raises(vault.VaultError):
                vault.open_sealed(one.oauth_client_secret, binding=f"provider:{two.id}")


class TestRotateKeys:
    def test_reseals_every_secret_under_the_new_key(self, client, super_admin, tenant_admin, sandbox, settings,
                                                    original_keyring, sandbox_integration):
        old = encoded(original_keyring.keys[0])
        new = vault.generate_key()
        new_id = vault.Keyring.key_id(base64.urlsafe_b64decode(new))
        integration = api_key_integration(client, super_admin, tenant_admin, sandbox)
        connect_api_key(client, tenant_admin, integration, "sandbox-api-key")
        _, redirect = authorize(client, tenant_admin, sandbox_integration)
        assert callback(client, redirect.headers["location"]).status_code == 302
        oauth_credentials = connections.credentials(db_connection(sandbox_integration))
        with transaction() as session:
            incoming_webhooks.set_secret(session, tenant_id=uuid.UUID(tenant_admin.tenant_id),
                                         integration_id=uuid.UUID(integration["id"]), secret="incoming-secret-value",
                                         now=utcnow())
        rows_before, _, _ = sealed_secrets()
        assert all(key_id_of(row.secret) == original_keyring.newest_id for row in rows_before)
        try:
            changed = rotate_keys(settings.model_copy(update={"hub_encryption_keys": f"{new},{old}"}))

            rows, provider_rows, pending = sealed_secrets()
            webhook_rows = webhook_secret_rows()
            assert changed == len(rows) + len(provider_rows) + len(pending) + len(webhook_rows) >= 4
            for row in webhook_rows:
                assert key_id_of(row.webhook_secret) == new_id
                vault.open_sealed(row.webhook_secret, binding=incoming_webhooks.secret_binding(row))  # opens
            assert vault.keyring().newest_id == new_id
            for row in rows:
                assert key_id_of(row.secret) == new_id and vault.needs_rotation(row.secret) is False
                connections.credentials(row)  # opens
            for row in provider_rows:
                assert key_id_of(row.oauth_client_secret) == new_id
                providers.client_secret(row)  # opens
            assert all(key_id_of(row.sealed_verifier) == new_id for row in pending)
            assert {r.id: connections.credentials(r) for r in rows} == \
                   {r.id: _open_with(original_keyring, r) for r in rows_before}
            assert rotate_keys(settings.model_copy(update={"hub_encryption_keys": f"{new},{old}"})) == 0

            vault.configure(vault.Keyring.from_strings([new]))  # the old key retired
            assert connections.credentials(db_connection(integration)) == {"apiKey": "sandbox-api-key"}
            assert connections.credentials(db_connection(sandbox_integration)) == oauth_credentials
            for check in (integration, sandbox_integration):
                result = client.post(f"{BASE}/{check['id']}/connection/test", headers=tenant_admin.headers)
                assert result.status_code == 200, result.text
                assert result.json()["success"] is True, result.json()
        finally:
            _rotate_back(settings, old, new, original_keyring)

        rows, provider_rows, pending = sealed_secrets()
        assert all(key_id_of(row.secret) == original_keyring.newest_id for row in rows)
        assert all(key_id_of(row.oauth_client_secret) == original_keyring.newest_id for row in provider_rows)
        assert all(key_id_of(row.sealed_verifier) == original_keyring.newest_id for row in pending)

    def test_pending_authorization_survives_the_old_key_being_retired(self, client, tenant_admin, settings,
                                                                      original_keyring, sandbox_integration):
        old = encoded(original_keyring.keys[0])
        new = vault.generate_key()
        _, redirect = authorize(client, tenant_admin, sandbox_integration)  # the user is at the consent page
        try:
            rotate_keys(settings.model_copy(update={"hub_encryption_keys": f"{new},{old}"}))
            vault.configure(vault.Keyring.from_strings([new]))

            response = callback(client, redirect.headers["location"])
        finally:
            _rotate_back(settings, old, new, original_keyring)

        assert response.status_code == 302, response.text
        assert response.headers["location"] == returned(sandbox_integration, status="connected")


def _open_with(ring: vault.Keyring, row: Connection) -> dict:
    current = vault.keyring()
    vault.configure(ring)
    try:
        return connections.credentials(row)
    finally:
        vault.configure(current)


def _rotate_back(settings, old: str, new: str, original: vault.Keyring) -> None:
    """Re-seal everything under the session's key again and reinstall the session keyring."""
    try:
        rotate_keys(settings.model_copy(update={"hub_encryption_keys": f"{old},{new}"}))
    finally:
        vault.configure(original)

