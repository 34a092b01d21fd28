"""Running sync runs: page through a provider with an entity's sync definition and store each page
with its checkpoint, so a run killed mid-way resumes from its last committed page.

Seeds: integrations document ("Data Synchronization": last-write-wins; "Retry Logic"),
PrintShop guide ("Retry with Exponential Backoff", "Circuit Breaker Pattern"). One page is one
transaction: the records (`persistence.records.upsert`, last-write-wins by the provider's
`updatedAt`), the run's counters and the next page request (`checkpoint`), under the run's
claim (a worker whose lease ran out and was taken over writes nothing). A full run marks what it
saw (`seen_run_id`) and tombstones the rest only when it completed (`tombstone_unseen`).

Provider requests go through `connectors.provider_api.send` (credentials, one forced refresh
after a 401 then `connection.expired`, SSRF guard, size cap, timeout). Around it:
- 5xx, timeouts and unreachable: tenacity retries with exponential backoff and full jitter;
- 429: wait `Retry-After` (at most `max_retry_after_seconds`; a longer wait puts the run back in
  the queue until then, so a worker thread never sleeps for minutes);
- a per-provider circuit breaker (pybreaker) counts 5xx/timeouts/unreachable; while it is open
  the provider's runs go back to the queue until it may half-open, so one dead provider cannot
  tie up every worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import pybreaker
import tenacity

from connectors import provider_api
from connectors.connection_flows import FlowContext
from connectors.sync_definitions import (
    DefinitionMismatch,
    PageRequest,
    extract_items,
    first_request,
    is_deleted,
    item_id,
    next_request,
    parse_updated_at,
)
from persistence import events, records, sync_runs
from persistence.audit import Actor
from persistence.db import transaction
from persistence.errors import DomainError, NotFound
from persistence.models import Integration, Provider, SyncRun, as_utc, utcnow
from persistence.sync_definitions import SyncDefinition, definitions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncPolicy:
    """How runs treat a provider: lease, retries, Retry-After bound and circuit breaker (seconds throughout).

    `attempts` per request (the first included); backoff waits are random in
    [0, min(max_backoff, backoff * 2^n)] (full jitter); a 429's `Retry-After` is honoured up to
    `max_retry_after_seconds`; the breaker opens after `breaker_failures` consecutive failures
    and lets one trial request through after `breaker_reset_seconds`.
    """

    lease_seconds: float = 300.0
    attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0
    breaker_failures: int = 5
    breaker_reset_seconds: float = 60.0
    timeout_seconds: float | None = None  # per request; None: the outbound policy's

    @property
    def lease(self) -> timedelta:
        """The claim's lease as a timedelta."""
        return timedelta(seconds=self.lease_seconds)


