"""`./scripts/bench --only sync`: the data side against the sandbox provider, on SQLite.

Targets (issue 14, section 8), on the bench machine:
- full-sync ingestion from the sandbox: >= 2,000 records/s (a full run of every Account and
  Contact: paging over real HTTP, upserting each page in one transaction with its checkpoint);
- an incremental sync after 1 % of the records changed costs <= 5 % of the full one (wall time);
- the records API's deep page is flat at 1M records: `GET .../records` after a cursor near the
  end costs <= 1.5x the first page (median of many calls, in-process through the whole app);
- webhook received -> record updated: p50 <= 200 ms (the sandbox POSTs its signed change
  notification to the hub served over TCP; measured from the hub's receipt of the notification
  to the record's change, both stamped by the hub);
- what the search index costs a synced record (issue 15): the same full run into an integration
  with search on its entities vs one without, alternated: <= 30 % more time.

The sandbox runs in its own process (a provider is another machine: its serving cost is not
the hub's), with its rate limit lifted. The hub runs in this process: the runs execute on this
thread through `connectors.sync_runner.SyncRunner` exactly as the worker's threads do.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx

from benchlib.asgi import AsgiClient
from benchlib.fixture import ROOT, BenchEnv, prepare

TARGETS = {"records_per_s": 2000, "incremental_share_pct": 5, "deep_page_ratio": 1.5, "webhook_p50_ms": 200,
           "index_cost_pct": 30}
_SANDBOX = """
import sys, time
from connectors.sandbox import SandboxConfig, SandboxServer
server = SandboxServer(SandboxConfig(records=int(sys.argv[2]), rate_limit_per_minute=10**9), port=int(sys.argv[1]))
server.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def _free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _sandbox(records: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", _SANDBOX, str(port), str(records)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the sandbox did not start")
    return process, f"http://127.0.0.1:{port}"


def _settings(env: BenchEnv, **extra):
    return env.settings().model_copy(update={"hub_env": "development", "outbound_allowlist": "127.0.0.1", **extra})


def _integration(tenant_id: uuid.UUID, base_url: str, *, search: bool = False):
    """A provider of the sandbox (API key; the bundled sync definitions and notification declaration) and a
    connected integration of the tenant (with search on its Account and Contact when `search`); returns it."""
    from persistence import bootstrap, connections, providers
    from persistence.db import transaction
    from persistence.models import Integration

    document = next(d for d in bootstrap.sandbox_documents(base_url, client_id="bench", client_secret="bench")
                    if d["authType"] == "api_key")
    with transaction() as session:
        columns = providers.document_columns({**document, "provider": f"bench_sync_{uuid.uuid4().hex[:8]}"})
        provider = providers.create(session, fields=columns)
        integration = Integration(tenant_id=tenant_id, provider_id=provider.id, name=f"bench {uuid.uuid4().hex[:8]}",
                                  status="pending", search_enabled=search,
                                  searchable_entities=["Account", "Contact"] if search else [])
        session.add(integration)
        session.flush()
        connections.store(session, integration=integration, user_id=None, auth_type="api_key",
                          credentials={"apiKey": "sandbox-api-key"})
        return integration


def _run(runner, integration_id: uuid.UUID, *, full: bool) -> dict:
    """Queue one run per entity (manual), execute them on this thread; return seconds and counts."""
    from persistence import sync_runs
    from persistence.db import transaction
    from persistence.models import Integration, SyncRun, utcnow

    with transaction() as session:
        integration = session.get(Integration, integration_id)
        runs = sync_runs.request_runs(session, tenant_id=integration.tenant_id, integration_id=integration_id,
                                      entities=None, full_refresh=full, trigger="manual", now=utcnow())
        ids = [run.id for run in runs]
    started = time.perf_counter()
    outcomes = []
    while claimed := runner.claim(10, integration_id=integration_id):
        outcomes += [runner.execute(run_id) for run_id in claimed]
    seconds = time.perf_counter() - started
    with transaction() as session:
        rows = [session.get(SyncRun, run_id) for run_id in ids]
        summary = {"seconds": seconds, "outcomes": outcomes, "kinds": sorted({row.kind for row in rows}),
                   "added": sum(row.added for row in rows), "updated": sum(row.updated for row in rows),
                   "deleted": sum(row.deleted for row in rows), "pages": sum(row.pages for row in rows),
                   "requests": sum(row.requests for row in rows)}
    if set(outcomes) != {"succeeded"}:
        raise RuntimeError(f"sync runs did not all succeed: {outcomes}")
    return summary


