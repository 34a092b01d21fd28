"""Operations of tag `search`: POST /integrations/search and GET /integrations/{id}/search.

Records are the sandbox CRM's accounts and contacts (its deterministic data), stored with
`persistence.records.upsert` as a sync page stores them.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from connectors.sandbox.records import build_accounts, build_contacts
from persistence.bootstrap import sandbox_documents
from tests import factories
from tests.assertions import assert_error
from tests.handlers.test_tenant_integrations import assert_integration_not_found
from tests.persistence.test_search_index import put, search_provider, searchable_integration
from tests.records_support import own_sandbox  # noqa: F401 - fixture

SEARCH = "/api/v1/integrations/search"
RESULT_KEYS = {"id", "integrationId", "integrationName", "provider", "entity", "externalId", "title", "snippet",
               "score", "data", "lastModifiedAt"}


def one_url(integration_id: str) -> str:
    return f"/api/v1/integrations/{integration_id}/search"


@pytest.fixture
def crm_provider(client, super_admin, sandbox) -> dict:
    """The sandbox CRM's catalog document (Account: title name; Contact: title email)."""
    document = sandbox_documents(sandbox.base_url, client_id="c", client_secret="s")[1]
    return factories.create_provider(client, super_admin, **{**document, "provider": factories.unique("crm_")})


def sync_sandbox(integration: dict, accounts: int = 24, **owner) -> None:
    """Store the sandbox's first `accounts` accounts and their contacts, as a full sync would."""
    rows = build_accounts(accounts)
    put(integration, "Account", *((row["id"], row, _when(row)) for row in rows), **owner)
    put(integration, "Contact", *((row["id"], row, _when(row)) for row in build_contacts(rows)), **owner)


def _when(row: dict) -> datetime:
    return datetime.fromisoformat(row["updatedAt"].replace("Z", "+00:00"))


@pytest.fixture
def crm(client, tenant_admin, crm_provider) -> dict:
    integration = factories.enable_integration(client, tenant_admin, crm_provider["id"], searchEnabled=True,
                                               searchableEntities=["Account", "Contact"])
    sync_sandbox(integration)
    return integration


