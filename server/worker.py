"""The webhook delivery worker: `integration-hub worker [--concurrency N]`, or in-process beside `serve`.

Claims due deliveries from the outbox (`persistence.deliveries.claim_due`: a lease, `FOR UPDATE
SKIP LOCKED` on PostgreSQL, so any number of workers on any number of machines share them),
sends them with bounded concurrency on one asyncio loop (`connectors.webhook_sender`), and
records each outcome (retry schedule, disabling). At-least-once: a worker killed mid-attempt
leaves its claims to run out and be claimed again. SIGTERM (or `stop()`) stops claiming,
lets the attempts in flight finish (each ends within its 15 s timeout) and records them.

Database calls are synchronous (SQLAlchemy sessions) and run on one dedicated thread, so the
event loop keeps sending while a batch of outcomes is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from connectors.outbound import OutboundPolicy
from connectors.webhook_sender import WebhookSender
from persistence import db, deliveries, events
from persistence.deliveries import AttemptResult, Job
from persistence.models import utcnow
from server import incoming_worker
from server.observability import WEBHOOK_ATTEMPT_DURATION, WEBHOOK_ATTEMPTS, observe_backlog
from server.settings import Settings
from server.sync_worker import SyncWorker

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
PRUNE_SECONDS = 3600.0
SHUTDOWN_GRACE_SECONDS = 15.0


class Worker:
    """One delivery worker. `run()` until `stop()`; `drain()` delivers what is due now (tests, bench).

    `clock` returns the current aware UTC time for every scheduling decision (due, leases,
    retries, the 5-day rule): tests inject one to move time without sleeping.
    """

    def __init__(self, settings: Settings, *, concurrency: int | None = None, clock: Callable[[], datetime] = utcnow,
                 name: str | None = None, policy: OutboundPolicy | None = None) -> None:
        self.settings = settings
        self.concurrency = concurrency or settings.worker_concurrency
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.policy = policy or OutboundPolicy(allowlist=settings.outbound_allowed)
        self.lease = timedelta(seconds=settings.webhook_lease_seconds)
        self.schedule = settings.retry_schedule
        self.rng = random.Random()
        self.started_at = clock()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-db")
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    def stop(self) -> None:
        """Ask `run()` to stop claiming, finish the attempts in flight and return (thread-safe)."""
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _call(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._db, function, *args)

    def _claim(self, limit: int) -> list[Job]:
        with db.transaction() as session:
            return deliveries.claim_due(session, worker=self.name, now=self.clock(), lease=self.lease, limit=limit)

    def _record(self, results: list[AttemptResult]) -> None:
        with db.transaction() as session:
            deliveries.record_results(session, results=results, worker=self.name, now=self.clock(),
                                      schedule=self.schedule, rng=self.rng)
        for result in results:
            WEBHOOK_ATTEMPTS.labels(outcome="succeeded" if result.succeeded else result.error_kind).inc()
            WEBHOOK_ATTEMPT_DURATION.observe(result.duration_ms / 1000)

    def _release(self, ids: list) -> None:
        with db.transaction() as session:
            deliveries.release(session, worker=self.name, delivery_ids=ids)

    def _beat(self, in_flight: int) -> None:
        now = self.clock()
        with db.transaction() as session:
            deliveries.heartbeat(session, name=self.name, now=now, started_at=self.started_at, in_flight=in_flight)
            pending, oldest = deliveries.backlog(session)
        observe_backlog(pending, (now - oldest).total_seconds() if oldest else None)

    def _prune(self) -> None:
        # The event log's retention (HUB_EVENT_RETENTION_DAYS), kept by the one process that
        # already runs periodic work.
        with db.transaction() as session:
            events.prune(session, older_than=self.clock() - timedelta(days=self.settings.event_retention_days))

    async def drain(self) -> int:
        """Deliver everything due now, batch after batch, until nothing is due; return the attempts made."""
        made = 0
        async with self._sender() as sender:
            while jobs := await self._call(self._claim, self.concurrency):
                results = await asyncio.gather(*(sender.send(job) for job in jobs))
                await self._call(self._record, list(results))
                made += len(results)
        return made

    def drain_sync(self) -> int:
        """`drain()` from synchronous code."""
        return asyncio.run(self.drain())

    def _sender(self) -> WebhookSender:
        return WebhookSender(self.policy, https_only=self.settings.is_production, max_connections=self.concurrency)

    async def run(self) -> None:
        """Claim, send and record until `stop()`; then finish what is in flight (≤ 15 s) and return."""
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        wake = asyncio.Event()
        in_flight: dict[asyncio.Task, Job] = {}
        finished: list[AttemptResult] = []
        last_beat = last_prune = 0.0

        def done(task: asyncio.Task) -> None:
            in_flight.pop(task, None)
            if not task.cancelled():
                finished.append(task.result())
            wake.set()

        async def stopper() -> None:
            await self._stop.wait()
            wake.set()

        if self._stopping:
            self._stop.set()
        watcher = asyncio.create_task(stopper())
        sync = SyncWorker(self.settings, name=self.name, clock=self.clock)  # sync runs: their own threads
        sync.start()
        logger.info("webhook worker %s started (concurrency %d)", self.name, self.concurrency)
        async with self._sender() as sender:
            while not self._stop.is_set():
                try:
                    if finished:
                        batch, finished[:] = list(finished), []
                        await self._call(self._record, batch)
                    if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                        await self._call(self._beat, len(in_flight))
                        last_beat = time.monotonic()
                    if time.monotonic() - last_prune >= PRUNE_SECONDS:
                        await self._call(self._prune)
                        last_prune = time.monotonic()
                    jobs = await self._call(self._claim, self.concurrency - len(in_flight))
                except Exception:  # noqa: BLE001 - a database hiccup must not end the worker
                    logger.exception("webhook worker: database step failed; retrying")
                    jobs = []
                    await asyncio.sleep(1.0)
                for job in jobs:
                    task = asyncio.create_task(sender.send(job))
                    in_flight[task] = job
                    task.add_done_callback(done)
                if jobs and len(in_flight) < self.concurrency:
                    continue  # more may be due: claim again at once
                wake.clear()
                if not finished and not self._stop.is_set():
                    try:
                        await asyncio.wait_for(wake.wait(), self.settings.worker_poll_seconds)
                    except asyncio.TimeoutError:
                        pass
                if in_flight and len(in_flight) >= self.concurrency:
                    await asyncio.sleep(0.002)  # let a few more finish: one transaction records them all
            await self._shutdown(in_flight, finished)
        await asyncio.get_running_loop().run_in_executor(None, sync.stop)
        watcher.cancel()
        logger.info("webhook worker %s stopped", self.name)

    async def _shutdown(self, in_flight: dict[asyncio.Task, Job], finished: list[AttemptResult]) -> None:
        if in_flight:
            await asyncio.wait(list(in_flight), timeout=SHUTDOWN_GRACE_SECONDS)
        leftover = [job.delivery_id for job in in_flight.values()]
        for task in list(in_flight):
            task.cancel()
        if finished:
            await self._call(self._record, list(finished))
        if leftover:
            await self._call(self._release, leftover)


def run_forever(settings: Settings, *, concurrency: int | None = None, metrics_port: int | None = None) -> int:
    """`integration-hub worker`: run one worker until SIGTERM/SIGINT; returns the exit status."""
    from persistence import vault

    db.configure(settings.database_url)
    vault.configure(vault.Keyring.from_strings(settings.encryption_keys()))
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.hub_host)
    worker = Worker(settings, concurrency=concurrency)
    incoming = incoming_worker.start(settings)  # provider notifications -> records, on its own threads

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()

    asyncio.run(main())
    incoming.stop()
    return 0


def start_in_thread(settings: Settings) -> tuple[Worker, threading.Thread]:
    """Run one worker on a daemon thread beside the API (development `serve`); stop with `worker.stop()`."""
    worker = Worker(settings)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()), name="webhook-worker", daemon=True)
    thread.start()
    incoming_worker.start(settings)  # provider notifications -> records (daemon threads, like the worker's)
    return worker, thread
