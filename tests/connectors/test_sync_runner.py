"""Sync runs against the sandbox over real HTTP: every paging style, full and incremental runs,
faults (429, 5xx, latency, timeouts, 401), a run killed mid-way, deletions only after complete
runs, last-write-wins against a stale copy, the circuit breaker, and the events of a run."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, Connection, SyncRun
from tests.records_support import connect_user
from tests import factories
from tests.sync_support import (
    ACCOUNTS,
    drain,
    later,
    moment,
    run_of,
    runner,
    sandbox_ids,
    start,
    stored,
    sync_now,
    sync_provider,
    sync_sandbox,  # noqa: F401 - fixture
    clean_sandbox,  # noqa: F401 - fixture
    synced,  # noqa: F401 - fixture
)

PAGES = {"Account": 3, "OffsetAccount": 3, "PageAccount": 3, "LinkAccount": 3, "LastIdAccount": 3, "NoneAccount": 1}


def accounts(sandbox) -> int:
    """How many live accounts the module's sandbox has now (tests before this one may have written)."""
    return len(sandbox_ids(sandbox, "accounts"))


def faults(sandbox, **plan) -> None:
    from connectors.sandbox.faults import from_json

    sandbox.state.faults.configure(from_json(plan))


def db_run(run_id: str) -> SyncRun:
    with transaction() as session:
        return session.get(SyncRun, uuid.UUID(run_id))


class TestPagingStyles:
    @pytest.mark.parametrize("name", sorted(PAGES))
    def test_full_sync_reads_every_record_once(self, client, tenant_admin, synced, clean_sandbox, name):
        assert accounts(clean_sandbox) == ACCOUNTS  # the page counts below are for 25 accounts
        (run,) = sync_now(client, tenant_admin, synced, entities=[name])
        assert run | {"id": None, "queuedAt": None, "startedAt": None, "finishedAt": None} == {
            "id": None, "integrationId": synced["id"], "entity": name, "userId": None, "kind": "full",
            "trigger": "manual", "status": "succeeded", "queuedAt": None, "startedAt": None, "finishedAt": None,
            "added": ACCOUNTS, "updated": 0, "deleted": 0, "pages": PAGES[name], "requests": PAGES[name], "error": None}
        records = stored(synced, name)
        assert set(records) == sandbox_ids(clean_sandbox, "accounts")
        assert records["acc_0001"].data == next(r for r in clean_sandbox.state.records("accounts") if r["id"] == "acc_0001")

    def test_a_second_full_run_changes_nothing(self, client, tenant_admin, synced):
        sync_now(client, tenant_admin, synced, entities=["Contact"])
        (again,) = sync_now(client, tenant_admin, synced, entities=["Contact"], fullRefresh=True)
        assert (again["kind"], again["status"], again["added"], again["updated"], again["deleted"], again["pages"]) == \
            ("full", "succeeded", 0, 0, 0, 5)
        assert len(stored(synced, "Contact")) == 2 * ACCOUNTS


class TestIncremental:
    def test_only_changes_since_the_watermark_are_read(self, client, tenant_admin, synced, clean_sandbox):
        sync_now(client, tenant_admin, synced, entities=["OffsetAccount"])
        clean_sandbox.state.update_record("accounts", "acc_0003", {"name": "Renamed Three"})
        created = clean_sandbox.state.create_record("accounts", {"name": "Brand New"})
        clean_sandbox.state.delete_record("accounts", "acc_0004")
        (run,) = sync_now(client, tenant_admin, synced, entities=["OffsetAccount"])
        assert (run["kind"], run["status"], run["added"], run["updated"], run["deleted"], run["pages"]) == \
            ("incremental", "succeeded", 1, 1, 1, 1)
        records = stored(synced, "OffsetAccount", live_only=False)
        assert records["acc_0003"].data["name"] == "Renamed Three"
        assert records[created["id"]].deleted_at is None
        assert records["acc_0004"].deleted_at is not None
        # Nothing changed since: the next incremental run reads one page (the inclusive boundary) and stores nothing.
        (quiet,) = sync_now(client, tenant_admin, synced, entities=["OffsetAccount"])
        assert (quiet["kind"], quiet["added"], quiet["updated"], quiet["deleted"]) == ("incremental", 0, 0, 0)

    def test_every_style_follows_changes(self, client, tenant_admin, synced, clean_sandbox):
        names = sorted(PAGES)
        sync_now(client, tenant_admin, synced, entities=names)
        clean_sandbox.state.update_record("accounts", "acc_0007", {"name": "Seven Renamed"})
        runs = sync_now(client, tenant_admin, synced, entities=names)
        assert {(r["entity"], r["kind"], r["status"], r["updated"]) for r in runs} == \
            {(n, "incremental", "succeeded", 1) for n in names}