class TestSearchIntegrations:
    def test_finds_the_matching_accounts_and_contacts_grouped_with_marked_snippets(self, client, tenant_admin,
                                                                                   crm_provider, crm):
        response = client.post(SEARCH, json={"query": "acme"}, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"results", "total", "took", "hasMore", "limit", "offset", "byIntegration", "byEntity",
                             "totals", "notIndexed"}
        assert (body["total"], body["hasMore"], body["limit"], body["offset"], body["notIndexed"]) == (6, False, 10, 0, [])
        assert isinstance(body["took"], int) and body["took"] >= 0
        assert body["totals"] == {"byIntegration": {crm["id"]: 6}, "byEntity": {"Account": 2, "Contact": 4}}
        assert sorted(item["externalId"] for item in body["results"]) == [
            "acc_0001", "acc_0013", "con_0001", "con_0002", "con_0025", "con_0026"]
        assert [item["score"] for item in body["results"]] == sorted((item["score"] for item in body["results"]),
                                                                       reverse=True)
        assert body["byIntegration"] == {crm["id"]: body["results"]}
        assert body["byEntity"] == {
            "Account": [item for item in body["results"] if item["entity"] == "Account"],
            "Contact": [item for item in body["results"] if item["entity"] == "Contact"]}
        account = next(item for item in body["results"] if item["externalId"] == "acc_0001")
        assert account == {
            "id": account["id"], "integrationId": crm["id"], "integrationName": crm["name"],
            "provider": crm_provider["provider"], "entity": "Account", "externalId": "acc_0001",
            "title": "Acme Labs", "snippet": "<mark>Acme</mark> Labs", "score": account["score"],
            "data": {"name": "Acme Labs"}, "lastModifiedAt": "2024-12-26T12:01:00.000000Z"}
        contact = next(item for item in body["results"] if item["externalId"] == "con_0001")
        assert contact["title"] == "ada.lovelace.0001@acme-labs.example.com"
        assert contact["snippet"] == "ada.lovelace.0001@<mark>acme</mark>-labs.example.com"

    def test_filters_by_entity_and_field_value(self, client, tenant_admin, crm):
        body = {"query": "acme", "entities": ["Account", "Contact"],
                "filters": {"entityTypes": ["Account"], "customFilters": {"industry": "software"}}}

        response = client.post(SEARCH, json=body, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert [item["externalId"] for item in response.json()["results"]] == ["acc_0001"]

    def test_limit_is_per_integration_and_has_more_tells_a_next_page(self, client, tenant_admin, crm):
        first = client.post(SEARCH, json={"query": "acme", "limit": 4}, headers=tenant_admin.headers).json()
        second = client.post(SEARCH, json={"query": "acme", "limit": 4, "offset": 4}, headers=tenant_admin.headers).json()

        assert (len(first["results"]), first["hasMore"], first["total"]) == (4, True, 6)
        assert (len(second["results"]), second["hasMore"], second["total"]) == (2, False, 6)
        assert {item["id"] for item in first["results"]}.isdisjoint({item["id"] for item in second["results"]})

    def test_requested_integrations_that_are_not_searched_are_named(self, client, tenant_admin, other_tenant_admin,
                                                                     crm_provider, crm):
        off = factories.enable_integration(client, tenant_admin, crm_provider["id"])
        foreign = factories.enable_integration(client, other_tenant_admin, crm_provider["id"], searchEnabled=True,
                                               searchableEntities=["Account"])
        sync_sandbox(foreign, accounts=2)
        unknown = str(uuid.uuid4())

        response = client.post(SEARCH, json={"query": "acme", "integrations": [crm["id"], off["id"], foreign["id"],
                                                                                 unknown]},
                               headers=tenant_admin.headers)

        body = response.json()
        assert response.status_code == 200 and body["total"] == 6
        assert body["notIndexed"] == [{"integrationId": off["id"], "reason": "search_disabled"},
                                      {"integrationId": foreign["id"], "reason": "not_found"},
                                      {"integrationId": unknown, "reason": "not_found"}]
        assert set(body["totals"]["byIntegration"]) == {crm["id"]}

    def test_another_tenant_finds_nothing_of_this_one(self, client, other_tenant_admin, crm):
        response = client.post(SEARCH, json={"query": "acme"}, headers=other_tenant_admin.headers)

        assert response.status_code == 200
        assert (response.json()["results"], response.json()["total"], response.json()["totals"]) == (
            [], 0, {"byIntegration": {}, "byEntity": {}})

    @pytest.mark.parametrize("query,message", [
        ('"acme', 'query: a quoted phrase is not closed (unbalanced ")'),
        ("-acme", "query: enter at least one word to search for (exclusions alone find nothing)"),
        ("acme or", "query: `or` needs a term on each side"),
        ("...", "query: enter at least one word to search for (exclusions alone find nothing)"),
    ])
    def test_bad_syntax_is_a_400_in_the_envelope(self, client, tenant_admin, query, message):
        response = client.post(SEARCH, json={"query": query}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message=message, details={"field": "query"})

    def test_an_empty_or_too_long_query_is_refused_by_the_contract(self, client, tenant_admin):
        for query in ("", "x" * 257):
            response = client.post(SEARCH, json={"query": query}, headers=tenant_admin.headers)
            assert_error(response, 400, "VALIDATION_ERROR")

    def test_a_custom_filter_key_must_be_a_field_path(self, client, tenant_admin):
        response = client.post(SEARCH, json={"query": "acme", "filters": {"customFilters": {"a..b": 1}}},
                               headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR",
                     message="filters.customFilters: a key is a dotted field path (letters, digits, _; at most 5 "
                             "levels of 64 characters)", details={"field": "filters.customFilters"})

    def test_a_date_range_must_not_end_before_it_starts(self, client, tenant_admin):
        body = {"query": "acme", "filters": {"dateRange": {"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}}}

        response = client.post(SEARCH, json=body, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="filters.dateRange: start is after end",
                     details={"field": "filters.dateRange"})

    def test_a_date_range_keeps_the_records_modified_within_it(self, client, tenant_admin, crm):
        window = {"start": "2024-12-26T00:00:00Z", "end": "2024-12-27T00:00:00Z"}

        response = client.post(SEARCH, json={"query": "acme", "filters": {"dateRange": window}},
                               headers=tenant_admin.headers)

        assert response.status_code == 200
        assert all(window["start"] <= item["lastModifiedAt"] <= window["end"] for item in response.json()["results"])
        assert "acc_0001" in {item["externalId"] for item in response.json()["results"]}


class TestWhoSeesWhat:
    @pytest.fixture
    def scoped(self, client, tenant_admin, member, crm_provider) -> dict:
        """A user-scoped CRM: `member` and another user each synced their own copy."""
        integration = factories.enable_integration(client, tenant_admin, crm_provider["id"], userScoped=True,
                                                   searchEnabled=True, searchableEntities=["Account"])
        put(integration, "Account", ("mine", {"name": "Acme of mine"}), owner_key=member.user_id,
            user_id=member.user_id)
        other = str(uuid.uuid4())
        put(integration, "Account", ("theirs", {"name": "Acme of theirs"}), owner_key=other, user_id=other)
        return integration

    def test_a_user_finds_only_their_own_records_of_user_scoped_integrations(self, client, member, crm, scoped):
        response = client.post(SEARCH, json={"query": "acme"}, headers=member.headers)

        body = response.json()
        assert response.status_code == 200, response.text
        assert [item["externalId"] for item in body["results"]] == ["mine"]
        assert body["totals"] == {"byIntegration": {scoped["id"]: 1}, "byEntity": {"Account": 1}}

    def test_a_tenant_level_integration_is_out_of_a_users_reach(self, client, member, crm, scoped):
        response = client.post(SEARCH, json={"query": "acme", "integrations": [crm["id"]]}, headers=member.headers)

        assert response.json()["notIndexed"] == [{"integrationId": crm["id"], "reason": "not_found"}]
        assert_integration_not_found(client.get(one_url(crm["id"]), params={"query": "acme"}, headers=member.headers),
                                     crm["id"])

    def test_a_user_may_name_only_themself(self, client, member, scoped):
        mine = client.post(SEARCH, json={"query": "acme", "userId": member.user_id}, headers=member.headers)
        other = client.post(SEARCH, json={"query": "acme", "userId": str(uuid.uuid4())}, headers=member.headers)

        assert [item["externalId"] for item in mine.json()["results"]] == ["mine"]
        assert_error(other, 403, "PERMISSION_DENIED", message="Only a tenant admin searches another user's records",
                     details={"field": "userId"})

    def test_a_tenant_admin_sees_every_user_or_the_one_named(self, client, tenant_admin, member, scoped):
        every = client.post(SEARCH, json={"query": "acme", "integrations": [scoped["id"]]}, headers=tenant_admin.headers)
        named = client.post(SEARCH, json={"query": "acme", "integrations": [scoped["id"]], "userId": member.user_id},
                            headers=tenant_admin.headers)

        assert sorted(item["externalId"] for item in every.json()["results"]) == ["mine", "theirs"]
        assert [item["externalId"] for item in named.json()["results"]] == ["mine"]


class TestSearchIntegration:
    def test_searches_one_integration(self, client, tenant_admin, crm):
        response = client.get(one_url(crm["id"]), params={"query": '"acme labs"', "entities": "Contact", "limit": 1},
                              headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"results", "total", "took", "hasMore", "limit", "offset"}
        assert (body["total"], body["hasMore"], body["limit"], body["offset"]) == (2, True, 1, 0)
        assert set(body["results"][0]) == RESULT_KEYS
        assert body["results"][0]["externalId"] in ("con_0001", "con_0002")
        assert "@<mark>acme-labs</mark>.example.com" in body["results"][0]["snippet"]

    def test_the_index_follows_a_deletion(self, client, tenant_admin, crm):
        put(crm, "Account", ("acc_0001", {}), deleted=True)

        response = client.get(one_url(crm["id"]), params={"query": "acme", "entities": "Account"},
                              headers=tenant_admin.headers)

        assert [item["externalId"] for item in response.json()["results"]] == ["acc_0013"]

    def test_another_tenants_or_an_unknown_integration_is_not_found(self, client, other_tenant_admin, crm):
        for integration_id in (crm["id"], str(uuid.uuid4())):
            response = client.get(one_url(integration_id), params={"query": "acme"}, headers=other_tenant_admin.headers)
            assert_integration_not_found(response, integration_id)

    def test_an_integration_with_search_off_is_a_conflict(self, client, tenant_admin, crm_provider):
        off = factories.enable_integration(client, tenant_admin, crm_provider["id"])

        response = client.get(one_url(off["id"]), params={"query": "acme"}, headers=tenant_admin.headers)

        assert_error(response, 409, "CONFLICT",
                     message=f"Search is not enabled for integration {off['id']} (searchEnabled is false)",
                     details={"reason": "search_disabled"})

    def test_bad_syntax_is_a_400(self, client, tenant_admin, crm):
        response = client.get(one_url(crm["id"]), params={"query": "a*"}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="query: a prefix needs at least 2 characters before *",
                     details={"field": "query"})

    def test_the_seed_providers_title_and_body_weights_hold_over_http(self, client, tenant_admin, super_admin):
        provider = search_provider(client, super_admin)
        integration = searchable_integration(client, tenant_admin, provider)
        put(integration, "Note", ("body", {"title": "Minutes", "body": "the roadmap"}),
            ("title", {"title": "Roadmap", "body": "plans"}))

        response = client.get(one_url(integration["id"]), params={"query": "roadmap"}, headers=tenant_admin.headers)

        assert [item["externalId"] for item in response.json()["results"]] == ["title", "body"]
        assert [item["snippet"] for item in response.json()["results"]] == ["<mark>Roadmap</mark>",
                                                                            "the <mark>roadmap</mark>"]


class TestTheIndexFollowsTheDataPaths:
    """The index is written by the records store itself: a real sync run (full and incremental), a
    write-through and a full refresh's tombstones each leave it in step (the incoming webhook path
    goes through the same `records.upsert`, tested in tests/handlers/test_incoming_webhooks.py)."""

    def test_sync_runs_write_through_and_tombstones(self, client, super_admin, tenant_admin, own_sandbox):
        from tests.records_support import connected_integration, data_provider
        from tests.sync_support import drain

        def hits(query: str) -> list[str]:
            response = client.post(SEARCH, json={"query": query, "integrations": [integration["id"]]},
                                   headers=tenant_admin.headers)
            assert response.status_code == 200, response.text
            return sorted(result["externalId"] for result in response.json()["results"])

        def sync(**body) -> None:
            queued = client.post(f"/api/v1/tenant/integrations/{integration['id']}/sync",
                                 json={"entities": ["Account"], **body}, headers=tenant_admin.headers)
            assert queued.status_code == 202, queued.text
            assert drain(integration["id"]) == ["succeeded"]

        integration = connected_integration(client, tenant_admin, data_provider(client, super_admin, own_sandbox),
                                            searchEnabled=True, searchableEntities=["Account"])
        renamed = own_sandbox.state.update_record("accounts", "acc_0003", {"name": "Quokka Holdings"})
        assert hits("quokka") == []
        sync()  # the first run is full
        assert hits("quokka") == [renamed["id"]]

        own_sandbox.state.update_record("accounts", "acc_0003", {"name": "Wombat Holdings"})
        sync()  # incremental: the changed account only
        assert (hits("quokka"), hits("wombat")) == ([], ["acc_0003"])

        created = client.post(f"/api/v1/tenant/integrations/{integration['id']}/records",
                              json={"entity": "Account", "data": {"name": "Zephyrine Widgets"}},
                              headers=tenant_admin.headers)
        assert created.status_code == 201, created.text
        assert hits("zephyrine") == [created.json()["externalId"]]

        own_sandbox.state.delete_record("accounts", "acc_0003")  # gone from the full list
        sync(fullRefresh=True)
        assert hits("wombat") == []
