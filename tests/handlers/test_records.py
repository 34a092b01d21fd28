"""GET/POST /tenant/integrations/{id}/records, GET/PATCH/DELETE .../records/{recordId} (tag `records`),
over real HTTP against a sandbox provider of this module's own.

Reads: the seq cursor (also while a writer commits), filters, tenant and user isolation.
Write-through: the provider is called first, then its answer stored with `records.changed`;
last-write-wins made explicit (409 with both versions, nothing written); 400 without `write`.
Records are seeded with `persistence.records.upsert`, as a sync run or a webhook would store them.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from persistence import records
from persistence.db import transaction
from persistence.models import AuditEntry, Event, Record
from tests import factories
from tests.handlers.test_providers import assert_error
from tests.records_support import (  # noqa: F401
    BASE,
    connect_user,
    connected_integration,
    data_provider,
    integration,
    own_sandbox,
    provider,
    sandbox_entities,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


# -- helpers ----------------------------------------------------------------------------------


def seed(integration: dict, admin, entity: str, items: list[records.Item], *, owner: str = "tenant",
         user_id: str | None = None) -> records.Changes:
    """Store `items` as a sync page would (one transaction)."""
    with transaction() as session:
        return records.upsert(session, tenant_id=uuid.UUID(admin.tenant_id), integration_id=uuid.UUID(integration["id"]),
                              owner_key=owner, user_id=uuid.UUID(user_id) if user_id else None, entity=entity,
                              items=items, now=datetime.now(timezone.utc))


def item(external_id: str, *, minutes: int = 0, deleted: bool = False, **data) -> records.Item:
    updated = NOW + timedelta(minutes=minutes)
    body = {"id": external_id, "updatedAt": updated.strftime("%Y-%m-%dT%H:%M:%SZ"), **data}
    return records.Item(external_id=external_id, data=body, provider_updated_at=updated, deleted=deleted)


def sandbox_item(sandbox, kind: str, external_id: str) -> records.Item:
    """The sandbox's live copy of one record, as a sync would store it."""
    copy = sandbox.state.get_record(kind, external_id)
    updated = datetime.fromisoformat(copy["updatedAt"].replace("Z", "+00:00"))
    return records.Item(external_id=external_id, data=copy, provider_updated_at=updated)


def list_records(client, account, integration: dict, **params):
    return client.get(f"{BASE}/{integration['id']}/records", params=params, headers=account.headers)


def walk(client, account, integration: dict, **params) -> tuple[list[dict], str]:
    """Every page from the start; return (records, the last nextCursor)."""
    seen, cursor = [], None
    while True:
        response = list_records(client, account, integration, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["records"]
        cursor = body["nextCursor"]
        if not body["hasMore"]:
            return seen, cursor


def stored(integration: dict) -> list[Record]:
    with transaction() as session:
        return list(session.exec(select(Record).where(Record.integration_id == uuid.UUID(integration["id"]))
                                 .order_by(Record.seq)).all())


def changed_events(admin) -> list[Event]:
    with transaction() as session:
        return list(session.exec(select(Event).where(Event.tenant_id == uuid.UUID(admin.tenant_id),
                                                     Event.type == "records.changed").order_by(Event.seq)).all())


def audit_actions(admin, action: str) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.tenant_id == uuid.UUID(admin.tenant_id),
                                                          AuditEntry.action == action)).all())


# -- reads ------------------------------------------------------------------------------------