class TestFaults:
    def test_429_waits_retry_after_and_completes(self, client, tenant_admin, synced, clean_sandbox):
        faults(clean_sandbox, rateLimitEvery=2, retryAfter=1)
        (run,) = sync_now(client, tenant_admin, synced, entities=["Account"])
        assert (run["status"], run["added"], run["pages"]) == ("succeeded", accounts(clean_sandbox), 3)
        assert run["requests"] > run["pages"]  # the 429s were sent again

    def test_a_5xx_burst_is_retried(self, client, tenant_admin, synced, clean_sandbox):
        faults(clean_sandbox, errorEvery=3, errorBurst=2, errorStatus=502)
        (run,) = sync_now(client, tenant_admin, synced, entities=["Account"])
        assert (run["status"], run["added"], run["pages"]) == ("succeeded", accounts(clean_sandbox), 3)
        assert run["requests"] > run["pages"]

    def test_a_provider_down_fails_the_run_after_the_retries(self, client, tenant_admin, synced, clean_sandbox):
        faults(clean_sandbox, failNext=1000)
        (run,) = sync_now(client, tenant_admin, synced, entities=["Account"])
        assert (run["status"], run["requests"], run["pages"], run["error"]) == (
            "failed", 4, 0, {"type": "provider_error", "message": "The provider answered 503 (after 4 attempts)"})

    def test_latency_slows_but_completes(self, client, tenant_admin, synced, clean_sandbox):
        faults(clean_sandbox, latencyMs=150)
        (run,) = sync_now(client, tenant_admin, synced, entities=["NoneAccount"])
        assert (run["status"], run["added"]) == ("succeeded", accounts(clean_sandbox))

    def test_timeouts_are_retried_then_fail(self, client, tenant_admin, synced, clean_sandbox):
        faults(clean_sandbox, latencyMs=800)
        (queued,) = start(client, tenant_admin, synced, entities=["NoneAccount"])
        drain(synced["id"], runner(timeout_seconds=0.2, attempts=2))
        run = run_of(client, tenant_admin, synced, queued["id"])
        assert (run["status"], run["requests"], run["error"]["type"]) == ("failed", 2, "provider_error")
        assert "timed out" in run["error"]["message"]

    def test_a_401_refreshes_the_token_once_and_goes_on(self, client, tenant_admin, synced, clean_sandbox):
        # Every third: a request still in flight from an earlier test cannot make a retry land on a 401 too.
        faults(clean_sandbox, unauthorizedEvery=3)
        (run,) = sync_now(client, tenant_admin, synced, entities=["Account"])
        assert (run["status"], run["added"], run["pages"]) == ("succeeded", accounts(clean_sandbox), 3)
        with transaction() as session:
            row = session.exec(select(Connection).where(Connection.integration_id == uuid.UUID(synced["id"]))).one()
            refreshes = session.exec(select(AuditEntry).where(AuditEntry.action == "connection.refresh",
                                                              AuditEntry.resource_id == str(row.id))).all()
        assert row.status == "active"
        assert len(refreshes) >= 1  # the refused access token was refreshed, not the run failed

    def test_a_dead_grant_expires_the_connection_and_fails_the_run(self, client, tenant_admin, synced, clean_sandbox):
        clean_sandbox.state.revoke_all()
        (run,) = sync_now(client, tenant_admin, synced, entities=["Account"])
        assert (run["status"], run["error"]["type"], run["pages"]) == ("failed", "unauthorized", 0)
        connection = client.get(f"/api/v1/tenant/integrations/{synced['id']}/connection", headers=tenant_admin.headers)
        assert connection.json()["status"] == "expired"
        types = [e["type"] for e in _events(client, tenant_admin)]
        assert "connection.expired" in types and "sync.failed" in types


