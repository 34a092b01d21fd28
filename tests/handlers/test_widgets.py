"""Operations of tag `widgets`: status, activity and data preview of one integration (seed: "Widget Data Endpoints")."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from persistence import records
from persistence.db import transaction
from persistence.models import Event, utcnow
from persistence.records import Item
from tests import factories
from tests.assertions import assert_error

BASE = "/api/v1/tenant/integrations"
ENTITIES = [{"name": "Account", "displayName": "Accounts", "fields": [{"name": "name", "type": "string"}]},
            {"name": "Contact", "displayName": "Contacts", "fields": [{"name": "email", "type": "string"}]}]


def url(integration_id: str, widget: str) -> str:
    return f"{BASE}/{integration_id}/widgets/{widget}"


def api_key_provider(client, super_admin, sandbox, **overrides) -> dict:
    fields = factories.sandbox_provider_fields(sandbox.base_url, authType="api_key", oauthConfig=None,
                                               availableEntities=ENTITIES, **overrides)
    return factories.create_provider(client, super_admin, **fields)


@pytest.fixture
def crm(client, super_admin, tenant_admin, sandbox) -> dict:
    """A tenant-level integration of the sandbox, connected with an API key over real HTTP."""
    provider = api_key_provider(client, super_admin, sandbox)
    integration = factories.enable_integration(client, tenant_admin, provider["id"])
    response = client.post(f"{BASE}/{integration['id']}/connect/api-key", json={"apiKey": "sandbox-api-key"},
                           headers=tenant_admin.headers)
    assert response.status_code == 200, response.text
    return integration


def seed(integration: dict, tenant_id: str, entity: str, *items: Item, owner_key: str = "tenant",
         user_id: uuid.UUID | None = None) -> None:
    with transaction() as session:
        records.upsert(session, tenant_id=uuid.UUID(tenant_id), integration_id=uuid.UUID(integration["id"]),
                       owner_key=owner_key, user_id=user_id, entity=entity, items=items, now=utcnow())


def contact(external_id: str, email: str, **extra) -> Item:
    return Item(external_id, {"id": external_id, "email": email, **extra},
                datetime(2026, 11, 1, tzinfo=timezone.utc))


class TestStatus:
    def test_a_connected_integration(self, client, tenant_admin, crm):
        response = client.get(url(crm["id"], "status"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body == {"integrationId": crm["id"], "name": crm["name"], "status": "connected",
                        "connectionStatus": "active", "lastConnectedAt": body["lastConnectedAt"], "lastSyncAt": None,
                        "error": None}
        assert body["lastConnectedAt"].endswith("Z")

    def test_a_pending_integration_has_no_connection(self, client, tenant_admin, sandbox_integration):
        response = client.get(url(sandbox_integration["id"], "status"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        assert response.json() == {"integrationId": sandbox_integration["id"], "name": sandbox_integration["name"],
                                   "status": "pending", "connectionStatus": None, "lastConnectedAt": None,
                                   "lastSyncAt": None, "error": None}

    def test_another_tenants_integration_is_not_found(self, client, other_tenant_admin, crm):
        for widget in ("status", "activity", "data?entity=Contact"):
            assert_error(client.get(url(crm["id"], widget), headers=other_tenant_admin.headers), 404,
                         "INTEGRATION_NOT_FOUND")

    def test_a_user_does_not_see_a_tenant_level_integration(self, client, member, crm):
        for widget in ("status", "activity", "data?entity=Contact"):
            assert_error(client.get(url(crm["id"], widget), headers=member.headers), 404, "INTEGRATION_NOT_FOUND")


class TestActivity:
    def test_connect_test_and_disconnect_newest_first(self, client, tenant_admin, crm):
        tested = client.post(f"{BASE}/{crm['id']}/connection/test", headers=tenant_admin.headers)
        assert tested.status_code == 200, tested.text
        gone = client.post(f"{BASE}/{crm['id']}/disconnect", headers=tenant_admin.headers)
        assert gone.status_code == 200, gone.text

        response = client.get(url(crm["id"], "activity"), headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert [(item["type"], item["status"]) for item in body["activities"]] == [
            ("disconnect", "success"), ("test", "success"), ("connect", "success")]
        assert body["total"] == 3
        assert body["activities"][1]["details"] == {"error": None}
        ids = [item["id"] for item in body["activities"]]
        with transaction() as session:
            stored = session.exec(select(Event.id).where(Event.id.in_(ids)).order_by(Event.seq.desc())).all()
        assert list(stored) == ids  # each item is an event of the log
        limited = client.get(url(crm["id"], "activity"), params={"limit": 1}, headers=tenant_admin.headers).json()
        assert [item["type"] for item in limited["activities"]] == ["disconnect"] and limited["total"] == 3

    def test_the_time_range_leaves_older_activity_out(self, client, tenant_admin, crm):
        with transaction() as session:
            for row in session.exec(select(Event).where(Event.tenant_id == uuid.UUID(tenant_admin.tenant_id))).all():
                row.occurred_at = utcnow() - timedelta(hours=2)
                session.add(row)

        assert client.get(url(crm["id"], "activity"), params={"timeRange": "1h"},
                          headers=tenant_admin.headers).json() == {"activities": [], "total": 0}
        day = client.get(url(crm["id"], "activity"), params={"timeRange": "24h"}, headers=tenant_admin.headers)
        assert [item["type"] for item in day.json()["activities"]] == ["connect"]

    def test_a_bad_time_range_is_refused(self, client, tenant_admin, crm):
        assert_error(client.get(url(crm["id"], "activity"), params={"timeRange": "2y"}, headers=tenant_admin.headers),
                     400, "VALIDATION_ERROR")


class TestData:
    def test_preview_with_fields_filters_and_total(self, client, tenant_admin, crm):
        seed(crm, tenant_admin.tenant_id, "Contact", contact("c1", "ada@x.io", city="London"),
             contact("c2", "grace@x.io", city="New York"), contact("c3", "alan@x.io", city="London"))
        seed(crm, tenant_admin.tenant_id, "Account", Item("a1", {"id": "a1", "name": "Acme"}))
        gone = Item("c2", {"id": "c2", "deleted": True}, datetime(2026, 11, 2, tzinfo=timezone.utc), deleted=True)
        seed(crm, tenant_admin.tenant_id, "Contact", gone)

        response = client.get(url(crm["id"], "data"), params={"entity": "Contact"}, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["data"] == [{"id": "c3", "email": "alan@x.io", "city": "London"},
                                {"id": "c1", "email": "ada@x.io", "city": "London"}]  # newest change first
        assert (body["total"], body["entity"]) == (2, "Contact") and body["fetchedAt"].endswith("Z")
        narrowed = client.get(url(crm["id"], "data"), headers=tenant_admin.headers,
                              params={"entity": "Contact", "fields": "email,nope", "limit": 1,
                                      "filters": '{"city": "London"}'}).json()
        assert (narrowed["data"], narrowed["total"]) == ([{"email": "alan@x.io"}], 2)
        none = client.get(url(crm["id"], "data"), headers=tenant_admin.headers,
                          params={"entity": "Contact", "filters": '{"email": "ada@x.io", "city": "Paris"}'}).json()
        assert (none["data"], none["total"]) == ([], 0)

    @pytest.mark.parametrize("filters", ["not json", "[1, 2]", '{"a": {"b": 1}}', '{"bad key": 1}', '"text"',
                                         '{"a": [1]}'])
    def test_malformed_filters_are_a_400(self, client, tenant_admin, crm, filters):
        response = client.get(url(crm["id"], "data"), params={"entity": "Contact", "filters": filters},
                              headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR", details={"field": "filters"})

    def test_an_entity_the_provider_does_not_declare_is_a_400(self, client, tenant_admin, crm):
        response = client.get(url(crm["id"], "data"), params={"entity": "Invoice"}, headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR",
                     details={"field": "entity", "entities": ["Account", "Contact"]})


class TestUserScoped:
    @pytest.fixture
    def personal(self, client, super_admin, tenant_admin, sandbox) -> dict:
        provider = api_key_provider(client, super_admin, sandbox, requiresUserScoping=True)
        return factories.enable_integration(client, tenant_admin, provider["id"], userScoped=True)

    def test_a_user_sees_only_their_own_records_and_connection(self, client, tenant_admin, member, personal):
        other = factories.add_user(client, tenant_admin, role="user")
        seed(personal, tenant_admin.tenant_id, "Contact", contact("m1", "mine@x.io"), owner_key=member.user_id,
             user_id=uuid.UUID(member.user_id))
        seed(personal, tenant_admin.tenant_id, "Contact", contact("o1", "theirs@x.io"), owner_key=other.user_id,
             user_id=uuid.UUID(other.user_id))

        mine = client.get(url(personal["id"], "data"), params={"entity": "Contact"}, headers=member.headers)
        assert mine.status_code == 200, mine.text
        assert ([item["id"] for item in mine.json()["data"]], mine.json()["total"]) == (["m1"], 1)
        assert_error(client.get(url(personal["id"], "data"), params={"entity": "Contact", "userId": other.user_id},
                                headers=member.headers), 403, "PERMISSION_DENIED")
        admin_all = client.get(url(personal["id"], "data"), params={"entity": "Contact"},
                               headers=tenant_admin.headers).json()
        assert sorted(item["id"] for item in admin_all["data"]) == ["m1", "o1"]
        admin_one = client.get(url(personal["id"], "data"), params={"entity": "Contact", "userId": other.user_id},
                               headers=tenant_admin.headers).json()
        assert [item["id"] for item in admin_one["data"]] == ["o1"]

        status = client.get(url(personal["id"], "status"), headers=member.headers)
        assert status.status_code == 200, status.text
        assert (status.json()["connectionStatus"], status.json()["lastConnectedAt"]) == (None, None)
        activity = client.get(url(personal["id"], "activity"), headers=member.headers)
        assert activity.json() == {"activities": [], "total": 0}