class RunFailed(Exception):
    """The run cannot complete: `error_type` (SyncError.type) and a message for the runs log."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message[:500]


class RunDeferred(Exception):
    """The run must wait `seconds` (circuit open, a long Retry-After): back to the queue, checkpoint kept."""

    def __init__(self, seconds: float, message: str) -> None:
        super().__init__(message)
        self.seconds = seconds


class LeaseLost(Exception):
    """Another worker holds the run now (our lease ran out): stop without writing."""


class _Transient(Exception):
    """A failure worth retrying: 5xx, timeout, unreachable (counted by the breaker)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _RateLimited(Exception):
    """A 429; `retry_after` seconds when the provider said (not a provider failure for the breaker)."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"The provider answered 429 (Retry-After: {retry_after})")
        self.retry_after = retry_after


class Breakers:
    """One pybreaker circuit breaker per provider (process-wide: every worker thread shares it). Thread-safe."""

    def __init__(self, policy: SyncPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._breakers: dict[uuid.UUID, pybreaker.CircuitBreaker] = {}

    def get(self, provider_id: uuid.UUID) -> pybreaker.CircuitBreaker:
        """The breaker of `provider_id` (created closed on first use)."""
        with self._lock:
            breaker = self._breakers.get(provider_id)
            if breaker is None:
                # Only provider failures count: a 429, a 4xx or our own deferral is no sign of a dead provider.
                breaker = pybreaker.CircuitBreaker(
                    fail_max=self.policy.breaker_failures, reset_timeout=self.policy.breaker_reset_seconds,
                    exclude=[_RateLimited, RunFailed, RunDeferred, DomainError], name=str(provider_id))
                self._breakers[provider_id] = breaker
            return breaker


@dataclass
class _Job:
    """What one claimed run needs, read once at its start."""

    run_id: uuid.UUID
    tenant_id: uuid.UUID
    integration_id: uuid.UUID
    owner_key: str
    user_id: uuid.UUID | None
    entity: str
    kind: str
    trigger: str
    since: datetime | None
    checkpoint: dict | None
    provider_id: uuid.UUID
    base_url: str
    definition: SyncDefinition


@dataclass
class _Counter:
    requests: int = 0

    def take(self) -> int:
        taken, self.requests = self.requests, 0
        return taken


@dataclass
class SyncRunner:
    """Claims and executes sync runs for one worker `name`. `clock` gives aware UTC times (leases, due times).

    `sleep` waits between retries (tests may pass a faster one). Thread-safe: one runner serves
    every thread of a worker's pool.
    """

    ctx: FlowContext
    policy: SyncPolicy
    name: str
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    breakers: Breakers | None = None
    system: Callable[[uuid.UUID], Actor] = field(default=lambda tenant_id: Actor(None, None, tenant_id))

    def __post_init__(self) -> None:
        if self.breakers is None:
            self.breakers = Breakers(self.policy)

    # -- claiming -----------------------------------------------------------------------------

    def claim(self, limit: int, *, integration_id: uuid.UUID | None = None) -> list[uuid.UUID]:
        """Claim up to `limit` due runs (of one integration when given); emit `sync.started` for those
        starting now; return their ids."""
        with transaction() as session:
            rows = sync_runs.claim_due(session, worker=self.name, now=self.clock(), lease=self.policy.lease, limit=limit,
                                       integration_id=integration_id)
            for row in rows:
                if row.claims == 1:
                    self._emit(session, row, "sync.started", "sync_run.start")
            return [row.id for row in rows]

    # -- one run --------------------------------------------------------------------------------

    def execute(self, run_id: uuid.UUID, *, stop_after_pages: int | None = None) -> str:
        """Run one claimed run to its end (or until it must wait); return what happened.

        `succeeded`, `failed`, `deferred` (back in the queue: circuit open, long Retry-After),
        `paused` (the integration was paused: back in the queue after the current page), `lost`
        (another worker holds it now) or `stopped` (`stop_after_pages` pages committed: the run
        keeps its claim and checkpoint exactly as a worker killed at that point would leave it).
        """
        counter = _Counter()
        try:
            job = self._load(run_id)
            if job is None:
                return "lost"
            request = PageRequest(job.checkpoint["url"], job.checkpoint.get("params") or {}) if job.checkpoint \
                else first_request(job.definition, job.base_url, since=job.since if job.kind == "incremental" else None)
            breaker = self.breakers.get(job.provider_id)
            pages = 0
            while request is not None:
                response = self._fetch(job, request, breaker, counter)
                following = self._store_page(job, request, response, counter)
                if following == "paused":
                    return "paused"
                request = following
                pages += 1
                if stop_after_pages is not None and pages >= stop_after_pages and request is not None:
                    return "stopped"
            self._complete(job, counter)
            return "succeeded"
        except RunDeferred as deferred:
            self._defer(run_id, deferred, counter)
            return "deferred"
        except LeaseLost:
            return "lost"
        except RunFailed as failed:
            return self._fail(run_id, failed.error_type, failed.message, counter)
        except DefinitionMismatch as mismatch:
            return self._fail(run_id, "definition_mismatch", str(mismatch), counter)
        except Exception:  # noqa: BLE001 - one run's bug must not end the worker; the log has the trace
            logger.exception("sync run %s failed unexpectedly", run_id)
            return self._fail(run_id, "internal", "The hub failed while running this sync", counter)

    def _load(self, run_id: uuid.UUID) -> _Job | None:
        with transaction() as session:
            run = sync_runs.owned(session, run_id=run_id, worker=self.name)
            if run is None:
                return None
            integration = session.get(Integration, run.integration_id)
            provider = session.get(Provider, integration.provider_id) if integration is not None else None
            definition = definitions(provider.available_entities if provider else None).get(run.entity)
            if provider is None or definition is None:
                raise RunFailed("definition_mismatch", f"The provider no longer declares a sync definition for {run.entity}")
            if not provider.api_base_url:
                raise RunFailed("definition_mismatch", "The provider declares no apiBaseUrl")
            return _Job(run.id, run.tenant_id, run.integration_id, run.owner_key, run.user_id, run.entity, run.kind,
                        run.trigger, as_utc(run.since), run.checkpoint, provider.id, provider.api_base_url.rstrip("/"), definition)

    def _fetch(self, job: _Job, request: PageRequest, breaker: pybreaker.CircuitBreaker,
               counter: _Counter) -> httpx.Response:
        """GET one page with retries (tenacity), Retry-After and the provider's breaker; the answer as an httpx.Response."""
        policy = self.policy
        backoff = tenacity.wait_random_exponential(multiplier=policy.backoff_seconds, max=policy.max_backoff_seconds)

        def wait(state: tenacity.RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            if isinstance(failure, _RateLimited) and failure.retry_after is not None:
                return failure.retry_after
            return backoff(state)

        def attempt() -> provider_api.ProviderResponse:
            try:
                return breaker.call(self._send, job, request, counter)
            except pybreaker.CircuitBreakerError:
                raise RunDeferred(policy.breaker_reset_seconds,
                                  f"The provider's circuit breaker is open after {policy.breaker_failures} failures in a row") from None

        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(policy.attempts), wait=wait, sleep=self.sleep,
                                     retry=tenacity.retry_if_exception_type((_Transient, _RateLimited)), reraise=True)
        try:
            answer = retrying(attempt)
        except _RateLimited as limited:
            raise RunFailed("rate_limited", f"The provider kept answering 429 after {policy.attempts} attempts") from limited
        except _Transient as transient:
            raise RunFailed("provider_error", f"{transient} (after {policy.attempts} attempts)") from transient
        full_url = httpx.URL(request.url, params=dict(request.params))
        return httpx.Response(answer.status, headers=answer.headers, content=answer.content,
                              request=httpx.Request("GET", full_url))

    def _send(self, job: _Job, request: PageRequest, counter: _Counter) -> provider_api.ProviderResponse:
        """One attempt: the answer when 2xx, else the exception that classifies it."""
        path = _relative(job.base_url, request.url)
        counter.requests += 1
        try:
            answer = provider_api.send(self.ctx, tenant_id=job.tenant_id, integration_id=job.integration_id,
                                       user_id=job.user_id, method="GET", path=path, params=dict(request.params),
                                       headers={"Accept": "application/json"}, timeout=self.policy.timeout_seconds)
        except provider_api.ConnectionExpired as exc:
            raise RunFailed("unauthorized", exc.message) from None
        except provider_api.NotConnected as exc:
            raise RunFailed("not_connected", exc.message) from None
        except provider_api.CredentialsRejected as exc:
            raise RunFailed("unauthorized", exc.message) from None
        except provider_api.ProviderUnreachable as exc:  # timeouts included
            raise _Transient(exc.message) from None
        except provider_api.ProviderCallFailed as exc:  # the SSRF guard, an oversized answer
            raise RunFailed("provider_error", exc.message) from None
        except NotFound as exc:
            raise RunFailed("not_connected", exc.message) from None
        if answer.status == 429:
            retry_after = answer.retry_after()
            if retry_after is not None and retry_after > self.policy.max_retry_after_seconds:
                raise RunDeferred(retry_after, f"The provider asked to wait {retry_after:g} s (429)")
            raise _RateLimited(retry_after)
        if answer.status >= 500:
            raise _Transient(f"The provider answered {answer.status}", status=answer.status)
        if not answer.ok:
            raise RunFailed("provider_error", f"The provider answered {answer.status} to GET {path}")
        return answer

    def _store_page(self, job: _Job, request: PageRequest, response: httpx.Response,
                    counter: _Counter) -> PageRequest | None | str:
        """Commit one page (records, counters, checkpoint) under the claim; return the next request, None, or "paused"."""
        definition = job.definition
        try:
            body = response.json()
        except ValueError:
            raise DefinitionMismatch(f"{definition.entity}: the provider's answer is not JSON") from None
        raw = extract_items(definition, body)
        following = next_request(definition, request, response, raw)
        items = [records.Item(external_id=item_id(definition, item), data=item,
                              provider_updated_at=parse_updated_at(definition, item), deleted=is_deleted(definition, item))
                 for item in raw]
        newest = max((item.provider_updated_at for item in items if item.provider_updated_at), default=None)
        now = self.clock()
        with transaction() as session:
            run = sync_runs.owned(session, run_id=job.run_id, worker=self.name)
            if run is None:
                raise LeaseLost()
            changed: list[str] = []
            counts = {"added": 0, "updated": 0, "deleted": 0}
            if items:
                changes = records.upsert(session, tenant_id=job.tenant_id, integration_id=job.integration_id,
                                         owner_key=job.owner_key, user_id=job.user_id, entity=job.entity, items=items,
                                         now=now, seen_run_id=run.id if job.kind == "full" else None)
                counts = changes.counts()
                changed = [str(row.id) for row in changes.changed()]
            checkpoint = {"url": following.url, "params": dict(following.params)} if following is not None else None
            sync_runs.record_page(session, run, counts=counts, changed_ids=changed, requests=counter.take(),
                                  checkpoint=checkpoint, max_seen=newest, now=now, lease=self.policy.lease)
            if following is not None and sync_runs.is_paused(session, integration_id=job.integration_id):
                sync_runs.release(session, run, requests=0, next_attempt_at=now, now=now)
                return "paused"
        return following

    def _complete(self, job: _Job, counter: _Counter) -> None:
        """Finish a run whose every page is stored: tombstone the unseen (full runs), advance the state, emit."""
        now = self.clock()
        with transaction() as session:
            run = sync_runs.owned(session, run_id=job.run_id, worker=self.name)
            if run is None:
                raise LeaseLost()
            if job.kind == "full":
                gone = records.tombstone_unseen(session, tenant_id=job.tenant_id, integration_id=job.integration_id,
                                                owner_key=job.owner_key, entity=job.entity, run_id=run.id, now=now)
                sync_runs.record_deletions(session, run, count=len(gone.deleted),
                                           changed_ids=[str(row.id) for row in gone.deleted])
            sync_runs.finish(session, run, succeeded=True, requests=counter.take(), error_type=None, error_message=None,
                             now=now)
            self._emit_changes(session, run)
            self._emit(session, run, "sync.succeeded", "sync_run.succeed")

    def _fail(self, run_id: uuid.UUID, error_type: str, message: str, counter: _Counter) -> str:
        """Finish the run as failed (nothing is tombstoned); emit `records.changed` for what its pages changed."""
        with transaction() as session:
            run = sync_runs.owned(session, run_id=run_id, worker=self.name)
            if run is None:
                return "lost"
            sync_runs.finish(session, run, succeeded=False, requests=counter.take(), error_type=error_type,
                             error_message=message, now=self.clock())
            self._emit_changes(session, run)
            self._emit(session, run, "sync.failed", "sync_run.fail", outcome="failure")
        return "failed"

    def _defer(self, run_id: uuid.UUID, deferred: RunDeferred, counter: _Counter) -> None:
        now = self.clock()
        with transaction() as session:
            run = sync_runs.owned(session, run_id=run_id, worker=self.name)
            if run is not None:
                sync_runs.release(session, run, requests=counter.take(),
                                  next_attempt_at=now + timedelta(seconds=deferred.seconds), now=now)
        logger.info("sync run %s deferred %.0f s: %s", run_id, deferred.seconds, deferred)

    def _emit(self, session, run: SyncRun, event_type: str, action: str, outcome: str = "success") -> None:
        events.record_change(session, tenant_id=run.tenant_id, actor=self.system(run.tenant_id), action=action,
                             resource_type="sync_run", resource_id=run.id, event_type=event_type,
                             data=sync_runs.run_view(run), outcome=outcome,
                             changes={"entity": run.entity, "kind": run.kind, "trigger": run.trigger})

    def _emit_changes(self, session, run: SyncRun) -> None:
        # One `records.changed` per run and entity, with the run's totals: nothing when nothing changed.
        if not (run.added or run.updated or run.deleted):
            return
        data = {"integrationId": str(run.integration_id), "entity": run.entity, "trigger": run.trigger,
                "runId": str(run.id), "added": run.added, "updated": run.updated, "deleted": run.deleted,
                "recordIds": list(run.changed_ids or [])[:sync_runs.MAX_CHANGED_IDS]}
        events.record_change(session, tenant_id=run.tenant_id, actor=self.system(run.tenant_id), action="records.sync",
                             resource_type="integration", resource_id=run.integration_id, event_type="records.changed",
                             data=data, changes={"runId": str(run.id), "entity": run.entity})