class TestResume:
    def test_a_run_killed_mid_way_resumes_from_its_checkpoint(self, client, tenant_admin, synced, clean_sandbox):
        (queued,) = start(client, tenant_admin, synced, entities=["Contact"])
        first = runner(lease_seconds=30)
        (run_id,) = first.claim(10, integration_id=uuid.UUID(synced["id"]))
        assert first.execute(run_id, stop_after_pages=2) == "stopped"  # as if killed after two commits
        halfway = db_run(queued["id"])
        assert (halfway.status, halfway.pages, halfway.added, halfway.checkpoint is not None) == ("running", 2, 20, True)
        assert len(stored(synced, "Contact")) == 20
        # Nobody else may take it while the lease holds; once it ran out, another worker resumes it.
        assert runner().claim(10, integration_id=uuid.UUID(synced["id"])) == []
        second = runner(clock=later(31))
        assert second.claim(10, integration_id=uuid.UUID(synced["id"])) == [run_id]
        assert second.execute(run_id) == "succeeded"
        assert first.execute(run_id) == "lost"  # the first worker, back to life, writes nothing
        run = run_of(client, tenant_admin, synced, queued["id"])
        assert (run["status"], run["added"], run["updated"], run["pages"]) == ("succeeded", 2 * ACCOUNTS, 0, 5)
        assert set(stored(synced, "Contact")) == sandbox_ids(clean_sandbox, "contacts")
        started = [e for e in _events(client, tenant_admin, "sync.started") if e["data"]["id"] == queued["id"]]
        assert len(started) == 1  # a resumed run does not start twice


class TestDeletions:
    def test_a_failed_full_run_tombstones_nothing_a_complete_one_does(self, client, tenant_admin, synced, clean_sandbox):
        sync_now(client, tenant_admin, synced, entities=["LinkAccount"])
        for gone in ("acc_0002", "acc_0009"):
            clean_sandbox.state.delete_record("accounts", gone)
        (queued,) = start(client, tenant_admin, synced, entities=["LinkAccount"], fullRefresh=True)
        first = runner(lease_seconds=30)
        first.claim(10, integration_id=uuid.UUID(synced["id"]))
        assert first.execute(uuid.UUID(queued["id"]), stop_after_pages=1) == "stopped"
        faults(clean_sandbox, failNext=1000)
        drain(synced["id"], runner(clock=later(31)))
        failed = run_of(client, tenant_admin, synced, queued["id"])
        assert (failed["kind"], failed["status"], failed["deleted"]) == ("full", "failed", 0)
        assert {"acc_0002", "acc_0009"} <= set(stored(synced, "LinkAccount"))  # still live
        faults(clean_sandbox)
        (complete,) = sync_now(client, tenant_admin, synced, entities=["LinkAccount"], fullRefresh=True)
        assert (complete["status"], complete["deleted"], complete["added"], complete["updated"]) == ("succeeded", 2, 0, 0)
        records = stored(synced, "LinkAccount", live_only=False)
        assert records["acc_0002"].deleted_at is not None and records["acc_0009"].deleted_at is not None
        assert set(stored(synced, "LinkAccount")) == sandbox_ids(clean_sandbox, "accounts")


class TestLastWriteWins:
    def test_a_stale_copy_never_overwrites_a_newer_one(self, client, tenant_admin, synced, clean_sandbox):
        clean_sandbox.state.update_record("accounts", "acc_0005", {"name": "Newest Name"})
        sync_now(client, tenant_admin, synced, entities=["PageAccount"])
        newest = stored(synced, "PageAccount")["acc_0005"]
        stale_at = moment(newest.data["updatedAt"]) - timedelta(days=3)
        clean_sandbox.state.touch("acc_0005", at=stale_at, name="Stale Name")  # the provider serves an older copy
        (run,) = sync_now(client, tenant_admin, synced, entities=["PageAccount"], fullRefresh=True)
        assert (run["status"], run["updated"]) == ("succeeded", 0)
        assert stored(synced, "PageAccount")["acc_0005"].data["name"] == "Newest Name"


