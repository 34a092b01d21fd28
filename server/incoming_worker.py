"""The incoming-webhook worker: turn each queued provider notification into an upserted record.

`handlers/incoming_webhooks.py` answers the provider at once and leaves one `incoming_webhooks`
row per verified notification. This loop claims queued rows (`persistence.incoming_webhooks.
claim_due`: a lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of workers share
them), reads the changed record — from the notification when it carried the whole record, else
from the provider with the entity's `sync.fetch` request (`connectors.provider_api.send`:
credentials injected, SSRF guard, size cap) — and upserts it last-write-wins
(`persistence.records.upsert`), emitting `records.changed` with trigger `webhook` in the same
transaction as the row's settlement. A 404 from the provider tombstones the record.

Failures: the provider's 429 (after its Retry-After), 5xx, timeouts and unreachable hosts are
retried with exponential backoff (1, 2, 4, 8 s; 5 attempts); a dead connection or an answer that
does not fit the definition fails the row at once (`last_error` says why). A worker killed
mid-job loses nothing: its lease runs out and another claims the row (at-least-once; the upsert
is idempotent).

Latency: a commit that queued a row wakes the worker of the same process at once
(`incoming_webhooks.add_commit_listener`); other processes poll every `worker_poll_seconds`
(default 50 ms). Runs on its own threads beside the delivery worker (`server/worker.py`).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from connectors import incoming_webhooks as payloads
from connectors import provider_api
from connectors.connection_flows import FlowContext
from connectors.outbound import OutboundPolicy
from connectors.sync_definitions import DefinitionMismatch, is_deleted, parse_updated_at
from persistence import connections, db, events, incoming_webhooks, records, sync_definitions
from persistence.audit import Actor
from persistence.errors import DomainError
from persistence.incoming_webhooks import Job
from persistence.models import Integration, Provider, as_utc, utcnow
from server.observability import INCOMING_WEBHOOK_LAG, INCOMING_WEBHOOK_WORK
from server.settings import Settings

logger = logging.getLogger(__name__)

PRUNE_SECONDS = 3600.0
LEASE = timedelta(seconds=60)
MAX_BACKOFF_SECONDS = 60.0


class Retry(Exception):
    """A transient failure: try the job again after `delay` seconds."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Failed(Exception):
    """A permanent failure: the row is failed with this message."""


