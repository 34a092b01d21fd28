"""Operations of tag `sync`: status, settings, manual runs, pause/resume, the runs log, the scheduler;
tenant isolation and the role matrix on every operation."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlmodel import select

from connectors.sync_runner import schedule_due
from persistence.db import transaction
from persistence.models import SyncRun, SyncSettings, SyncState, utcnow
from tests import factories
from tests.sync_support import (
    ACCOUNTS,
    BASE,
    STYLES,
    drain,
    runner,
    start,
    sync_provider,
    sync_sandbox,  # noqa: F401 - fixture
    clean_sandbox,  # noqa: F401 - fixture
    synced,  # noqa: F401 - fixture
)

ERROR_KEYS = {"code", "message", "requestId"}


def url(integration: dict, suffix: str = "sync") -> str:
    return f"{BASE}/{integration['id']}/{suffix}"


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["requestId"] == response.headers["x-request-id"]
    return body


class TestGetSyncStatus:
    def test_never_synced(self, client, tenant_admin, synced):
        response = client.get(url(synced), headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "integrationId": synced["id"],
            "settings": {"enabled": False, "entities": [], "frequencySeconds": 3600, "paused": False, "pausedAt": None,
                         "updatedAt": None},
            "entities": [{"entity": name, "userId": None, "state": "idle", "lastRun": None, "lastSuccessAt": None,
                          "nextRunAt": None, "recordCount": 0, "lastError": None} for name in sorted(STYLES)],
        }

    def test_after_a_run(self, client, tenant_admin, synced):
        (queued,) = start(client, tenant_admin, synced, entities=["NoneAccount"])
        running = client.get(url(synced), headers=tenant_admin.headers).json()
        none = next(e for e in running["entities"] if e["entity"] == "NoneAccount")
        assert (none["state"], none["lastRun"]) == ("running", queued)
        drain(synced["id"])
        body = client.get(url(synced), headers=tenant_admin.headers).json()
        none = next(e for e in body["entities"] if e["entity"] == "NoneAccount")
        assert (none["state"], none["lastRun"]["status"], none["recordCount"], none["lastError"]) == \
            ("idle", "succeeded", ACCOUNTS, None)
        assert none["lastSuccessAt"] == none["lastRun"]["finishedAt"]

    def test_a_failed_run_shows_error(self, client, tenant_admin, synced, clean_sandbox):
        from connectors.sandbox.faults import Faults

        clean_sandbox.state.faults.configure(Faults(fail_next=1000))
        start(client, tenant_admin, synced, entities=["NoneAccount"])
        drain(synced["id"])
        none = next(e for e in client.get(url(synced), headers=tenant_admin.headers).json()["entities"]
                    if e["entity"] == "NoneAccount")
        assert (none["state"], none["lastError"]["type"]) == ("error", "provider_error")


class TestUpdateSyncSettings:
    def test_changes_and_reports_them(self, client, tenant_admin, synced):
        response = client.patch(url(synced), json={"enabled": True, "entities": ["Contact"], "frequencySeconds": 600},
                                headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body | {"updatedAt": None} == {"enabled": True, "entities": ["Contact"], "frequencySeconds": 600,
                                              "paused": False, "pausedAt": None, "updatedAt": None}
        status = client.get(url(synced), headers=tenant_admin.headers).json()
        assert status["settings"] == body
        assert [e["entity"] for e in status["entities"]] == ["Contact"]
        assert status["entities"][0]["nextRunAt"] is not None
        client.patch(url(synced), json={"enabled": False}, headers=tenant_admin.headers)

    def test_entities_without_a_definition_are_named(self, client, tenant_admin, synced):
        response = client.patch(url(synced), json={"entities": ["Contact", "Invoice", "Deal"]}, headers=tenant_admin.headers)
        body = error(response, 400, "VALIDATION_ERROR")
        assert body["details"]["entities"] == ["Invoice", "Deal"]

    @pytest.mark.parametrize("patch", [{"frequencySeconds": 59}, {}, {"enabled": "yes"}, {"other": 1}])
    def test_invalid_bodies(self, client, tenant_admin, synced, patch):
        error(client.patch(url(synced), json=patch, headers=tenant_admin.headers), 400, "VALIDATION_ERROR")


class TestStartSync:
    def test_queues_one_run_per_entity(self, client, tenant_admin, synced):
        runs = start(client, tenant_admin, synced, entities=["Account", "Contact"])
        assert [(r["entity"], r["kind"], r["trigger"], r["status"], r["userId"]) for r in runs] == \
            [("Account", "full", "manual", "queued", None), ("Contact", "full", "manual", "queued", None)]

    def test_default_is_every_entity(self, client, tenant_admin, synced):
        assert sorted(r["entity"] for r in start(client, tenant_admin, synced)) == sorted(STYLES)

    def test_a_live_run_is_answered_instead_of_a_duplicate(self, client, tenant_admin, synced):
        start(client, tenant_admin, synced, entities=["Account"])
        drain(synced["id"])
        (first,) = start(client, tenant_admin, synced, entities=["Account"])
        assert first["kind"] == "incremental"
        (again,) = start(client, tenant_admin, synced, entities=["Account"], fullRefresh=True)
        assert (again["id"], again["kind"]) == (first["id"], "full")  # still queued: made a full refresh
        with transaction() as session:
            live = session.exec(select(SyncRun).where(SyncRun.integration_id == uuid.UUID(synced["id"]),
                                                      SyncRun.status == "queued")).all()
        assert len(live) == 1

    def test_unknown_entities_are_named(self, client, tenant_admin, synced):
        response = client.post(url(synced), json={"entities": ["Account", "Nope"]}, headers=tenant_admin.headers)
        assert error(response, 400, "VALIDATION_ERROR")["details"]["entities"] == ["Nope"]

    def test_not_connected(self, client, super_admin, tenant_admin, clean_sandbox):
        integration = factories.enable_integration(client, tenant_admin,
                                                   sync_provider(client, super_admin, clean_sandbox)["id"])
        error(client.post(url(integration), json={}, headers=tenant_admin.headers), 409, "INTEGRATION_NOT_CONNECTED")

    def test_disabled_integration(self, client, tenant_admin, synced):
        assert client.post(f"{BASE}/{synced['id']}/deactivate", headers=tenant_admin.headers).status_code == 200
        error(client.post(url(synced), json={}, headers=tenant_admin.headers), 409, "INTEGRATION_NOT_CONNECTED")


class TestPauseResume:
    def test_paused_refuses_runs_and_claims_nothing(self, client, tenant_admin, synced):
        (queued,) = start(client, tenant_admin, synced, entities=["Account"])
        paused = client.post(url(synced, "sync/pause"), headers=tenant_admin.headers)
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True and paused.json()["pausedAt"] is not None
        error(client.post(url(synced), json={}, headers=tenant_admin.headers), 409, "SYNC_PAUSED")
        assert runner().claim(10, integration_id=uuid.UUID(synced["id"])) == []
        states = {e["state"] for e in client.get(url(synced), headers=tenant_admin.headers).json()["entities"]}
        assert states == {"paused"}
        resumed = client.post(url(synced, "sync/resume"), headers=tenant_admin.headers)
        assert resumed.status_code == 200 and resumed.json()["paused"] is False and resumed.json()["pausedAt"] is None
        assert drain(synced["id"]) == ["succeeded"]

    def test_pausing_stops_a_running_run_after_its_page(self, client, tenant_admin, synced):
        (queued,) = start(client, tenant_admin, synced, entities=["Contact"])
        worker = runner()
        (run_id,) = worker.claim(10, integration_id=uuid.UUID(synced["id"]))
        client.post(url(synced, "sync/pause"), headers=tenant_admin.headers)
        assert worker.execute(run_id) == "paused"
        with transaction() as session:
            row = session.get(SyncRun, run_id)
            assert (row.status, row.pages, row.claimed_by) == ("queued", 1, None)
        client.post(url(synced, "sync/resume"), headers=tenant_admin.headers)
        assert drain(synced["id"]) == ["succeeded"]
        runs = client.get(url(synced, "sync-runs"), headers=tenant_admin.headers).json()["items"]
        assert (runs[0]["id"], runs[0]["pages"], runs[0]["added"]) == (queued["id"], 5, 2 * ACCOUNTS)


class TestListSyncRuns:
    def test_newest_first_with_a_cursor(self, client, tenant_admin, synced):
        first = start(client, tenant_admin, synced, entities=["Account"])[0]
        second = start(client, tenant_admin, synced, entities=["Contact"])[0]
        page = client.get(url(synced, "sync-runs"), params={"limit": 1}, headers=tenant_admin.headers).json()
        assert (page["items"], page["limit"], page["hasMore"]) == ([second], 1, True)
        rest = client.get(url(synced, "sync-runs"), params={"limit": 1, "cursor": page["nextCursor"]},
                          headers=tenant_admin.headers).json()
        assert (rest["items"], rest["hasMore"], rest["nextCursor"]) == ([first], False, None)
        only = client.get(url(synced, "sync-runs"), params={"entity": "Account", "status": "queued"},
                          headers=tenant_admin.headers).json()
        assert only["items"] == [first]

    def test_bad_cursor(self, client, tenant_admin, synced):
        error(client.get(url(synced, "sync-runs"), params={"cursor": "nope"}, headers=tenant_admin.headers),
              400, "VALIDATION_ERROR")


class TestScheduler:
    def test_due_entities_are_queued_then_every_frequency_and_full_daily(self, client, tenant_admin, synced):
        client.patch(url(synced), json={"enabled": True, "entities": ["NoneAccount"], "frequencySeconds": 60},
                     headers=tenant_admin.headers)
        try:
            now = utcnow()
            schedule_due(now=now)
            assert _live(synced) == [("NoneAccount", "full", "schedule")]
            drain(synced["id"])
            schedule_due(now=now + timedelta(seconds=30))
            assert _live(synced) == []
            schedule_due(now=now + timedelta(seconds=61))
            assert _live(synced) == [("NoneAccount", "incremental", "schedule")]
            drain(synced["id"], runner(clock=lambda: now + timedelta(seconds=61)))  # queued due at that time
            schedule_due(now=now + timedelta(hours=25))
            assert _live(synced) == [("NoneAccount", "full", "schedule")]
        finally:
            client.patch(url(synced), json={"enabled": False}, headers=tenant_admin.headers)

    def test_paused_integrations_are_not_scheduled(self, client, tenant_admin, synced):
        client.patch(url(synced), json={"enabled": True, "entities": ["NoneAccount"]}, headers=tenant_admin.headers)
        client.post(url(synced, "sync/pause"), headers=tenant_admin.headers)
        try:
            schedule_due(now=utcnow())
            assert _live(synced) == []
        finally:
            client.patch(url(synced), json={"enabled": False}, headers=tenant_admin.headers)
            client.post(url(synced, "sync/resume"), headers=tenant_admin.headers)


class TestIntegrationDeleted:
    def test_deleting_the_integration_deletes_its_sync_rows(self, client, tenant_admin, synced):
        client.patch(url(synced), json={"entities": ["NoneAccount"]}, headers=tenant_admin.headers)
        start(client, tenant_admin, synced)
        drain(synced["id"])
        start(client, tenant_admin, synced, fullRefresh=True)  # one still queued
        response = client.delete(f"{BASE}/{synced['id']}", headers=tenant_admin.headers)
        assert response.status_code == 204, response.text
        with transaction() as session:
            for table in (SyncRun, SyncState, SyncSettings):
                assert session.exec(select(table).where(table.integration_id == uuid.UUID(synced["id"]))).all() == []
        error(client.get(url(synced), headers=tenant_admin.headers), 404, "INTEGRATION_NOT_FOUND")


OPERATIONS = [("get", "sync", None), ("patch", "sync", {"enabled": False}), ("post", "sync", {}),
              ("post", "sync/pause", None), ("post", "sync/resume", None), ("get", "sync-runs", None)]


class TestIsolation:
    @pytest.mark.parametrize(("method", "suffix", "body"), OPERATIONS)
    def test_another_tenants_integration_is_not_found(self, client, synced, other_tenant_admin, method, suffix, body):
        kwargs = {"json": body} if body is not None else {}
        response = client.request(method.upper(), url(synced, suffix), headers=other_tenant_admin.headers, **kwargs)
        theirs = error(response, 404, "INTEGRATION_NOT_FOUND")
        unknown = client.request(method.upper(), url({"id": str(uuid.uuid4())}, suffix),
                                 headers=other_tenant_admin.headers, **kwargs)
        assert theirs["message"].replace(synced["id"], "ID") == \
            unknown.json()["error"]["message"].replace(unknown.url.path.split("/")[5], "ID")
        with transaction() as session:
            assert session.get(SyncSettings, uuid.UUID(synced["id"])) is None

    @pytest.mark.parametrize(("method", "suffix", "body"), OPERATIONS)
    def test_a_user_may_not(self, client, synced, member, method, suffix, body):
        kwargs = {"json": body} if body is not None else {}
        response = client.request(method.upper(), url(synced, suffix), headers=member.headers, **kwargs)
        error(response, 403, "PERMISSION_DENIED")


def _live(integration: dict) -> list[tuple[str, str, str]]:
    with transaction() as session:
        rows = session.exec(select(SyncRun).where(SyncRun.integration_id == uuid.UUID(integration["id"]),
                                                  SyncRun.active_key.is_not(None))).all()
        return [(r.entity, r.kind, r.trigger) for r in rows]
