"""Idempotency-Key on the POSTs that declare it (server/idempotency.py, persistence/idempotency.py).

A retry with the same key and body replays the first answer (`Idempotent-Replayed: true`) and
creates nothing; the same key with another body answers 422; a retry while the first request
is still running answers 409. Keys are per principal (API token, user, or client IP when
anonymous), kept 24 hours, and the stored answers are sealed at rest.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import func, select

from persistence import idempotency, vault
from persistence.db import transaction
from persistence.models import ApiToken, AuditEntry, IdempotencyRecord, Integration, utcnow
from tests import factories
from tests.handlers.test_tenant_integrations import assert_error

INTEGRATIONS = "/api/v1/tenant/integrations"
TOKENS = "/api/v1/tenant/api-tokens"
USERS = "/api/v1/tenant/users"


def post(client, account: factories.Account, url: str, body: dict, key: str | None):
    """POST `body` as exactly `json.dumps(body)` (so its fingerprint is known), with the key if given."""
    headers = account.headers | {"Content-Type": "application/json"} | ({"Idempotency-Key": key} if key else {})
    return client.post(url, content=json.dumps(body).encode(), headers=headers)


def fingerprint(url: str, body: dict) -> str:
    """The request hash the middleware stores: SHA-256 of method, path and body."""
    return hashlib.sha256(b"|".join([b"POST", url.encode(), json.dumps(body).encode()])).hexdigest()


def integrations_named(tenant_id: str, name: str) -> list[Integration]:
    with transaction() as session:
        return list(session.exec(select(Integration).where(Integration.tenant_id == uuid.UUID(tenant_id),
                                                           Integration.name == name)).all())


def creations_audited(tenant_id: str) -> int:
    with transaction() as session:
        return session.exec(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.tenant_id == uuid.UUID(tenant_id), AuditEntry.action == "integration.create")).one()


def record(account: factories.Account, key: str) -> IdempotencyRecord | None:
    with transaction() as session:
        return session.exec(select(IdempotencyRecord).where(IdempotencyRecord.scope == f"user:{account.user_id}",
                                                            IdempotencyRecord.key == key)).first()


@pytest.fixture
def provider(client, super_admin) -> dict:
    return factories.create_provider(client, super_admin)


@pytest.fixture
def body(provider) -> dict:
    """An IntegrationCreate body with a unique name."""
    return {"integrationId": provider["id"], "name": factories.unique("Idempotent ")}


@pytest.fixture
def key() -> str:
    return factories.unique("key-")


class TestReplay:
    def test_same_key_and_body_replays_the_first_answer(self, client, tenant_admin, body, key):
        first = post(client, tenant_admin, INTEGRATIONS, body, key)
        second = post(client, tenant_admin, INTEGRATIONS, body, key)

        assert first.status_code == 201, first.text
        assert "Idempotent-Replayed" not in first.headers
        assert second.status_code == 201, second.text
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert second.headers["Location"] == first.headers["Location"]
        assert second.headers["Content-Type"].startswith("application/json")
        assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
        assert [str(row.id) for row in integrations_named(tenant_admin.tenant_id, body["name"])] == [first.json()["id"]]
        assert creations_audited(tenant_admin.tenant_id) == 1

    def test_many_retries_create_one_row(self, client, tenant_admin, body, key):
        answers = [post(client, tenant_admin, INTEGRATIONS, body, key) for _ in range(4)]

        assert [a.status_code for a in answers] == [201] * 4
        assert len({a.json()["id"] for a in answers}) == 1
        assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true", "true"]
        assert len(integrations_named(tenant_admin.tenant_id, body["name"])) == 1

    def test_stores_the_answer(self, client, tenant_admin, body, key):
        first = post(client, tenant_admin, INTEGRATIONS, body, key)

        row = record(tenant_admin, key)

        assert (row.state, row.response_status, row.request_hash) == ("done", 201, fingerprint(INTEGRATIONS, body))
        assert json.loads(idempotency.stored_body(row)) == first.json()
        assert first.json()["id"] not in row.response_body  # sealed at rest

    def test_without_a_key_each_post_runs(self, client, tenant_admin, provider):
        body = {"name": factories.unique("CI "), "scopes": ["integrations:read"]}

        first = post(client, tenant_admin, TOKENS, body, None)
        second = post(client, tenant_admin, TOKENS, body, None)

        assert (first.status_code, second.status_code) == (201, 201)
        assert first.json()["id"] != second.json()["id"]

    def test_replay_works_for_users_too(self, client, tenant_admin, key):
        user = {"email": f"{factories.unique('idem')}@example.com", "name": "Ida", "role": "user",
                "password": factories.PASSWORD}

        first = post(client, tenant_admin, USERS, user, key)
        second = post(client, tenant_admin, USERS, user, key)

        assert (first.status_code, second.status_code) == (201, 201), second.text
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"


class TestMismatch:
    def test_same_key_with_another_body_is_rejected(self, client, tenant_admin, body, key):
        first = post(client, tenant_admin, INTEGRATIONS, body, key)
        other = body | {"name": factories.unique("Other ")}

        response = post(client, tenant_admin, INTEGRATIONS, other, key)

        assert first.status_code == 201, first.text
        assert_error(response, 422, "VALIDATION_ERROR", message="This Idempotency-Key was used with a different request",
                     details={"field": "Idempotency-Key"})
        assert integrations_named(tenant_admin.tenant_id, other["name"]) == []

    def test_same_key_on_another_operation_is_rejected(self, client, tenant_admin, body, key):
        assert post(client, tenant_admin, INTEGRATIONS, body, key).status_code == 201

        response = post(client, tenant_admin, TOKENS, {"name": "CI", "scopes": ["integrations:read"]}, key)

        assert_error(response, 422, "VALIDATION_ERROR", message="This Idempotency-Key was used with a different request",
                     details={"field": "Idempotency-Key"})


class TestScope:
    def test_keys_are_per_tenant(self, client, tenant_admin, other_tenant_admin, body, key):
        mine = post(client, tenant_admin, INTEGRATIONS, body, key)

        theirs = post(client, other_tenant_admin, INTEGRATIONS, body, key)

        assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
        assert "Idempotent-Replayed" not in theirs.headers
        assert theirs.json()["id"] != mine.json()["id"]
        assert theirs.json()["tenantId"] == other_tenant_admin.tenant_id
        assert len(integrations_named(other_tenant_admin.tenant_id, body["name"])) == 1
        assert len(integrations_named(tenant_admin.tenant_id, body["name"])) == 1


    def test_an_api_token_never_replays_its_admins_answer(self, client, tenant_admin, key):
        # Issue 11 item 1: a token holding only api_tokens:write sent its admin's key and body and
        # received the admin's new token in clear.
        body = {"name": factories.unique("CI "), "scopes": ["api_tokens:write"]}
        writer = post(client, tenant_admin, TOKENS, {"name": factories.unique("w "), "scopes": ["api_tokens:write"]},
                      None).json()["token"]
        admins = post(client, tenant_admin, TOKENS, body, key)

        headers = {"X-API-Key": writer, "Content-Type": "application/json", "Idempotency-Key": key}
        theirs = client.post(TOKENS, content=json.dumps(body).encode(), headers=headers)

        assert (admins.status_code, theirs.status_code) == (201, 201), theirs.text
        assert "Idempotent-Replayed" not in theirs.headers
        assert theirs.json()["token"] != admins.json()["token"]
        assert admins.json()["token"] not in theirs.text

    def test_two_users_of_one_tenant_do_not_share_keys(self, client, tenant_admin, key):
        colleague = factories.add_user(client, tenant_admin, role="tenant_admin")
        body = {"name": factories.unique("CI "), "scopes": ["integrations:read"]}
        mine = post(client, tenant_admin, TOKENS, body, key)

        theirs = post(client, colleague, TOKENS, body, key)

        assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
        assert "Idempotent-Replayed" not in theirs.headers
        assert theirs.json()["token"] != mine.json()["token"]

    def test_an_api_token_replays_its_own_answer(self, client, tenant_admin, key):
        writer = post(client, tenant_admin, TOKENS, {"name": factories.unique("w "), "scopes": ["api_tokens:write"]},
                      None).json()["token"]
        body = {"name": factories.unique("CI "), "scopes": ["api_tokens:write"]}
        headers = {"X-API-Key": writer, "Content-Type": "application/json", "Idempotency-Key": key}

        first = client.post(TOKENS, content=json.dumps(body).encode(), headers=headers)
        second = client.post(TOKENS, content=json.dumps(body).encode(), headers=headers)

        assert (first.status_code, second.status_code) == (201, 201), second.text
        assert second.headers["Idempotent-Replayed"] == "true"
        assert second.json() == first.json()


class TestSealedAtRest:
    def test_a_sealed_answer_copied_to_another_record_does_not_replay(self, client, tenant_admin, body, key):
        first = post(client, tenant_admin, INTEGRATIONS, body, key)
        other_key = factories.unique("key-")
        assert post(client, tenant_admin, INTEGRATIONS, body | {"name": factories.unique("O ")}, other_key).status_code == 201
        with transaction() as session:
            session.exec(sa.update(IdempotencyRecord)
                         .where(IdempotencyRecord.scope == f"user:{tenant_admin.user_id}",
                                IdempotencyRecord.key == other_key)
                         .values(response_body=record(tenant_admin, key).response_body))
        with pytest.raises(vault.VaultError):
            idempotency.stored_body(record(tenant_admin, other_key))
        assert first.status_code == 201


class TestKeyValidation:
    def test_key_longer_than_255_is_rejected(self, client, tenant_admin, body):
        response = post(client, tenant_admin, INTEGRATIONS, body, "k" * 256)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert integrations_named(tenant_admin.tenant_id, body["name"]) == []
        assert record(tenant_admin, "k" * 256) is None

    def test_key_of_255_is_accepted(self, client, tenant_admin, body):
        key = factories.unique("k") + "k" * 244

        first = post(client, tenant_admin, INTEGRATIONS, body, key)
        second = post(client, tenant_admin, INTEGRATIONS, body, key)

        assert len(key) == 255
        assert (first.status_code, second.status_code) == (201, 201), second.text
        assert second.headers["Idempotent-Replayed"] == "true"


class TestInProgress:
    def _claim(self, account: factories.Account, key: str, request_hash: str) -> None:
        """Claim `key` as a concurrent request still running would have."""
        with transaction() as session:
            session.add(IdempotencyRecord(scope=f"user:{account.user_id}", key=key, request_hash=request_hash))

    def test_duplicate_while_the_first_runs_is_a_conflict(self, client, tenant_admin, body, key):
        self._claim(tenant_admin, key, fingerprint(INTEGRATIONS, body))

        response = post(client, tenant_admin, INTEGRATIONS, body, key)

        assert_error(response, 409, "CONFLICT", message="A request with this Idempotency-Key is still in progress",
                     details={"field": "Idempotency-Key"})
        assert integrations_named(tenant_admin.tenant_id, body["name"]) == []
        assert record(tenant_admin, key).state == "in_progress"  # the first request's claim stays

    def test_different_body_while_the_first_runs_is_a_mismatch(self, client, tenant_admin, body, key):
        self._claim(tenant_admin, key, "0" * 64)

        response = post(client, tenant_admin, INTEGRATIONS, body, key)

        assert_error(response, 422, "VALIDATION_ERROR", message="This Idempotency-Key was used with a different request",
                     details={"field": "Idempotency-Key"})


class TestExpiry:
    def _age(self, account: factories.Account, key: str, hours: float) -> None:
        with transaction() as session:
            session.exec(sa.update(IdempotencyRecord)
                         .where(IdempotencyRecord.scope == f"user:{account.user_id}", IdempotencyRecord.key == key)
                         .values(created_at=utcnow() - timedelta(hours=hours)))

    def test_key_older_than_24_hours_runs_the_request_again(self, client, tenant_admin, key):
        body = {"name": factories.unique("CI "), "scopes": ["integrations:read"]}
        first = post(client, tenant_admin, TOKENS, body, key)
        self._age(tenant_admin, key, hours=24.5)

        again = post(client, tenant_admin, TOKENS, body, key)

        assert (first.status_code, again.status_code) == (201, 201), again.text
        assert "Idempotent-Replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
        with transaction() as session:
            rows = session.exec(select(ApiToken).where(ApiToken.name == body["name"])).all()
        assert len(rows) == 2
        assert idempotency.stored_body(record(tenant_admin, key)) == again.text

    def test_expired_answer_is_never_replayed(self, client, tenant_admin, body, key):
        with transaction() as session:
            session.add(IdempotencyRecord(
                scope=f"user:{tenant_admin.user_id}", key=key, request_hash=fingerprint(INTEGRATIONS, body),
                state="done", response_status=201, response_body='{"stale": true}',
                response_headers={"content-type": "application/json"}, created_at=utcnow() - timedelta(hours=25)))

        response = post(client, tenant_admin, INTEGRATIONS, body, key)

        assert response.status_code == 201, response.text
        assert "Idempotent-Replayed" not in response.headers
        assert response.json()["name"] == body["name"]
        assert len(integrations_named(tenant_admin.tenant_id, body["name"])) == 1

    def test_key_younger_than_24_hours_still_replays(self, client, tenant_admin, body, key):
        first = post(client, tenant_admin, INTEGRATIONS, body, key)
        self._age(tenant_admin, key, hours=23.5)

        again = post(client, tenant_admin, INTEGRATIONS, body, key)

        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json() == first.json()