class TestCircuitBreaker:
    def test_repeated_failures_open_the_breaker_and_runs_wait_instead_of_calling(self, client, tenant_admin, synced,
                                                                                  clean_sandbox):
        faults(clean_sandbox, failNext=1000)
        queued = start(client, tenant_admin, synced, entities=["Account", "Contact", "OffsetAccount"])
        shared = runner(breaker_failures=3, attempts=2, breaker_reset_seconds=300)
        ids = shared.claim(10, integration_id=uuid.UUID(synced["id"]))
        outcomes = [shared.execute(run_id) for run_id in ids]
        assert outcomes == ["failed", "deferred", "deferred"]
        runs = [db_run(str(run_id)) for run_id in ids]
        assert [r.requests for r in runs] == [2, 1, 0]  # the open breaker sent nothing for the third
        for row in runs[1:]:
            assert row.status == "queued" and row.next_attempt_at.replace(tzinfo=None) > \
                (row.updated_at.replace(tzinfo=None) + timedelta(seconds=299))
        assert {r["entity"] for r in queued} == {"Account", "Contact", "OffsetAccount"}


class TestEvents:
    def test_a_run_emits_started_succeeded_and_one_records_changed(self, client, tenant_admin, synced, clean_sandbox):
        (run,) = sync_now(client, tenant_admin, synced, entities=["NoneAccount"])
        mine = [e for e in _events(client, tenant_admin) if e["data"].get("id") == run["id"]
                or e["data"].get("runId") == run["id"]]
        assert [e["type"] for e in mine] == ["sync.started", "records.changed", "sync.succeeded"]
        changed = mine[1]["data"]
        assert (changed["integrationId"], changed["entity"], changed["trigger"], changed["added"], changed["updated"],
                changed["deleted"], len(changed["recordIds"])) == (synced["id"], "NoneAccount", "manual",
                                                                   accounts(clean_sandbox), 0, 0, accounts(clean_sandbox))
        assert mine[2]["data"] == run
        assert all(e["actor"] == {"type": "system", "id": None, "role": None} for e in mine)
        # An unchanged full run emits no records.changed.
        (again,) = sync_now(client, tenant_admin, synced, entities=["NoneAccount"], fullRefresh=True)
        assert [e["type"] for e in _events(client, tenant_admin) if e["data"].get("runId") == again["id"]] == []


class TestUserScoped:
    def test_one_run_per_user_connection(self, client, super_admin, tenant_admin, clean_sandbox):
        provider = sync_provider(client, super_admin, clean_sandbox, requiresUserScoping=True)
        integration = factories.enable_integration(client, tenant_admin, provider["id"], userScoped=True)
        users = [factories.add_user(client, tenant_admin, role="user") for _ in range(2)]
        for user in users:
            connect_user(client, user, integration)
        runs = start(client, tenant_admin, integration, entities=["NoneAccount"])
        assert sorted(r["userId"] for r in runs) == sorted(u.user_id for u in users)
        drain(integration["id"])
        with transaction() as session:
            from persistence.models import Record

            owners = {row.owner_key for row in session.exec(select(Record).where(
                Record.integration_id == uuid.UUID(integration["id"])))}
        assert owners == {u.user_id for u in users}
        status = client.get(f"/api/v1/tenant/integrations/{integration['id']}/sync", headers=tenant_admin.headers).json()
        assert sorted((e["userId"], e["recordCount"]) for e in status["entities"] if e["entity"] == "NoneAccount") == \
            sorted((u.user_id, accounts(clean_sandbox)) for u in users)


def _events(client, admin, event_type: str | None = None) -> list[dict]:
    """Every event of the admin's tenant (oldest first), of one type when given."""
    params = {"limit": 250} | ({"types": event_type} if event_type else {})
    items, cursor = [], None
    while True:
        response = client.get("/api/v1/events", params=params | ({"after": cursor} if cursor else {}),
                              headers=admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["events"]
        cursor = body["nextCursor"]
        if not body["hasMore"]:
            return items
