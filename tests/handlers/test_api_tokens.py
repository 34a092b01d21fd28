"""Operations of tag `api-tokens` (/api/v1/tenant/api-tokens...), and API tokens as credentials.

A token reads `hub_<prefix>_<secret>`, is shown once, acts as its creator within its scopes,
and is refused at once when revoked or expired. Only the SHA-256 of its secret is stored.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import select

from persistence.db import transaction
from persistence.models import ApiToken, AuditEntry
from tests import factories
from tests.handlers.test_tenant_integrations import RFC3339_UTC, assert_error, assert_forbidden

TOKENS = "/api/v1/tenant/api-tokens"
INTEGRATIONS = "/api/v1/tenant/integrations"
USERS = "/api/v1/tenant/users"
TOKEN_KEYS = {"id", "name", "prefix", "scopes", "createdBy", "createdAt", "expiresAt", "lastUsedAt", "revokedAt"}
INVALID_TOKEN = {"message": "Token is invalid", "details": None}


def create_token(client, admin: factories.Account, scopes: list[str], **overrides) -> dict:
    """Create a token as `admin`; return the ApiTokenCreated document (with the secret)."""
    body = {"name": factories.unique("CI token "), "scopes": scopes} | overrides
    response = client.post(TOKENS, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_key(token: str) -> dict[str, str]:
    return {"X-API-Key": token}


def token_row(token_id: str) -> ApiToken | None:
    with transaction() as session:
        return session.get(ApiToken, uuid.UUID(token_id))


def set_expiry(token_id: str, when: datetime) -> None:
    with transaction() as session:
        session.exec(sa.update(ApiToken).where(ApiToken.id == uuid.UUID(token_id)).values(expires_at=when))


def audit_entries(resource_id: str, action: str) -> list[AuditEntry]:
    with transaction() as session:
        stmt = select(AuditEntry).where(AuditEntry.resource_id == resource_id, AuditEntry.action == action)
        return list(session.exec(stmt).all())


@pytest.fixture
def provider(client, super_admin) -> dict:
    """A tenant-catalog provider anyone can enable."""
    return factories.create_provider(client, super_admin)


@pytest.fixture
def read_token(client, tenant_admin) -> dict:
    """A token of `tenant_admin`'s tenant holding only `integrations:read`."""
    return create_token(client, tenant_admin, ["integrations:read"])


