"""The worker's sync loop executes queued runs on its threads and stops cleanly; a run's events reach
the realtime `sync` channel (WebSocket, validated against the AsyncAPI document)."""

from __future__ import annotations

import uuid

from persistence.db import transaction
from persistence.models import SyncRun
from server.sync_worker import SyncWorker
from tests.server.test_realtime import asyncapi_check, connect, served, subscribe  # noqa: F401 - fixtures
from tests.assertions import wait_for
from tests.sync_support import (
    drain,
    start,
    sync_sandbox,  # noqa: F401 - fixture
    clean_sandbox,  # noqa: F401 - fixture
    synced,  # noqa: F401 - fixture
)


def status_of(run_id: str) -> str:
    with transaction() as session:
        return session.get(SyncRun, uuid.UUID(run_id)).status


def test_the_loop_runs_queued_runs_and_stops(client, tenant_admin, synced, settings):
    runs = start(client, tenant_admin, synced, entities=["Account", "Contact", "NoneAccount"])
    worker = SyncWorker(settings.model_copy(update={"sync_poll_seconds": 0.05, "sync_schedule_seconds": 3600}),
                        name=f"test-loop-{uuid.uuid4().hex[:6]}")
    worker.start()
    try:
        wait_for(lambda: all(status_of(r["id"]) == "succeeded" for r in runs), timeout=60, what="the runs to finish")
    finally:
        worker.stop(grace=5)
    assert not worker._thread.is_alive()


def test_run_events_reach_the_sync_channel(client, tenant_admin, synced, connect, asyncapi_check):
    sock = connect(tenant_admin.access_token)
    assert subscribe(sock, ["sync"]) == {"type": "subscribed", "channels": ["sync"]}
    (run,) = start(client, tenant_admin, synced, entities=["NoneAccount"])
    assert drain(synced["id"]) == ["succeeded"]
    received = [sock.recv_skipping_pings()]
    while (received[-1]["type"], received[-1]["action"]) != ("sync", "succeeded"):
        received.append(sock.recv_skipping_pings())
    assert [(m["type"], m["action"], m["data"]["id"]) for m in received if m["type"] == "sync"] == \
        [("sync", "started", run["id"]), ("sync", "succeeded", run["id"])]
    # `records.changed` rides the same channel for tokens that may read records (`list_records`'s scopes).
    assert all(m["data"]["runId"] == run["id"] for m in received if m["type"] == "records")


def test_stopping_hands_runs_back_after_their_page(client, tenant_admin, synced, clean_sandbox, settings):
    from connectors.sandbox.faults import Faults

    clean_sandbox.state.faults.configure(Faults(latency_ms=300))  # five pages of contacts take a while
    (queued,) = start(client, tenant_admin, synced, entities=["Contact"])
    worker = SyncWorker(settings.model_copy(update={"sync_poll_seconds": 0.05, "sync_schedule_seconds": 3600}),
                        name=f"test-stop-{uuid.uuid4().hex[:6]}")
    worker.start()

    def first_page_committed() -> bool:
        with transaction() as session:
            return session.get(SyncRun, uuid.UUID(queued["id"])).pages >= 1

    try:
        wait_for(first_page_committed, timeout=30, what="the first page")
    finally:
        worker.stop(grace=10)
    with transaction() as session:
        row = session.get(SyncRun, uuid.UUID(queued["id"]))
        assert (row.status, row.claimed_by, row.checkpoint is not None) == ("queued", None, True)
        assert 1 <= row.pages < 5
    clean_sandbox.state.faults.configure(Faults())
    assert drain(synced["id"]) == ["succeeded"]  # another worker resumes it at once, from its checkpoint
    with transaction() as session:
        row = session.get(SyncRun, uuid.UUID(queued["id"]))
        assert (row.status, row.pages, row.added) == ("succeeded", 5, 50)
