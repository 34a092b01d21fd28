"""Shared set-up of the sync tests: a small sandbox of their own, a provider whose entities read every
paging style the sandbox serves, a connected integration, and a runner that executes that
integration's runs (real HTTP to the sandbox, real database)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlmodel import select

from connectors.sync_runner import SyncPolicy, SyncRunner
from persistence.db import transaction
from persistence.models import Record, SyncRun, utcnow
from tests import factories
from tests.records_support import connected_integration, flows

BASE = "/api/v1/tenant/integrations"
ACCOUNTS = 25  # the sandbox generates twice as many contacts
PAGE = 10
STYLES = {  # entity name -> (path, paging, itemsPath): one per paging style of connectors/sandbox/styles.py
    "Account": ("/accounts", {"type": "cursor", "cursorParam": "cursor", "limitParam": "limit", "pageSize": PAGE,
                              "nextCursorPath": "nextCursor"}, "data"),
    "Contact": ("/contacts", {"type": "cursor", "cursorParam": "cursor", "limitParam": "limit", "pageSize": PAGE,
                              "nextCursorPath": "nextCursor"}, "data"),
    "OffsetAccount": ("/paged/offset/accounts", {"type": "offset", "offsetParam": "offset", "limitParam": "limit",
                                                 "pageSize": PAGE}, "data"),
    "PageAccount": ("/paged/page/accounts", {"type": "page", "pageParam": "page", "limitParam": "per_page",
                                             "pageSize": PAGE}, "result.items"),
    "LinkAccount": ("/paged/link_header/accounts", {"type": "link_header", "limitParam": "limit", "pageSize": PAGE}, ""),
    "LastIdAccount": ("/paged/last_id/accounts", {"type": "cursor", "cursorParam": "starting_after", "limitParam": "limit",
                                                  "pageSize": PAGE, "nextCursorItemField": "id",
                                                  "hasMorePath": "has_more"}, "data"),
    "NoneAccount": ("/paged/none/accounts", {"type": "none"}, "records"),
}


def entity(name: str) -> dict:
    """The `availableEntities` item of `name`: its list path and paging style, changed-since, soft deletes."""
    path, paging, items_path = STYLES[name]
    return {"name": name, "displayName": name, "fields": [{"name": "name", "type": "string"}],
            "sync": {"path": path, "itemsPath": items_path, "idField": "id", "updatedAtField": "updatedAt",
                     "deletedField": "deleted", "paging": paging,
                     "incremental": {"param": "updated_since", "format": "rfc3339"}}}


@pytest.fixture(scope="module")
def sync_sandbox(settings) -> Iterator:
    """A sandbox of this module's own with 25 accounts and 50 contacts (its faults and writes stay here)."""
    from connectors.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(redirect_uris=[settings.oauth_redirect_uri], records=ACCOUNTS,
                                         rate_limit_per_minute=100_000)).start()
    yield server
    server.stop()


@pytest.fixture
def clean_sandbox(sync_sandbox):
    """The module's sandbox with no fault plan before and after the test.

    It first waits out any request of an earlier test still sleeping that test's latency: counted
    under the new plan, a straggler could take the fault this test expects for itself.
    """
    assert sync_sandbox.state.faults.wait_until_idle(30), "a sandbox request of an earlier test never finished"
    sync_sandbox.state.faults.configure(type(sync_sandbox.state.faults.faults)())
    yield sync_sandbox
    sync_sandbox.state.faults.configure(type(sync_sandbox.state.faults.faults)())


def sync_provider(client, super_admin, sandbox, **overrides) -> dict:
    """A provider (OAuth at the sandbox) with one entity per paging style."""
    fields = factories.sandbox_provider_fields(sandbox.base_url, availableEntities=[entity(n) for n in STYLES],
                                               capabilities=["read", "sync"])
    return factories.create_provider(client, super_admin, **(fields | overrides))


@pytest.fixture
def synced(client, super_admin, tenant_admin, clean_sandbox) -> Iterator[dict]:
    """A connected integration of `tenant_admin`'s tenant on the sync provider; its runs are drained afterwards."""
    integration = connected_integration(client, tenant_admin, sync_provider(client, super_admin, clean_sandbox))
    yield integration
    clean_sandbox.state.faults.configure(type(clean_sandbox.state.faults.faults)())
    finish_all(integration["id"])


def runner(*, clock=utcnow, name: str | None = None, **policy) -> SyncRunner:
    """A runner with quick retries (no real backoff waits) and the running app's outbound policy."""
    values = dict(lease_seconds=60, attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.05,
                  max_retry_after_seconds=5, breaker_failures=50, breaker_reset_seconds=60) | policy
    return SyncRunner(flows(), SyncPolicy(**values), name=name or f"test-{uuid.uuid4().hex[:8]}", clock=clock)


def drain(integration_id: str, run: SyncRunner | None = None) -> list[str]:
    """Claim and execute the integration's due runs until none is due; return the outcomes."""
    run = run or runner()
    outcomes = []
    while ids := run.claim(10, integration_id=uuid.UUID(integration_id)):
        outcomes += [run.execute(run_id) for run_id in ids]
    return outcomes


def finish_all(integration_id: str) -> None:
    """Fail whatever run of the integration is still live, so no later worker picks it up."""
    with transaction() as session:
        for row in session.exec(select(SyncRun).where(SyncRun.integration_id == uuid.UUID(integration_id),
                                                      SyncRun.active_key.is_not(None))):
            row.status, row.active_key, row.claimed_by, row.claimed_until = "failed", None, None, None
            row.error_type, row.error_message = "internal", "left over by a test"
            session.add(row)


def start(client, admin, integration: dict, **body) -> list[dict]:
    """POST .../sync and return the queued runs (asserting 202)."""
    response = client.post(f"{BASE}/{integration['id']}/sync", json=body, headers=admin.headers)
    assert response.status_code == 202, response.text
    return response.json()["runs"]


def sync_now(client, admin, integration: dict, **body) -> list[dict]:
    """Queue runs, drain them, and return them as the runs log shows them now."""
    runs = start(client, admin, integration, **body)
    drain(integration["id"])
    return [run_of(client, admin, integration, r["id"]) for r in runs]


def run_of(client, admin, integration: dict, run_id: str) -> dict:
    """One run as GET .../sync-runs shows it."""
    response = client.get(f"{BASE}/{integration['id']}/sync-runs", params={"limit": 100}, headers=admin.headers)
    assert response.status_code == 200, response.text
    return next(r for r in response.json()["items"] if r["id"] == run_id)


def stored(integration: dict, entity_name: str, *, live_only: bool = True) -> dict[str, Record]:
    """The integration's records of one entity by external id (live ones unless `live_only` is False)."""
    with transaction() as session:
        stmt = select(Record).where(Record.integration_id == uuid.UUID(integration["id"]), Record.entity == entity_name)
        if live_only:
            stmt = stmt.where(Record.deleted_at.is_(None))
        return {row.external_id: row for row in session.exec(stmt)}


def sandbox_ids(sandbox, kind: str) -> set[str]:
    """The ids of the sandbox's live `kind` records."""
    return {r["id"] for r in sandbox.state.listable(kind, include_deleted=False)}


def later(seconds: float):
    """A clock `seconds` ahead of real time."""
    from datetime import timedelta

    return lambda: utcnow() + timedelta(seconds=seconds)


def moment(text: str) -> datetime:
    """An aware datetime from RFC 3339 text."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