def _documents(integration_id: uuid.UUID) -> int:
    """How many search documents the integration's records have."""
    import sqlalchemy as sa

    from persistence.db import transaction
    from persistence.models import SearchDocument

    with transaction() as session:
        return session.execute(sa.select(sa.func.count()).where(SearchDocument.integration_id == integration_id)).scalar()


def _change(base_url: str, count: int, total_accounts: int) -> None:
    """PATCH `count` contacts at the sandbox (spread over the dataset), bumping their `updatedAt`."""
    step = max(1, (2 * total_accounts) // count)
    with httpx.Client(base_url=base_url, headers={"X-API-Key": "sandbox-api-key"}, timeout=10) as client:
        for n in range(count):
            record_id = f"con_{(n * step) % (2 * total_accounts) + 1:04d}"
            response = client.patch(f"/contacts/{record_id}", json={"firstName": f"Bench{n}"})
            if response.status_code != 200:
                raise RuntimeError(f"sandbox PATCH {record_id}: {response.status_code} {response.text[:200]}")


def _bulk_records(integration, count: int, log) -> None:
    """Insert `count` synthetic records of one entity straight into the store (the deep-page measurement)."""
    from persistence import db
    from persistence.models import Record, RecordSequence

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    table = Record.__table__
    batch = 20_000
    with db.engine().begin() as conn:
        for start in range(0, count, batch):
            rows = [{"id": uuid.uuid4(), "tenant_id": integration.tenant_id, "integration_id": integration.id,
                     "owner_key": "tenant", "user_id": None, "entity": "Contact", "external_id": f"c{n}",
                     "data": {"id": f"c{n}", "email": f"person{n}@example.com", "firstName": "Ada"},
                     "content_hash": f"{n:064x}", "provider_updated_at": now + timedelta(seconds=n),
                     "first_seen_at": now, "last_modified_at": now + timedelta(seconds=n), "last_action": "added",
                     "deleted_at": None, "seq": n + 1, "last_seen_run_id": None}
                    for n in range(start, min(count, start + batch))]
            conn.execute(table.insert(), rows)
            if (start // batch) % 10 == 0:
                log(f"  {start + len(rows):,} records loaded")
        conn.execute(RecordSequence.__table__.insert(), [{"integration_id": integration.id, "value": count}])


async def _page_times(app, account, integration_id: uuid.UUID, cursor: str, samples: int) -> tuple[list, list]:
    """Milliseconds of `GET .../records?limit=100` for the first page and after `cursor`, calls interleaved."""
    path = f"/api/v1/tenant/integrations/{integration_id}/records"
    queries = ("limit=100", f"limit=100&cursor={cursor}")
    times: tuple[list, list] = ([], [])
    async with AsgiClient(app) as client:
        for query in queries * 5:  # warm both
            await client.request("GET", path, query=query, headers=account.headers)
        for _ in range(samples):
            for index, query in enumerate(queries):
                started = time.perf_counter()
                status, body = await client.request("GET", path, query=query, headers=account.headers)
                times[index].append((time.perf_counter() - started) * 1000)
                if status != 200:
                    raise RuntimeError(f"GET records: {status} {body[:300]}")
    return times


def _serve(app) -> tuple[object, int]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           lifespan="on"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, port


def _webhook_latencies(env: BenchEnv, account, base_url: str, samples: int, log) -> list[float]:
    """Serve the hub over TCP with its incoming-webhook worker; PATCH contacts at the sandbox one by one and
    measure, per change, the hub's receipt of the notification to the record's update (ms)."""
    from sqlmodel import select

    from persistence.db import transaction
    from persistence.models import IncomingWebhook, Record
    from server import incoming_worker
    from server.app import create_app

    settings = _settings(env, hub_public_url="")
    integration = _integration(account.tenant_id, base_url)
    runner = _runner(settings)
    _run(runner, integration.id, full=True)  # the records exist before their changes are notified
    app = create_app(settings)
    server, port = _serve(app)
    worker = incoming_worker.start(settings)
    latencies: list[float] = []
    try:
        secret = httpx.post(f"http://127.0.0.1:{port}/api/v1/tenant/integrations/{integration.id}/webhook-secret",
                            headers={k.decode(): v.decode() for k, v in account.headers}, json={}, timeout=10)
        if secret.status_code != 200:
            raise RuntimeError(f"webhook-secret: {secret.status_code} {secret.text[:300]}")
        url = f"http://127.0.0.1:{port}/api/v1/webhooks/incoming/{integration.id}"
        registered = httpx.post(f"{base_url}/_control/webhooks", json={"url": url, "secret": secret.json()["secret"]},
                                timeout=10)
        if registered.status_code not in (200, 201):
            raise RuntimeError(f"sandbox /_control/webhooks: {registered.status_code} {registered.text[:300]}")
        with httpx.Client(base_url=base_url, headers={"X-API-Key": "sandbox-api-key"}, timeout=10) as client:
            for n in range(samples):
                record_id = f"con_{n % 200 + 1:04d}"
                marker = f"Hook{n}-{uuid.uuid4().hex[:6]}"
                response = client.patch(f"/contacts/{record_id}", json={"firstName": marker})
                if response.status_code != 200:
                    raise RuntimeError(f"sandbox PATCH: {response.status_code}")
                deadline = time.monotonic() + 10
                while True:
                    with transaction() as session:
                        row = session.exec(select(Record).where(
                            Record.integration_id == integration.id, Record.external_id == record_id)).first()
                        if row is not None and row.data.get("firstName") == marker:
                            hook = session.exec(select(IncomingWebhook).where(
                                IncomingWebhook.integration_id == integration.id)
                                .order_by(IncomingWebhook.received_at.desc())).first()
                            received = hook.received_at.replace(tzinfo=timezone.utc) \
                                if hook.received_at.tzinfo is None else hook.received_at
                            changed = row.last_modified_at.replace(tzinfo=timezone.utc) \
                                if row.last_modified_at.tzinfo is None else row.last_modified_at
                            latencies.append((changed - received).total_seconds() * 1000)
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"change {n} of {record_id} never arrived by webhook")
                    time.sleep(0.005)
        log(f"  {len(latencies)} notifications: p50 {statistics.median(latencies):.1f} ms")
    finally:
        worker.stop()
        server.should_exit = True
    return latencies


def _runner(settings):
    from connectors.outbound import OutboundPolicy
    from connectors.sync_runner import SyncRunner
    from server.sync_worker import flow_context, policy_of

    outbound = OutboundPolicy(allowlist=settings.outbound_allowed, timeout=settings.outbound_timeout_seconds)
    return SyncRunner(flow_context(settings, outbound), policy_of(settings), name=f"bench-{uuid.uuid4().hex[:6]}")


def _ingest(runner, tenant_id: uuid.UUID, base_url: str, accounts: int, figures: dict, log):
    """The full-sync ingestion measurement: a full run of every entity into a new connected integration.

    Adds `full` (the run's seconds and counts) and `records_per_s` (records added / wall seconds)
    to `figures`; returns the integration (the later measurements reuse it and its records) and the
    run's unrounded summary.
    """
    integration = _integration(tenant_id, base_url)
    log(f"Sync: full run of {3 * accounts:,} records (accounts and contacts) from the sandbox ...")
    full = _run(runner, integration.id, full=True)
    figures["full"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in full.items()}
    figures["records_per_s"] = round(full["added"] / full["seconds"], 1)
    log(f"  {full['added']:,} records in {full['seconds']:.2f} s: {figures['records_per_s']:,} records/s "
        f"({full['pages']} pages, {full['requests']} requests)")
    return integration, full


def measure_ingestion(env: BenchEnv, *, accounts: int, log) -> dict:
    """Full-sync ingestion alone on a fresh SQLite database under `env` (the main bench's capabilities phase).

    `accounts`: the sandbox's dataset size (3 records each: the account and two contacts). Returns
    {"sandbox_accounts", "sandbox_records", "full", "records_per_s"}; raises RuntimeError when a run fails.
    """
    fixture = prepare(env, providers=1, accounts=1)
    sandbox, base_url = _sandbox(accounts)
    figures: dict = {"sandbox_accounts": accounts, "sandbox_records": 3 * accounts}
    try:
        _ingest(_runner(_settings(env)), fixture.take().tenant_id, base_url, accounts, figures, log)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    return figures


def measure(env: BenchEnv, *, accounts: int, deep_records: int, page_samples: int, webhook_samples: int,
            log) -> dict:
    """Run the four measurements on a fresh SQLite database under `env`; return the figures and targets."""
    from handlers.views import encode_record_cursor
    from server.app import create_app

    fixture = prepare(env, providers=1, accounts=3)
    account = fixture.take()
    settings = _settings(env)
    sandbox, base_url = _sandbox(accounts)
    figures: dict = {"sandbox_accounts": accounts, "sandbox_records": 3 * accounts}
    try:
        runner = _runner(settings)
        integration, full = _ingest(runner, account.tenant_id, base_url, accounts, figures, log)

        log("Sync: the same full run into integrations with and without search, alternated (indexing cost) ...")
        spent: dict[str, list[float]] = {"on": [], "off": []}
        for round_ in range(2):
            for label in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
                target = _integration(account.tenant_id, base_url, search=label == "on")
                spent[label].append(_run(runner, target.id, full=True)["seconds"])
                if label == "on" and _documents(target.id) != 3 * accounts:
                    raise RuntimeError(f"the search index holds {_documents(target.id)} documents, not {3 * accounts}")
        on_s, off_s = statistics.median(spent["on"]), statistics.median(spent["off"])
        figures["index_cost"] = {"seconds_search_off": round(off_s, 3), "seconds_search_on": round(on_s, 3),
                                 "share_pct": round(100 * (on_s / off_s - 1), 1)}
        figures["index_cost_pct"] = figures["index_cost"]["share_pct"]
        log(f"  full run {off_s:.2f} s without the index, {on_s:.2f} s with it: +{figures['index_cost_pct']} %")

        changed = max(1, (3 * accounts) // 100)
        log(f"Sync: {changed} contacts changed at the sandbox (1 %), then an incremental run ...")
        _change(base_url, changed, accounts)
        incremental = _run(runner, integration.id, full=False)
        figures["incremental"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in incremental.items()}
        figures["incremental_share_pct"] = round(100 * incremental["seconds"] / full["seconds"], 2)
        log(f"  {incremental['kinds']} run: {incremental['updated']} updated in {incremental['seconds']:.3f} s = "
            f"{figures['incremental_share_pct']} % of the full run")

        log(f"Records API: {deep_records:,} records in one integration, first page vs a deep page ...")
        deep = _integration(account.tenant_id, base_url)
        _bulk_records(deep, deep_records, log)
        app = create_app(env.settings())
        figures["deep_records"] = deep_records
        cursor = encode_record_cursor(deep_records - 150)
        first, deep_times = asyncio.run(_page_times(app, account, deep.id, cursor, page_samples))
        figures["first_page_ms_p50"] = round(statistics.median(first), 2)
        figures["deep_page_ms_p50"] = round(statistics.median(deep_times), 2)
        figures["deep_page_ratio"] = round(figures["deep_page_ms_p50"] / figures["first_page_ms_p50"], 2)
        log(f"  first page p50 {figures['first_page_ms_p50']} ms, deep page p50 {figures['deep_page_ms_p50']} ms "
            f"(x{figures['deep_page_ratio']})")

        log(f"Incoming webhooks: {webhook_samples} changes at the sandbox, each notified to the hub over TCP ...")
        latencies = _webhook_latencies(env, fixture.take(), base_url, webhook_samples, log)
        figures["webhook_p50_ms"] = round(statistics.median(latencies), 1)
        figures["webhook_p95_ms"] = round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 1)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    figures["targets"] = {
        "records_per_s": "PASS" if figures["records_per_s"] >= TARGETS["records_per_s"] else "MISS",
        "incremental_share_pct": "PASS" if figures["incremental_share_pct"] <= TARGETS["incremental_share_pct"]
        else "MISS",
        "deep_page_ratio": "PASS" if figures["deep_page_ratio"] <= TARGETS["deep_page_ratio"] else "MISS",
        "webhook_p50_ms": "PASS" if figures["webhook_p50_ms"] <= TARGETS["webhook_p50_ms"] else "MISS",
        "index_cost_pct": "PASS" if figures["index_cost_pct"] <= TARGETS["index_cost_pct"] else "MISS",
    }
    return figures


def table(figures: dict) -> str:
    """The figures as the bench prints them."""
    t = figures["targets"]
    return "\n".join([
        f"Sync (SQLite; sandbox in its own process, {figures['sandbox_records']:,} records):",
        f"  full-sync ingestion {figures['records_per_s']:,} records/s (target >= {TARGETS['records_per_s']:,}: "
        f"{t['records_per_s']}); {figures['full']['pages']} pages, {figures['full']['seconds']} s",
        f"  incremental, 1 % changed: {figures['incremental']['seconds']} s = {figures['incremental_share_pct']} % "
        f"of the full run (target <= {TARGETS['incremental_share_pct']} %: {t['incremental_share_pct']})",
        f"  records API at {figures.get('deep_records', 0):,} records: first page p50 {figures['first_page_ms_p50']} "
        f"ms, deep page p50 {figures['deep_page_ms_p50']} ms = x{figures['deep_page_ratio']} "
        f"(target <= {TARGETS['deep_page_ratio']}: {t['deep_page_ratio']})",
        f"  search index: a full sync with it costs +{figures['index_cost_pct']} % over one without "
        f"(target <= {TARGETS['index_cost_pct']} %: {t['index_cost_pct']})",
        f"  webhook received -> record updated p50 {figures['webhook_p50_ms']} ms, p95 {figures['webhook_p95_ms']} ms "
        f"(target p50 <= {TARGETS['webhook_p50_ms']}: {t['webhook_p50_ms']})",
    ])
