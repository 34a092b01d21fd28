"""The webhook worker as its own process (`integration-hub worker`): nothing lost when killed,
a clean exit on SIGTERM, a heartbeat for /health.

A real receiver on loopback verifies every delivery with `standardwebhooks`; the worker is a
real subprocess on the test database (SQLite file or the throwaway PostgreSQL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlmodel import select

from persistence import events, webhooks
from persistence.audit import Actor
from persistence.db import transaction
from persistence.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WorkerHeartbeat
from tests.assertions import wait_for
from tests.handlers.test_webhooks import create_endpoint
from tests.webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]


def start_worker(settings, *, lease: float = 2.0, concurrency: int = 16) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "HUB_VAR_DIR": str(settings.var_dir),
           "HUB_OUTBOUND_ALLOWLIST": "127.0.0.1", "HUB_WEBHOOK_LEASE_SECONDS": str(lease),
           "HUB_WEBHOOK_RETRY_SCHEDULE": "0,0.5,0.5,0.5", "HUB_LOG_FORMAT": "text"}
    return subprocess.Popen([sys.executable, "-m", "server.cli", "worker", "--concurrency", str(concurrency)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def emit_updates(admin, endpoint_id: str, count: int) -> list[str]:
    """Record `count` real `webhook_endpoint.updated` events of the endpoint; return their ids."""
    ids, tenant_id = [], uuid.UUID(admin.tenant_id)
    system = Actor(user_id=None, role=None, tenant_id=tenant_id)
    for start in range(0, count, 500):
        with transaction() as session:
            row = session.get(WebhookEndpoint, uuid.UUID(endpoint_id))
            for _ in range(min(500, count - start)):
                ids.append(events.record_change(
                    session, tenant_id=tenant_id, actor=system, action="webhook_endpoint.update",
                    resource_type="webhook_endpoint", resource_id=row.id, event_type="webhook_endpoint.updated",
                    data=webhooks.endpoint_view(row)).id)
    return ids


def pending(endpoint_id: str) -> int:
    with transaction() as session:
        return len(session.exec(select(WebhookDelivery.id).where(
            WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id), WebhookDelivery.status == "pending")).all())


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


def test_sigkill_twice_mid_run_loses_nothing(client, tenant_admin, receiver, settings):
    endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["webhook_endpoint.updated"])
    ids = emit_updates(tenant_admin, endpoint["id"], 2000)
    workers = []
    try:
        for kill_after in (400, 1200):
            workers.append(start_worker(settings))
            wait_for(lambda: len(receiver.ids()) >= kill_after, timeout=180, what=f"{kill_after} deliveries")
            workers[-1].send_signal(signal.SIGKILL)
            workers[-1].wait(timeout=10)
        workers.append(start_worker(settings))
        wait_for(lambda: pending(endpoint["id"]) == 0, timeout=300, what="every delivery settled")
        workers[-1].send_signal(signal.SIGTERM)
        assert workers[-1].wait(timeout=30) == 0
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()

    seen = receiver.ids()
    missing = set(ids) - set(seen)
    duplicates = sum(count - 1 for count in seen.values())
    print(f"\nSIGKILL test: {len(ids)} events, {len(seen)} delivered, {duplicates} duplicate deliveries, "
          f"{len(receiver.deliveries)} requests in all ({len(receiver.deliveries) - sum(seen.values())} cut off by a kill), "
          f"{len(missing)} missing")
    assert not missing
    whole = [d for d in receiver.deliveries if d.complete]
    assert all(d.verified_with == [endpoint["secret"]] for d in whole)
    with transaction() as session:
        statuses = set(session.exec(select(WebhookDelivery.status).where(
            WebhookDelivery.endpoint_id == uuid.UUID(endpoint["id"]))).all())
    assert statuses == {"succeeded"}


def test_sigterm_finishes_the_attempts_in_flight_and_exits(client, tenant_admin, receiver, settings):
    receiver.delay = 1.0
    endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["webhook_endpoint.updated"])
    emit_updates(tenant_admin, endpoint["id"], 40)
    process = start_worker(settings, lease=60, concurrency=8)

    def claimed() -> int:
        with transaction() as session:
            return len(session.exec(select(WebhookDelivery.id).where(
                WebhookDelivery.endpoint_id == uuid.UUID(endpoint["id"]),
                WebhookDelivery.claimed_by.is_not(None))).all())

    try:
        wait_for(lambda: claimed() > 0, timeout=60, what="a claim")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stdout.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert claimed() == 0  # finished and recorded, or handed back: nobody waits for a lease
    with transaction() as session:
        logged = session.exec(select(WebhookAttempt).where(
            WebhookAttempt.endpoint_id == uuid.UUID(endpoint["id"]))).all()
        beat = session.exec(select(WorkerHeartbeat).order_by(WorkerHeartbeat.last_seen_at.desc())).first()
    assert len(logged) == len(receiver.deliveries) > 0  # every answered request is in the attempts log
    assert {a.status for a in logged} == {"succeeded"}
    assert beat is not None
    health = client.get("/health").json()["webhooks"]
    assert health["workerLastHeartbeat"] is not None and health["workerStatus"] in ("up", "stale")