class TestCreateApiToken:
    def test_creates_and_shows_the_secret_once(self, client, tenant_admin):
        body = {"name": "CI pipeline", "scopes": ["integrations:read", "audit:read"]}

        response = client.post(TOKENS, json=body, headers=tenant_admin.headers)

        assert response.status_code == 201, response.text
        document = response.json()
        assert set(document) == TOKEN_KEYS | {"token"}
        assert (document["name"], sorted(document["scopes"]), document["createdBy"]) == (
            "CI pipeline", ["audit:read", "integrations:read"], tenant_admin.user_id)
        assert (document["expiresAt"], document["lastUsedAt"], document["revokedAt"]) == (None, None, None)
        assert RFC3339_UTC.match(document["createdAt"]), document["createdAt"]
        assert document["token"].startswith("hub_")
        assert document["prefix"].startswith("hub_") and document["token"].startswith(document["prefix"] + "_")
        assert len(document["token"]) > len(document["prefix"]) + 20
        assert response.headers["Location"] == f"{TOKENS}/{document['id']}"
        listed = client.get(TOKENS, headers=tenant_admin.headers)
        assert document["token"] not in listed.text

    def test_stores_only_the_sha256_of_the_secret(self, client, tenant_admin):
        document = create_token(client, tenant_admin, ["integrations:read"])
        secret = document["token"].split("_", 2)[2]

        row = token_row(document["id"])

        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert row.prefix == document["prefix"]
        for column, value in row.model_dump().items():
            assert secret not in str(value), column
            assert document["token"] not in str(value), column

    def test_with_expiry(self, client, tenant_admin):
        expires = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)

        document = create_token(client, tenant_admin, ["integrations:read"],
                                expiresAt=expires.isoformat().replace("+00:00", "Z"))

        assert RFC3339_UTC.match(document["expiresAt"]), document["expiresAt"]
        assert datetime.fromisoformat(document["expiresAt"].replace("Z", "+00:00")) == expires

    def test_expiry_in_the_past_is_rejected(self, client, tenant_admin):
        response = client.post(TOKENS, json={"name": "old", "scopes": ["integrations:read"],
                                             "expiresAt": "2001-01-01T00:00:00Z"}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR",
                     message="expiresAt must be a future RFC 3339 date-time with a timezone",
                     details={"field": "expiresAt"})

    def test_writes_audit_entry_without_the_secret(self, client, tenant_admin):
        response = client.post(TOKENS, json={"name": "audited", "scopes": ["integrations:read"]},
                               headers=tenant_admin.headers)
        document = response.json()

        entries = audit_entries(document["id"], "api_token.create")

        assert len(entries) == 1
        entry = entries[0]
        assert (entry.tenant_id, entry.actor_id, entry.request_id) == (
            uuid.UUID(tenant_admin.tenant_id), uuid.UUID(tenant_admin.user_id), response.headers["X-Request-ID"])
        assert entry.changes == {"name": "audited", "scopes": ["integrations:read"], "prefix": document["prefix"]}
        assert document["token"].split("_", 2)[2] not in str(entry.changes)

    def test_scopes_the_creator_lacks_are_rejected(self, client, tenant_admin):
        body = {"name": factories.unique("greedy "), "scopes": ["integrations:read", "providers:write"]}

        response = client.post(TOKENS, json=body, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR",
                     message="A token cannot hold scopes its creator lacks: providers:write",
                     details={"field": "scopes", "notGranted": ["providers:write"]})
        with transaction() as session:
            assert session.exec(select(ApiToken).where(ApiToken.name == body["name"])).first() is None

    def test_a_token_cannot_mint_a_broader_token(self, client, tenant_admin):
        minter = create_token(client, tenant_admin, ["api_tokens:write"])

        response = client.post(TOKENS, json={"name": "escalate", "scopes": ["users:write"]},
                               headers=bearer(minter["token"]))

        assert_error(response, 400, "VALIDATION_ERROR",
                     message="A token cannot hold scopes its creator lacks: users:write",
                     details={"field": "scopes", "notGranted": ["users:write"]})

    def test_empty_scopes_are_rejected(self, client, tenant_admin):
        response = client.post(TOKENS, json={"name": "none", "scopes": []}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_plain_user_is_denied(self, client, member):
        response = client.post(TOKENS, json={"name": "mine", "scopes": ["profile"]}, headers=member.headers)

        assert_forbidden(response, "api_tokens:write")


class TestListApiTokens:
    def test_lists_without_secret_or_hash(self, client, tenant_admin):
        first = create_token(client, tenant_admin, ["integrations:read"])
        second = create_token(client, tenant_admin, ["audit:read"])

        response = client.get(TOKENS, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        page = response.json()
        assert [t["id"] for t in page["tokens"]] == [second["id"], first["id"]]  # newest first
        assert (page["total"], page["hasMore"], page["nextOffset"]) == (2, False, None)
        assert all(set(t) == TOKEN_KEYS for t in page["tokens"])
        assert page["tokens"][1] == {key: first[key] for key in TOKEN_KEYS}
        for document in (first, second):
            assert document["token"] not in response.text
            assert document["token"].split("_", 2)[2] not in response.text
            assert token_row(document["id"]).secret_hash not in response.text

    def test_lists_only_the_own_tenants_tokens(self, client, tenant_admin, other_tenant_admin):
        mine = create_token(client, tenant_admin, ["integrations:read"])
        create_token(client, other_tenant_admin, ["integrations:read"])

        page = client.get(TOKENS, headers=tenant_admin.headers).json()

        assert [t["id"] for t in page["tokens"]] == [mine["id"]]

    def test_revoked_tokens_only_on_request(self, client, tenant_admin):
        live = create_token(client, tenant_admin, ["integrations:read"])
        revoked = create_token(client, tenant_admin, ["integrations:read"])
        assert client.delete(f"{TOKENS}/{revoked['id']}", headers=tenant_admin.headers).status_code == 204

        default = client.get(TOKENS, headers=tenant_admin.headers).json()
        everything = client.get(TOKENS, params={"includeRevoked": "true"}, headers=tenant_admin.headers).json()

        assert [t["id"] for t in default["tokens"]] == [live["id"]]
        assert [t["id"] for t in everything["tokens"]] == [revoked["id"], live["id"]]
        assert RFC3339_UTC.match(everything["tokens"][0]["revokedAt"])

    def test_plain_user_is_denied(self, client, member):
        response = client.get(TOKENS, headers=member.headers)

        assert_forbidden(response, "api_tokens:read")


class TestUsingApiTokens:
    @pytest.mark.parametrize("send", [bearer, api_key], ids=["Authorization: Bearer", "X-API-Key"])
    def test_token_authenticates(self, client, tenant_admin, provider, read_token, send):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])

        response = client.get(INTEGRATIONS, headers=send(read_token["token"]))

        assert response.status_code == 200, response.text
        assert [i["id"] for i in response.json()["integrations"]] == [integration["id"]]

    @pytest.mark.parametrize("send", [bearer, api_key], ids=["Authorization: Bearer", "X-API-Key"])
    def test_token_acts_within_its_scopes_only(self, client, tenant_admin, provider, read_token, send):
        created = client.post(INTEGRATIONS, json={"integrationId": provider["id"], "name": factories.unique("I ")},
                              headers=send(read_token["token"]))
        users = client.get(USERS, headers=send(read_token["token"]))

        assert_forbidden(created, "integrations:write")
        assert_forbidden(users, "users:read")
        listed = client.get(INTEGRATIONS, headers=tenant_admin.headers).json()
        assert listed["integrations"] == []

    def test_token_acts_as_its_creator(self, client, tenant_admin, provider):
        writer = create_token(client, tenant_admin, ["integrations:write", "integrations:read"])

        response = client.post(INTEGRATIONS, json={"integrationId": provider["id"], "name": factories.unique("I ")},
                               headers=api_key(writer["token"]))

        assert response.status_code == 201, response.text
        assert (response.json()["tenantId"], response.json()["enabledBy"]) == (
            tenant_admin.tenant_id, tenant_admin.user_id)

    def test_denied_use_is_audited_with_the_token(self, client, tenant_admin, read_token):
        response = client.get(USERS, headers=bearer(read_token["token"]))

        with transaction() as session:
            entry = session.exec(select(AuditEntry).where(
                AuditEntry.request_id == response.headers["X-Request-ID"])).one()
        assert (entry.action, entry.outcome, entry.resource_id, entry.actor_id) == (
            "request.denied", "denied", "list_users", uuid.UUID(tenant_admin.user_id))
        assert entry.changes["tokenId"] == read_token["id"]

    def test_use_sets_last_used_at(self, client, tenant_admin, read_token):
        before = datetime.now(timezone.utc)
        assert client.get(INTEGRATIONS, headers=bearer(read_token["token"])).status_code == 200

        listed = client.get(TOKENS, headers=tenant_admin.headers).json()["tokens"]

        last_used = next(t["lastUsedAt"] for t in listed if t["id"] == read_token["id"])
        assert last_used is not None and RFC3339_UTC.match(last_used), last_used
        assert datetime.fromisoformat(last_used.replace("Z", "+00:00")) >= before - timedelta(seconds=1)

    def test_token_of_one_tenant_sees_nothing_of_another(self, client, tenant_admin, other_tenant_admin, provider):
        theirs = factories.enable_integration(client, other_tenant_admin, provider["id"])
        their_token = create_token(client, other_tenant_admin, ["api_tokens:read", "api_tokens:write"])
        mine = create_token(client, tenant_admin, ["integrations:read", "api_tokens:read", "api_tokens:write"])

        integrations = client.get(INTEGRATIONS, headers=api_key(mine["token"]))
        one = client.get(f"{INTEGRATIONS}/{theirs['id']}", headers=api_key(mine["token"]))
        tokens = client.get(TOKENS, headers=api_key(mine["token"]))
        revoke = client.delete(f"{TOKENS}/{their_token['id']}", headers=api_key(mine["token"]))

        assert integrations.json()["integrations"] == []
        assert_error(one, 404, "INTEGRATION_NOT_FOUND", message=f"Integration {theirs['id']} not found", details=None)
        assert [t["id"] for t in tokens.json()["tokens"]] == [mine["id"]]
        assert_error(revoke, 404, "API_TOKEN_NOT_FOUND")
        assert token_row(their_token["id"]).revoked_at is None

    def test_unknown_token_is_invalid(self, client, read_token):
        forged = read_token["token"][:-4] + ("AAAA" if not read_token["token"].endswith("AAAA") else "BBBB")

        response = client.get(INTEGRATIONS, headers=bearer(forged))

        assert_error(response, 401, "INVALID_TOKEN", **INVALID_TOKEN)

    def test_expired_token_is_refused(self, client, read_token):
        assert client.get(INTEGRATIONS, headers=bearer(read_token["token"])).status_code == 200
        set_expiry(read_token["id"], datetime.now(timezone.utc) - timedelta(seconds=1))

        by_bearer = client.get(INTEGRATIONS, headers=bearer(read_token["token"]))
        by_header = client.get(INTEGRATIONS, headers=api_key(read_token["token"]))

        assert_error(by_bearer, 401, "INVALID_TOKEN", **INVALID_TOKEN)
        assert_error(by_header, 401, "INVALID_TOKEN", **INVALID_TOKEN)

    def test_token_of_a_deactivated_creator_is_refused(self, client, tenant_admin):
        second_admin = factories.add_user(client, tenant_admin, role="tenant_admin")
        token = create_token(client, second_admin, ["integrations:read"])
        deactivated = client.patch(f"{USERS}/{second_admin.user_id}", json={"active": False},
                                   headers=tenant_admin.headers)
        assert deactivated.status_code == 200, deactivated.text

        response = client.get(INTEGRATIONS, headers=api_key(token["token"]))

        assert_error(response, 401, "INVALID_TOKEN", **INVALID_TOKEN)