class TestListRecords:
    def test_pages_in_modification_order_and_polls_with_the_last_cursor(self, client, tenant_admin, integration):
        seed(integration, tenant_admin, "Contact", [item(f"c{i}", email=f"c{i}@x.example") for i in range(5)])
        first = list_records(client, tenant_admin, integration, limit=2)
        assert first.status_code == 200, first.text
        body = first.json()
        assert [r["externalId"] for r in body["records"]] == ["c0", "c1"] and body["hasMore"] is True
        record = body["records"][0]
        row = stored(integration)[0]
        assert record == {
            "id": str(row.id), "externalId": "c0", "entity": "Contact",
            "data": {"id": "c0", "updatedAt": "2026-12-01T12:00:00Z", "email": "c0@x.example"},
            "metadata": {"firstSeenAt": record["metadata"]["lastModifiedAt"],
                         "lastModifiedAt": record["metadata"]["lastModifiedAt"], "lastAction": "added",
                         "deletedAt": None, "providerUpdatedAt": "2026-12-01T12:00:00.000000Z"}}
        seen, cursor = walk(client, tenant_admin, integration, limit=2)
        assert [r["externalId"] for r in seen] == ["c0", "c1", "c2", "c3", "c4"]
        empty = list_records(client, tenant_admin, integration, cursor=cursor).json()
        assert empty == {"records": [], "nextCursor": cursor, "hasMore": False}
        seed(integration, tenant_admin, "Contact", [item("c1", minutes=1, email="new@x.example")])
        after = list_records(client, tenant_admin, integration, cursor=cursor).json()
        assert [(r["externalId"], r["metadata"]["lastAction"], r["data"]["email"]) for r in after["records"]] == \
            [("c1", "updated", "new@x.example")]

    def test_an_empty_integration_answers_an_empty_page_with_a_cursor(self, client, tenant_admin, integration):
        body = list_records(client, tenant_admin, integration).json()
        assert body["records"] == [] and body["hasMore"] is False and body["nextCursor"]

    def test_filters(self, client, tenant_admin, integration):
        seed(integration, tenant_admin, "Contact", [item("c1"), item("c2"), item("c3")])
        seed(integration, tenant_admin, "Account", [item("a1")])
        seed(integration, tenant_admin, "Contact", [item("c2", minutes=1, deleted=True),
                                                     item("c3", minutes=1, email="changed@x.example")])
        ids = lambda **params: [r["externalId"] for r in walk(client, tenant_admin, integration, **params)[0]]  # noqa: E731
        assert ids(entity="Contact") == ["c1", "c2", "c3"]
        assert ids(entity="Account") == ["a1"]
        assert ids(filter="deleted") == ["c2"]
        assert ids(filter="added,updated") == ["c1", "a1", "c3"]  # seq order
        assert ids(ids="c1,a1") == ["c1", "a1"]
        assert ids(modifiedAfter="2999-01-01T00:00:00Z") == []
        assert sorted(ids(modifiedAfter="2000-01-01T00:00:00Z")) == ["a1", "c1", "c2", "c3"]
        deleted = walk(client, tenant_admin, integration, filter="deleted")[0][0]
        assert deleted["metadata"]["lastAction"] == "deleted" and deleted["metadata"]["deletedAt"]

    @pytest.mark.parametrize("params,field", [({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"), ({"limit": 1001}, "limit"),
                                              ({"modifiedAfter": "yesterday"}, "modifiedAfter"),
                                              ({"filter": "created"}, "filter")])
    def test_bad_parameters_answer_400(self, client, tenant_admin, integration, params, field):
        response = list_records(client, tenant_admin, integration, **params)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert response.json()["error"]["details"]["field"].startswith(field)

    def test_a_reader_walking_while_a_writer_commits_misses_no_change(self, client, tenant_admin, integration):
        seed(integration, tenant_admin, "Contact", [item(f"c{i:03d}", version=0) for i in range(60)])
        rounds, done = 8, threading.Event()

        def writer():
            try:
                for version in range(1, rounds + 1):
                    # each round changes a third of the records (a page of a sync, committed as one)
                    seed(integration, tenant_admin, "Contact",
                         [item(f"c{i:03d}", minutes=version, version=version) for i in range(version % 3, 60, 3)])
            finally:
                done.set()

        thread = threading.Thread(target=writer)
        latest: dict[str, int] = {}
        cursor = None
        thread.start()
        while True:
            finished = done.is_set()
            response = list_records(client, tenant_admin, integration, limit=7, **({"cursor": cursor} if cursor else {}))
            assert response.status_code == 200, response.text
            body = response.json()
            for record in body["records"]:
                latest[record["externalId"]] = record["data"]["version"]
            cursor = body["nextCursor"]
            if finished and not body["hasMore"]:
                break
        thread.join()
        final = {row.external_id: row.data["version"] for row in stored(integration)}
        assert len(final) == 60
        assert latest == final  # the last copy the reader saw of every record is the stored one

    def test_another_tenant_gets_404(self, client, tenant_admin, other_tenant_admin, integration):
        seed(integration, tenant_admin, "Contact", [item("c1")])
        record_id = str(stored(integration)[0].id)
        response = list_records(client, other_tenant_admin, integration)
        assert_error(response, 404, "INTEGRATION_NOT_FOUND", message=f"Integration {integration['id']} not found",
                     details=None)
        response = client.get(f"{BASE}/{integration['id']}/records/{record_id}", headers=other_tenant_admin.headers)
        assert response.status_code == 404 and response.json()["error"]["code"] == "INTEGRATION_NOT_FOUND"

    def test_another_tenants_record_under_an_own_integration_is_404(self, client, tenant_admin, other_tenant_admin,
                                                                     provider, integration):
        seed(integration, tenant_admin, "Contact", [item("c1")])
        foreign = str(stored(integration)[0].id)
        own = factories.enable_integration(client, other_tenant_admin, provider["id"])
        for method in ("GET", "PATCH", "DELETE"):
            body = {"data": {"name": "x"}, "lastModifiedAt": "2026-12-01T00:00:00Z"} if method == "PATCH" else None
            response = client.request(method, f"{BASE}/{own['id']}/records/{foreign}", json=body,
                                      headers=other_tenant_admin.headers)
            assert_error(response, 404, "NOT_FOUND", message=f"Record {foreign} not found", details=None)

    def test_get_record(self, client, tenant_admin, integration):
        seed(integration, tenant_admin, "Contact", [item("c1", email="c1@x.example")])
        row = stored(integration)[0]
        response = client.get(f"{BASE}/{integration['id']}/records/{row.id}", headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        assert response.json() == records.record_view(row)
        unknown = uuid.uuid4()
        response = client.get(f"{BASE}/{integration['id']}/records/{unknown}", headers=tenant_admin.headers)
        assert_error(response, 404, "NOT_FOUND", message=f"Record {unknown} not found", details=None)


class TestUserScopedRecords:
    @pytest.fixture
    def shared(self, client, tenant_admin, provider) -> dict:
        return factories.enable_integration(client, tenant_admin, provider["id"], userScoped=True)

    @pytest.fixture
    def colleague(self, client, tenant_admin):
        return factories.add_user(client, tenant_admin, role="user")

    @pytest.fixture
    def seeded(self, tenant_admin, member, colleague, shared) -> dict:
        seed(shared, tenant_admin, "Contact", [item("mine")], owner=member.user_id, user_id=member.user_id)
        seed(shared, tenant_admin, "Contact", [item("theirs")], owner=colleague.user_id, user_id=colleague.user_id)
        return {row.external_id: str(row.id) for row in stored(shared)}

    def test_a_user_reads_only_their_own(self, client, member, shared, seeded):
        seen, _ = walk(client, member, shared)
        assert [r["externalId"] for r in seen] == ["mine"]
        assert client.get(f"{BASE}/{shared['id']}/records/{seeded['mine']}", headers=member.headers).status_code == 200
        response = client.get(f"{BASE}/{shared['id']}/records/{seeded['theirs']}", headers=member.headers)
        assert_error(response, 404, "NOT_FOUND", message=f"Record {seeded['theirs']} not found", details=None)

    def test_a_user_cannot_change_anothers_record(self, client, member, shared, seeded):
        url = f"{BASE}/{shared['id']}/records/{seeded['theirs']}"
        patched = client.patch(url, json={"data": {"email": "x@y.example"}, "lastModifiedAt": "2026-12-01T00:00:00Z"},
                               headers=member.headers)
        assert_error(patched, 404, "NOT_FOUND", message=f"Record {seeded['theirs']} not found", details=None)
        deleted = client.delete(url, headers=member.headers)
        assert_error(deleted, 404, "NOT_FOUND", message=f"Record {seeded['theirs']} not found", details=None)
        assert all(row.deleted_at is None for row in stored(shared))

    def test_a_user_naming_another_user_is_refused(self, client, member, colleague, shared, seeded):
        response = list_records(client, member, shared, userId=colleague.user_id)
        assert_error(response, 403, "PERMISSION_DENIED", message="A user reads only the records of their own connection",
                     details={"field": "userId"})
        assert [r["externalId"] for r in walk(client, member, shared, userId=member.user_id)[0]] == ["mine"]

    def test_a_tenant_level_integration_is_404_to_a_user(self, client, tenant_admin, member, integration):
        seed(integration, tenant_admin, "Contact", [item("c1")])
        record_id = str(stored(integration)[0].id)
        message = f"Integration {integration['id']} not found"
        for method, path, body in (("GET", "/records", None), ("GET", f"/records/{record_id}", None),
                                   ("POST", "/records", {"entity": "Account", "data": {"name": "X"}}),
                                   ("DELETE", f"/records/{record_id}", None)):
            response = client.request(method, f"{BASE}/{integration['id']}{path}", json=body, headers=member.headers)
            assert_error(response, 404, "INTEGRATION_NOT_FOUND", message=message, details=None)
        assert stored(integration)[0].deleted_at is None

    def test_the_tenant_admin_reads_everyones_or_one_users(self, client, tenant_admin, member, shared, seeded):
        assert sorted(r["externalId"] for r in walk(client, tenant_admin, shared)[0]) == ["mine", "theirs"]
        assert [r["externalId"] for r in walk(client, tenant_admin, shared, userId=member.user_id)[0]] == ["mine"]

    def test_a_user_writes_through_their_own_connection(self, client, member, shared, own_sandbox):
        connect_user(client, member, shared)
        response = client.post(f"{BASE}/{shared['id']}/records", json={"entity": "Account", "data": {"name": "Mine Ltd"}},
                               headers=member.headers)
        assert response.status_code == 201, response.text
        [row] = [row for row in stored(shared) if row.external_id == response.json()["externalId"]]
        assert row.owner_key == member.user_id and str(row.user_id) == member.user_id
        assert own_sandbox.state.get_record("accounts", row.external_id)["name"] == "Mine Ltd"


# -- write-through ----------------------------------------------------------------------------


class TestCreateRecord:
    def test_creates_at_the_provider_then_stores_its_answer(self, client, tenant_admin, integration, own_sandbox):
        response = client.post(f"{BASE}/{integration['id']}/records",
                               json={"entity": "Account", "data": {"name": "Written Through", "industry": "retail"}},
                               headers=tenant_admin.headers)
        assert response.status_code == 201, response.text
        body = response.json()
        at_provider = own_sandbox.state.get_record("accounts", body["externalId"])
        assert at_provider["name"] == "Written Through" and at_provider["industry"] == "retail"
        assert body["data"] == at_provider and body["entity"] == "Account"
        assert body["metadata"]["lastAction"] == "added"
        assert response.headers["location"] == f"/api/v1/tenant/integrations/{integration['id']}/records/{body['id']}"
        [event] = changed_events(tenant_admin)
        assert event.data == {"integrationId": integration["id"], "entity": "Account", "trigger": "write",
                              "runId": None, "added": 1, "updated": 0, "deleted": 0, "recordIds": [body["id"]]}
        [entry] = audit_actions(tenant_admin, "record.create")
        assert entry.resource_id == body["id"] and entry.changes["entity"] == "Account"

    def test_a_provider_refusal_is_502_and_stores_nothing(self, client, tenant_admin, integration):
        response = client.post(f"{BASE}/{integration['id']}/records",
                               json={"entity": "Contact", "data": {"accountId": "acc_missing", "firstName": "X"}},
                               headers=tenant_admin.headers)
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "PROVIDER_ERROR" and error["details"]["providerStatus"] == 400
        assert "acc_missing" in error["details"]["providerError"]
        assert stored(integration) == [] and changed_events(tenant_admin) == []

    def test_an_entity_without_write_definitions_is_400(self, client, super_admin, tenant_admin, own_sandbox):
        entities = sandbox_entities(own_sandbox.base_url)
        for entity in entities:
            entity["sync"].pop("write")
        read_only = data_provider(client, super_admin, own_sandbox, availableEntities=entities)
        integration = connected_integration(client, tenant_admin, read_only)
        response = client.post(f"{BASE}/{integration['id']}/records", json={"entity": "Account", "data": {"name": "X"}},
                               headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR",
                     message="Sandbox CRM declares no write.create request for Account; its records are read-only",
                     details={"field": "entity", "entity": "Account"})
        seed(integration, tenant_admin, "Account", [sandbox_item(own_sandbox, "accounts", "acc_0001")])
        row = stored(integration)[0]
        for method, body in (("PATCH", {"data": {"name": "Y"}, "lastModifiedAt": "2026-12-01T00:00:00Z"}),
                             ("DELETE", None)):
            response = client.request(method, f"{BASE}/{integration['id']}/records/{row.id}", json=body,
                                      headers=tenant_admin.headers)
            assert response.status_code == 400, response.text
        assert own_sandbox.state.get_record("accounts", "acc_0001")["updatedAt"] == row.data["updatedAt"]

    def test_an_unknown_entity_is_400(self, client, tenant_admin, integration):
        response = client.post(f"{BASE}/{integration['id']}/records", json={"entity": "Invoice", "data": {}},
                               headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR", message="Sandbox CRM declares no synced entity 'Invoice'",
                     details={"field": "entity"})

    def test_not_connected_is_409(self, client, tenant_admin, provider):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        response = client.post(f"{BASE}/{integration['id']}/records", json={"entity": "Account", "data": {"name": "X"}},
                               headers=tenant_admin.headers)
        assert response.status_code == 409 and response.json()["error"]["code"] == "NOT_CONNECTED"


class TestUpdateRecord:
    @pytest.fixture
    def account(self, tenant_admin, integration, own_sandbox) -> dict:
        """A fresh sandbox account as the last sync stored it: its API view."""
        created = own_sandbox.state.create_record("accounts", {"name": factories.unique("Account ")})
        seed(integration, tenant_admin, "Account", [sandbox_item(own_sandbox, "accounts", created["id"])])
        return records.record_view(stored(integration)[0])

    def patch(self, client, admin, integration, account, data, base=None):
        return client.patch(f"{BASE}/{integration['id']}/records/{account['id']}",
                            json={"data": data, "lastModifiedAt": base or account["metadata"]["lastModifiedAt"]},
                            headers=admin.headers)

    def test_changes_the_provider_then_stores_its_answer(self, client, tenant_admin, integration, account, own_sandbox):
        response = self.patch(client, tenant_admin, integration, account, {"industry": "energy"})
        assert response.status_code == 200, response.text
        at_provider = own_sandbox.state.get_record("accounts", account["externalId"])
        assert at_provider["industry"] == "energy"
        body = response.json()
        assert body["data"] == at_provider and body["metadata"]["lastAction"] == "updated"
        assert body["metadata"]["providerUpdatedAt"] != account["metadata"]["providerUpdatedAt"]
        events = changed_events(tenant_admin)
        assert events[-1].data["updated"] == 1 and events[-1].data["trigger"] == "write"
        assert len(audit_actions(tenant_admin, "record.update")) == 1

    def test_a_change_at_the_provider_after_the_base_is_409_and_nothing_is_written(
            self, client, tenant_admin, integration, account, own_sandbox):
        own_sandbox.state.update_record("accounts", account["externalId"], {"name": "Changed Elsewhere"})
        at_provider = own_sandbox.state.get_record("accounts", account["externalId"])
        events_before = len(changed_events(tenant_admin))
        response = self.patch(client, tenant_admin, integration, account, {"name": "Mine"})
        assert_error(response, 409, "CONFLICT",
                     message="The provider's copy of the record changed after the copy your change was based on",
                     details={"current": at_provider,
                              "yours": {"data": {"name": "Mine"}, "lastModifiedAt": account["metadata"]["lastModifiedAt"]}})
        assert own_sandbox.state.get_record("accounts", account["externalId"]) == at_provider
        assert records.record_view(stored(integration)[0]) == account
        assert len(changed_events(tenant_admin)) == events_before

    def test_a_newer_copy_at_the_hub_than_the_base_is_409(self, client, tenant_admin, integration, account, own_sandbox):
        stale_base = account["metadata"]["lastModifiedAt"]
        own_sandbox.state.update_record("accounts", account["externalId"], {"industry": "media"})
        seed(integration, tenant_admin, "Account", [sandbox_item(own_sandbox, "accounts", account["externalId"])])  # a sync
        before = own_sandbox.state.get_record("accounts", account["externalId"])
        response = self.patch(client, tenant_admin, integration, account, {"name": "Mine"}, base=stale_base)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["details"]["current"] == before
        assert own_sandbox.state.get_record("accounts", account["externalId"]) == before

    def test_a_provider_refusal_is_502_and_nothing_is_stored(self, client, tenant_admin, integration, account,
                                                              own_sandbox):
        before = own_sandbox.state.get_record("accounts", account["externalId"])
        events_before = len(changed_events(tenant_admin))
        response = self.patch(client, tenant_admin, integration, account, {"color": "red"})
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "PROVIDER_ERROR" and error["details"]["providerStatus"] == 400
        assert error["message"] == f"The provider answered 400 to PATCH /accounts/{account['externalId']}"
        assert own_sandbox.state.get_record("accounts", account["externalId"]) == before
        assert records.record_view(stored(integration)[0]) == account
        assert len(changed_events(tenant_admin)) == events_before

    def test_a_deleted_record_is_409(self, client, tenant_admin, integration, account):
        assert client.delete(f"{BASE}/{integration['id']}/records/{account['id']}",
                             headers=tenant_admin.headers).status_code == 200
        response = self.patch(client, tenant_admin, integration, account, {"name": "Mine"})
        assert response.status_code == 409 and response.json()["error"]["details"]["current"] is None

    def test_another_tenant_gets_404_and_nothing_changes(self, client, tenant_admin, other_tenant_admin, integration,
                                                         account, own_sandbox):
        before = own_sandbox.state.get_record("accounts", account["externalId"])
        response = self.patch(client, other_tenant_admin, integration, account, {"name": "Theirs"})
        assert response.status_code == 404 and response.json()["error"]["code"] == "INTEGRATION_NOT_FOUND"
        assert own_sandbox.state.get_record("accounts", account["externalId"]) == before


class TestDeleteRecord:
    def test_deletes_at_the_provider_and_keeps_a_tombstone(self, client, tenant_admin, integration, own_sandbox):
        seed(integration, tenant_admin, "Contact", [sandbox_item(own_sandbox, "contacts", "con_0003")])
        row = stored(integration)[0]
        response = client.delete(f"{BASE}/{integration['id']}/records/{row.id}", headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["metadata"]["lastAction"] == "deleted" and body["metadata"]["deletedAt"]
        assert own_sandbox.state.get_record("contacts", "con_0003") is None
        assert changed_events(tenant_admin)[-1].data["deleted"] == 1
        again = client.delete(f"{BASE}/{integration['id']}/records/{row.id}", headers=tenant_admin.headers)
        assert_error(again, 409, "CONFLICT", message="The record is already deleted",
                     details={"current": None, "yours": None})

    def test_a_record_the_provider_already_forgot_is_tombstoned(self, client, tenant_admin, integration, own_sandbox):
        seed(integration, tenant_admin, "Contact", [sandbox_item(own_sandbox, "contacts", "con_0004")])
        own_sandbox.state.delete_record("contacts", "con_0004")
        row = stored(integration)[0]
        response = client.delete(f"{BASE}/{integration['id']}/records/{row.id}", headers=tenant_admin.headers)
        assert response.status_code == 200 and response.json()["metadata"]["lastAction"] == "deleted"