class IncomingWorker:
    """Claims and processes queued incoming webhooks. `start()`/`stop()` a background loop; `drain()` in tests."""

    def __init__(self, settings: Settings, *, concurrency: int = 4, clock: Callable[[], datetime] = utcnow,
                 name: str | None = None, policy: OutboundPolicy | None = None) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.clock = clock
        self.name = name or f"incoming:{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        policy = policy or OutboundPolicy(allowlist=settings.outbound_allowed, timeout=settings.outbound_timeout_seconds)
        self.flows = FlowContext(policy=policy, redirect_uri=settings.oauth_redirect_uri,
                                 allowed_origins=tuple(settings.origins), present_connection=connections.view)
        self.rng = random.Random()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="incoming-job")

    def start(self) -> IncomingWorker:
        """Run the loop on a daemon thread until `stop()`; return self."""
        incoming_webhooks.add_commit_listener(self._wake.set)
        self._thread = threading.Thread(target=self.run, name="incoming-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop claiming, let the jobs in hand finish (each ends within the outbound timeout) and return."""
        incoming_webhooks.remove_commit_listener(self._wake.set)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True)

    def run(self) -> None:
        """Claim and process until `stop()`: at once after a local commit, else every `worker_poll_seconds`."""
        logger.info("incoming webhook worker %s started", self.name)
        last_prune = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if time.monotonic() - last_prune >= PRUNE_SECONDS:
                    with db.transaction() as session:
                        incoming_webhooks.prune(session, now=self.clock())
                    last_prune = time.monotonic()
                if self.process_due():
                    continue  # more may be due: claim again at once
            except Exception:  # a database hiccup must not end the worker
                logger.exception("incoming webhook worker: a step failed; retrying")
                self._stop.wait(1.0)
            self._wake.wait(self.settings.worker_poll_seconds)
        logger.info("incoming webhook worker %s stopped", self.name)

    def drain(self) -> int:
        """Process everything due now, batch after batch, until nothing is due; return the jobs processed."""
        done = 0
        while count := self.process_due():
            done += count
        return done

    def process_due(self) -> int:
        """Claim one batch of due rows, process them concurrently, settle each; return how many were claimed."""
        with db.transaction() as session:
            jobs = incoming_webhooks.claim_due(session, worker=self.name, now=self.clock(), lease=LEASE,
                                               limit=self.concurrency)
        if jobs:
            list(self._pool.map(self.process, jobs))
        return len(jobs)

    def process(self, job: Job) -> str:
        """Read the job's record, upsert it and settle the row in one transaction; return the row's status."""
        try:
            context = self._context(job)
            item = self._item(job, context)
            with db.transaction() as session:
                self._upsert(session, job, item)
                status = incoming_webhooks.settle(session, job=job, worker=self.name, now=self.clock(), error=None)
            INCOMING_WEBHOOK_LAG.observe(max(0.0, (self.clock() - context["received_at"]).total_seconds()))
        except Retry as retry:
            delay = retry.delay if retry.delay is not None else self._backoff(job.attempt)
            status = self._settle_error(job, str(retry), retry_at=self.clock() + timedelta(seconds=delay))
        except (Failed, DomainError, DefinitionMismatch) as failure:
            status = self._settle_error(job, f"{type(failure).__name__}: {failure}", retry_at=None)
        except Exception as error:  # an unexpected fault fails this row, never the loop
            logger.exception("incoming webhook %s: unexpected failure", job.id)
            status = self._settle_error(job, f"{type(error).__name__}: {error}", retry_at=self.clock() + timedelta(
                seconds=self._backoff(job.attempt)))
        INCOMING_WEBHOOK_WORK.labels(outcome="retry" if status == "queued" else status).inc()
        return status

    def _settle_error(self, job: Job, error: str, *, retry_at: datetime | None) -> str:
        with db.transaction() as session:
            return incoming_webhooks.settle(session, job=job, worker=self.name, now=self.clock(), error=error[:500],
                                            retry_at=retry_at)

    def _backoff(self, attempt: int) -> float:
        # 1, 2, 4, 8 s (±20 %): a provider hiccup clears before the row is given up.
        return min(MAX_BACKOFF_SECONDS, 2.0 ** (attempt - 1)) * self.rng.uniform(0.8, 1.2)

    def _context(self, job: Job) -> dict[str, Any]:
        """The integration's provider definition of the job's entity, and when the notification came."""
        with db.transaction() as session:
            integration = session.get(Integration, job.integration_id)
            provider = session.get(Provider, integration.provider_id) if integration is not None else None
            row = session.get(incoming_webhooks.IncomingWebhook, job.id)
            if integration is None or provider is None or integration.tenant_id != job.tenant_id:
                raise Failed("the integration no longer exists")
            definition = sync_definitions.definitions(provider.available_entities).get(job.entity)
            if definition is None:
                raise Failed(f"the provider no longer declares a sync definition for {job.entity}")
            return {"definition": definition, "received_at": as_utc(row.received_at) if row else self.clock()}

    def _item(self, job: Job, context: dict[str, Any]) -> records.Item:
        """The provider's current copy of the record: from the notification, else fetched (a 404: deleted)."""
        definition = context["definition"]
        data = job.record
        if data is None:
            data = self._fetch(job, definition)
            if data is None:  # gone at the provider: tombstone what the hub holds (its last data kept)
                return records.Item(external_id=job.external_id, data={}, provider_updated_at=None, deleted=True)
        return records.Item(external_id=job.external_id, data=data,
                            provider_updated_at=parse_updated_at(definition, data), deleted=is_deleted(definition, data))

    def _fetch(self, job: Job, definition: sync_definitions.SyncDefinition) -> dict | None:
        """GET the record with the entity's `fetch` request; None on 404. Retry or Failed on other answers."""
        if definition.fetch is None:
            raise Failed(f"the notification carries no record and {job.entity} declares no sync.fetch")
        path = definition.fetch.path.replace("{id}", quote(job.external_id, safe=""))
        try:
            answer = provider_api.send(self.flows, tenant_id=job.tenant_id, integration_id=job.integration_id,
                                       method=definition.fetch.method, path=path)
        except (provider_api.ProviderUnreachable, provider_api.ResponseTooLarge) as error:
            raise Retry(f"{type(error).__name__}: {error}") from None
        if answer.status == 404:
            return None
        if answer.status == 429 or answer.status >= 500:
            raise Retry(f"the provider answered {answer.status}", delay=answer.retry_after() if answer.status == 429 else None)
        if not answer.ok:
            raise Failed(f"the provider answered {answer.status} to {definition.fetch.method} {path}")
        body = answer.json()
        item = payloads.field_value(body, definition.fetch.item_path) if definition.fetch.item_path else body
        if not isinstance(item, dict):
            raise Failed(f"the provider's answer to {definition.fetch.method} {path} holds no object")
        return item

    def _upsert(self, session, job: Job, item: records.Item) -> None:
        changes = records.upsert(session, tenant_id=job.tenant_id, integration_id=job.integration_id,
                                 owner_key="tenant", user_id=None, entity=job.entity, items=[item], now=self.clock())
        if not changes.changed():
            return  # unchanged or stale (last-write-wins): nothing to tell anyone
        data = records.changed_event_data(integration_id=job.integration_id, entity=job.entity, trigger="webhook",
                                          run_id=None, changes=changes)
        events.record_change(session, tenant_id=job.tenant_id, actor=Actor(user_id=None, role=None, tenant_id=job.tenant_id),
                             action="records.webhook", resource_type="integration", resource_id=job.integration_id,
                             changes={"providerEventId": job.provider_event_id, **changes.counts()},
                             event_type="records.changed", data=data)


def start(settings: Settings) -> IncomingWorker:
    """Start one incoming-webhook worker on its own thread (beside the delivery worker); stop it with `.stop()`."""
    return IncomingWorker(settings).start()

