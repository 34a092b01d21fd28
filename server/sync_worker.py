"""The sync-run loop of the worker process (started by `server.worker`): claim due runs, run them in
a thread pool, and queue scheduled runs.

Runs are rows (`sync_runs`): claimed with a lease like webhook deliveries (`FOR UPDATE SKIP
LOCKED` on PostgreSQL), executed by `connectors.sync_runner.SyncRunner` on a bounded pool of
threads (the provider HTTP client is synchronous), each page committed with its checkpoint. A
worker killed mid-run loses nothing: the lease runs out and another worker resumes the run from
its last committed page. `stop()` stops claiming and waits a grace period for the runs in
flight; one still running after it is left to its lease (and resumed from its checkpoint).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime

from connectors.connection_flows import FlowContext
from connectors.outbound import OutboundPolicy
from connectors.sync_runner import Breakers, SyncPolicy, SyncRunner, schedule_due
from persistence import connections
from persistence.models import utcnow
from server.settings import Settings

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 15.0


def policy_of(settings: Settings) -> SyncPolicy:
    """The SyncPolicy of the settings (`HUB_SYNC_*`, README "Configuration")."""
    return SyncPolicy(lease_seconds=settings.sync_lease_seconds, attempts=settings.sync_retry_attempts,
                      backoff_seconds=settings.sync_backoff_seconds, max_backoff_seconds=settings.sync_max_backoff_seconds,
                      max_retry_after_seconds=settings.sync_max_retry_after_seconds,
                      breaker_failures=settings.sync_breaker_failures,
                      breaker_reset_seconds=settings.sync_breaker_reset_seconds)


def flow_context(settings: Settings, policy: OutboundPolicy) -> FlowContext:
    """The connection flows' context for background work (connection events carry the API view)."""
    return FlowContext(policy=policy, redirect_uri=settings.oauth_redirect_uri, allowed_origins=tuple(settings.origins),
                       present_connection=connections.view)


class SyncWorker:
    """Claims due sync runs and executes them on `concurrency` threads; queues scheduled runs.

    `start()` runs the loop on a daemon thread, `stop()` ends it; `drain()` executes everything
    due now on the calling thread (tests, bench). `clock` returns aware UTC times.
    """

    def __init__(self, settings: Settings, *, name: str, policy: OutboundPolicy | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.concurrency = settings.sync_concurrency
        self.clock = clock
        sync_policy = policy_of(settings)
        outbound = policy or OutboundPolicy(allowlist=settings.outbound_allowed,
                                            timeout=settings.outbound_timeout_seconds)
        self.runner = SyncRunner(flow_context(settings, outbound), sync_policy, name=name, clock=clock,
                                 breakers=Breakers(sync_policy))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="sync-run")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: set[Future] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Run the loop on a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sync-worker", daemon=True)
            self._thread.start()
            logger.info("sync worker %s started (%d threads)", self.runner.name, self.concurrency)

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop claiming; wait up to `grace` seconds for runs in flight (the rest resume elsewhere on lease expiry)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=grace)
        with self._lock:
            pending = list(self._in_flight)
        if pending:
            wait(pending, timeout=grace)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def drain(self) -> dict[str, int]:
        """Execute every run due now (and what they put back due now), on this thread; return outcomes counted."""
        outcomes: dict[str, int] = {}
        while ids := self.runner.claim(self.concurrency):
            for run_id in ids:
                outcome = self.runner.execute(run_id)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    def _loop(self) -> None:
        last_schedule = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_schedule >= self.settings.sync_schedule_seconds:
                    schedule_due(now=self.clock())
                    last_schedule = time.monotonic()
                free = self.concurrency - self._busy()
                ids = self.runner.claim(free) if free > 0 else []
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                logger.exception("sync worker: database step failed; retrying")
                ids = []
                self._stop.wait(1.0)
            for run_id in ids:
                future = self._pool.submit(self.runner.execute, run_id)
                with self._lock:
                    self._in_flight.add(future)
                future.add_done_callback(self._done)
            if ids and self._busy() < self.concurrency:
                continue
            self._wake.wait(self.settings.sync_poll_seconds)
            self._wake.clear()
        logger.info("sync worker %s stopped", self.runner.name)

    def _busy(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _done(self, future: Future) -> None:
        with self._lock:
            self._in_flight.discard(future)
        self._wake.set()