def _relative(base_url: str, url: str) -> str:
    """`url` as a path under `base_url` (what provider_api.send takes); DefinitionMismatch when it is not under it."""
    if url == base_url or url.startswith(base_url + "/"):
        return url[len(base_url):] or "/"
    raise DefinitionMismatch("a page URL left the provider's apiBaseUrl")


def schedule_due(*, now: datetime) -> int:
    """Queue a `schedule` run for every due entity of every integration with scheduled runs on; return how many.

    Due: the entity's `next_run_at` passed (or never planned) and no run of it is live. A full
    refresh is chosen when the last one is 24 h old (`sync_runs.queue`). Safe with several
    workers: a duplicate insert loses to the unique live-run key and is skipped.
    """
    queued = 0
    with transaction() as session:
        scheduled = sync_runs.scheduled_integrations(session)
    for settings in scheduled:
        with transaction() as session:
            for owner, entity, definition in sync_runs.due_entities(session, settings=settings, now=now):
                run = sync_runs.queue(session, tenant_id=settings.tenant_id, integration_id=settings.integration_id,
                                      owner=owner, entity=entity, definition=definition, full_refresh=False,
                                      trigger="schedule", now=now)
                sync_runs.plan_next(session, run=run, frequency_seconds=settings.frequency_seconds, now=now)
                queued += 1
    return queued