class TestRevokeApiToken:
    def test_revoked_token_is_refused_at_once(self, client, tenant_admin, read_token):
        assert client.get(INTEGRATIONS, headers=bearer(read_token["token"])).status_code == 200

        response = client.delete(f"{TOKENS}/{read_token['id']}", headers=tenant_admin.headers)
        by_bearer = client.get(INTEGRATIONS, headers=bearer(read_token["token"]))
        by_header = client.get(INTEGRATIONS, headers=api_key(read_token["token"]))

        assert response.status_code == 204, response.text
        assert response.content == b""
        assert_error(by_bearer, 401, "INVALID_TOKEN", **INVALID_TOKEN)
        assert_error(by_header, 401, "INVALID_TOKEN", **INVALID_TOKEN)
        assert token_row(read_token["id"]).revoked_at is not None

    def test_writes_audit_entry(self, client, tenant_admin, read_token):
        response = client.delete(f"{TOKENS}/{read_token['id']}", headers=tenant_admin.headers)

        entries = audit_entries(read_token["id"], "api_token.revoke")
        assert response.status_code == 204
        assert [(e.actor_id, e.request_id, e.outcome) for e in entries] == [
            (uuid.UUID(tenant_admin.user_id), response.headers["X-Request-ID"], "success")]

    def test_unknown_id_is_not_found(self, client, tenant_admin):
        token_id = str(uuid.uuid4())

        response = client.delete(f"{TOKENS}/{token_id}", headers=tenant_admin.headers)

        assert_error(response, 404, "API_TOKEN_NOT_FOUND")

    def test_plain_user_is_denied(self, client, member, read_token):
        response = client.delete(f"{TOKENS}/{read_token['id']}", headers=member.headers)

        assert_forbidden(response, "api_tokens:write")
        assert token_row(read_token["id"]).revoked_at is None
