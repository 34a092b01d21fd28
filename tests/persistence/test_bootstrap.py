"""persistence.bootstrap: the shipped provider catalog, idempotent seeding, the first super admin."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from connexion.json_schema import Draft4RequestValidator
from jsonschema import Draft4Validator
from sqlmodel import select

from persistence import bootstrap, providers
from persistence.bootstrap import sandbox_documents
from persistence.db import transaction
from persistence.errors import InvalidInput
from persistence.models import Provider, User
from server.app import load_spec
from tests import conftest, factories

COLUMN_TO_FIELD = {column: field for field, column in providers.DOCUMENT_FIELDS.items()}
ENTRIES = bootstrap.catalog_entries()


class _Rollback(Exception):
    """Raised inside a transaction to roll it back."""


def as_document(entry: dict) -> dict:
    """Translate a column-named catalog entry back into a provider document (the API's field names)."""
    return {COLUMN_TO_FIELD[column]: value for column, value in entry.items()}


@pytest.fixture(scope="module")
def provider_create_validator():
    """The spec's ProviderCreate schema, judged as the hub judges a POST body.

    Connexion's Draft4RequestValidator is jsonschema's Draft 4 validator with `nullable: true`
    allowing None (for `type` and `enum`): a seed entry passing it would be accepted by
    `POST /admin/integrations`.
    """
    schema = load_spec()["components"]["schemas"]["ProviderCreate"]
    return Draft4RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)


class TestCatalogEntries:
    def test_has_at_least_15_entries(self):
        assert len(ENTRIES) >= 15

    def test_provider_keys_are_unique(self):
        keys = [entry["provider"] for entry in ENTRIES]

        assert len(keys) == len(set(keys))

    def test_entries_use_column_names(self):
        assert all(set(entry) <= set(COLUMN_TO_FIELD) for entry in ENTRIES)

    @pytest.mark.parametrize("entry", ENTRIES, ids=[entry["provider"] for entry in ENTRIES])
    def test_entry_is_a_valid_provider_create_body(self, provider_create_validator, entry):
        errors = sorted(provider_create_validator.iter_errors(as_document(entry)), key=lambda e: list(e.path))

        assert [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors] == []

    @pytest.mark.parametrize("entry", ENTRIES, ids=[entry["provider"] for entry in ENTRIES])
    def test_entry_obeys_the_cross_field_rules(self, entry):
        try:
            providers.check_rules(Provider(**entry))
        except InvalidInput as exc:
            pytest.fail(f"{entry['provider']}: {exc.message}")


@pytest.mark.usefixtures("app")  # the app fixture migrates, seeds and configures the database engine
class TestSeedCatalog:
    def test_second_run_adds_nothing(self):
        keys = [entry["provider"] for entry in ENTRIES]
        with transaction() as session:
            before = session.scalar(sa.select(sa.func.count()).select_from(Provider))
            seeded = session.scalar(sa.select(sa.func.count()).select_from(Provider).where(Provider.provider.in_(keys)))

        with transaction() as session:
            added = bootstrap.seed_catalog(session)

        assert added == 0
        assert seeded == len(keys)
        with transaction() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Provider)) == before

    def test_adds_only_missing_entries(self):
        entry = providers.document_columns(factories.provider_body(status="disabled", audience="system"))

        with pytest.raises(_Rollback):
            with transaction() as session:
                assert bootstrap.seed_catalog(session, [entry]) == 1
                assert bootstrap.seed_catalog(session, [entry]) == 0
                rows = session.exec(select(Provider).where(Provider.provider == entry["provider"])).all()
                assert [row.display_name for row in rows] == [entry["display_name"]]
                raise _Rollback

    def test_leaves_an_existing_provider_as_it_is(self):
        changed = dict(next(entry for entry in ENTRIES if entry["provider"] == "github"), name="Renamed by the seed")

        with pytest.raises(_Rollback):
            with transaction() as session:
                assert bootstrap.seed_catalog(session, [changed]) == 0
                github = session.exec(select(Provider).where(Provider.provider == "github")).one()
                assert github.name == "GitHub"
                raise _Rollback


@pytest.mark.usefixtures("app")
class TestEnsureSuperAdmin:
    def test_is_a_no_op_when_one_exists(self):
        email = f"{factories.unique('second-root')}@hub.test"
        with transaction() as session:
            before = session.exec(select(User.id).where(User.role == "super_admin")).all()

        with pytest.raises(_Rollback):
            with transaction() as session:
                assert bootstrap.ensure_super_admin(session, email=email, password="another-long-password") is False
                session.flush()
                assert session.exec(select(User).where(User.email == email)).first() is None
                assert session.exec(select(User.id).where(User.role == "super_admin")).all() == before
                raise _Rollback

    def test_existing_super_admin_keeps_its_password(self, client):
        with transaction() as session:
            assert bootstrap.ensure_super_admin(session, email=conftest.ADMIN_EMAIL, password="a-different-password") is False

        factories.login(client, conftest.ADMIN_EMAIL, conftest.ADMIN_PASSWORD)


# The sandbox under every auth type (issue 11 item 12): each shipped entry really connects to the
# bundled sandbox with the credentials the README gives.
# What the README's "Connect the sandbox CRM" section sends (connectors/sandbox/config.py defaults).
README_CREDENTIALS = {
    "api_key": ("connect/api-key", {"apiKey": "sandbox-api-key"}),
    "basic": ("connect/basic", {"username": "sandbox-user", "password": "sandbox-password"}),
    "custom": ("connect/custom", {"credentials": {"X-API-Key": "sandbox-api-key"}}),
}
SHIPPED = {"sandbox_crm": "oauth2", "sandbox_crm_api_key": "api_key", "sandbox_crm_basic": "basic",
           "sandbox_crm_custom": "custom"}


def test_the_bootstrapped_catalog_offers_the_sandbox_under_every_auth_type(client, tenant_admin):
    # Every page: other tests add many providers named "Sandbox CRM" to the same catalog.
    found, offset = {}, 0
    while offset is not None:
        response = client.get("/api/v1/integrations", params={"search": "sandbox", "limit": 100, "offset": offset},
                              headers=tenant_admin.headers)
        assert response.status_code == 200
        found |= {item["provider"]: item["authType"] for item in response.json()["providers"]
                  if item["provider"] in SHIPPED}
        offset = response.json()["nextOffset"]
    assert found == SHIPPED


@pytest.mark.parametrize("auth_type", sorted(README_CREDENTIALS))
def test_each_static_sandbox_entry_connects_with_the_readme_credentials(client, super_admin, tenant_admin, sandbox, auth_type):
    document = next(d for d in sandbox_documents(sandbox.base_url, client_id="hub-sandbox-client",
                                                 client_secret="hub-sandbox-secret") if d["authType"] == auth_type)
    # The shipped entry, served by this test's sandbox under a key of its own.
    provider = factories.create_provider(client, super_admin, **{**document, "provider": factories.unique("sandbox_")})
    integration = factories.enable_integration(client, tenant_admin, provider["id"])
    path, body = README_CREDENTIALS[auth_type]

    response = client.post(f"/api/v1/tenant/integrations/{integration['id']}/{path}", json=body, headers=tenant_admin.headers)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    tested = client.post(f"/api/v1/tenant/integrations/{integration['id']}/connection/test", headers=tenant_admin.headers)
    assert tested.status_code == 200, tested.text
    assert tested.json()["success"] is True
