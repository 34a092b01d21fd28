"""Cost growth: first and deep page of the catalog (by offset and by cursor) and of the audit
log (cursor) as the tables grow to 10k, 100k and 1M rows, measured in-process against the hub
(wall time). A deep cursor page starts 100 rows before the end, minted with the hub's own codec.

Rows beyond the initial catalog are clones of a lean provider (no description, small JSON),
and audit entries are clones of one real entry, one second apart, all in one tenant.
"""

from __future__ import annotations

import statistics
import time
import uuid

from benchlib import bulk
from benchlib.asgi import AsgiClient
from benchlib.fixture import Account, Fixture, grow_catalog

SIZES = (10_000, 100_000, 1_000_000)
AUDIT_SAMPLES = 30


def _catalog_samples(size: int) -> int:
    # Every offset page counts the catalog (~0.1 s at 1M rows on SQLite, walking an index) and a
    # deep one steps over `offset` index entries. Keep the bench short.
    return 5 if size <= 10_000 else 3


def _lean_provider() -> str:
    from persistence import providers
    from persistence.db import transaction

    with transaction() as session:
        return providers.create(session, fields={
            "provider": "bench_lean", "name": "Bench Lean", "display_name": "Bench Lean", "category": "crm", "status": "active",
            "audience": "tenant", "capabilities": ["read"], "supported_sync_directions": ["pull"], "auth_type": "api_key",
            "icon": "https://example.com/icon.svg", "color": "#336699", "version": "1.0.0"}).id.hex


def _audit_template(account: Account) -> tuple[str, str]:
    from persistence import audit
    from persistence.db import transaction

    actor = audit.Actor(user_id=account.user_id, role="tenant_admin", tenant_id=account.tenant_id,
                        request_id="req_bench", ip="127.0.0.1")
    with transaction() as session:
        entry = audit.record(session, tenant_id=account.tenant_id, actor=actor, action="integration.create",
                             resource_type="integration", resource_id=uuid.uuid4(),
                             changes={"name": "Sales CRM", "searchEnabled": True})
        session.flush()
        return entry.id.hex, entry.chain


def _deep_cursor(chain: str, seq: int) -> str:
    from sqlmodel import select

    from handlers.keyset_cursor import encode  # the hub's own cursor format
    from persistence.db import transaction
    from persistence.models import AuditEntry

    with transaction() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.chain == chain, AuditEntry.seq == seq)).one()
        return encode(entry.created_at, entry.id)


def _deep_catalog_cursor(visible: int) -> str:
    from handlers.catalog_cursor import Listing  # the hub's own cursor format
    from persistence import providers
    from persistence.db import transaction

    position = max(0, visible - 101)  # the next page starts 100 rows before the end, like the audit one
    with transaction() as session:
        page = providers.list_page(session, limit=1, offset=position, status="active", audience="tenant")
        return Listing(category=None, search=None, sort_by="name", sort_order="asc").encode(
            page.items[0], offset=position + 1, total=page.total)


async def _latency_ms(client: AsgiClient, account: Account, path: str, query: str, samples: int,
                      warmup: int = 0) -> dict:
    times = []
    for i in range(warmup + samples):
        started = time.perf_counter()
        status, body = await client.request("GET", path, query=query, headers=account.headers)
        elapsed = (time.perf_counter() - started) * 1e3
        if status != 200:
            raise RuntimeError(f"{path}?{query[:80]}: {status} {body[:300]!r}")
        if i >= warmup:
            times.append(elapsed)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "samples": samples}


async def measure(client: AsgiClient, fixture: Fixture, *, sizes=SIZES, log=print) -> dict:
    """Return {"sizes": [...], "catalog": {"first", "deep", "deep_cursor"}, "audit": {"first", "deep"}}.

    Each holds one entry per size; catalog "deep" is an offset page, "deep_cursor" a cursor page,
    both 50 to 100 rows before the end.
    """
    env, account = fixture.env, fixture.take()
    lean = _lean_provider()
    template, chain = _audit_template(account)
    audit_rows = 1
    out = {"sizes": [], "catalog": {"first": [], "deep": [], "deep_cursor": []}, "audit": {"first": [], "deep": []}}
    for size in sizes:
        started = time.perf_counter()
        visible = grow_catalog(env, size, template=lean)
        if size > audit_rows:
            bulk.clone(env.db_path, "audit_entries", template_id=template, start=audit_rows, count=size - audit_rows,
                       overrides={"id": bulk.NEW_ID, "seq": "t.seq + n",
                                  "created_at": "strftime('%Y-%m-%d %H:%M:%S', t.created_at, '-' || n || ' seconds')"
                                                " || substr(t.created_at, 20)"})
            audit_rows = size
        log(f"  growth: {visible} catalog rows, {audit_rows} audit rows ({time.perf_counter() - started:.1f} s to generate)")
        k = _catalog_samples(visible)
        out["sizes"].append({"catalog_rows": visible, "audit_rows": audit_rows})
        out["catalog"]["first"].append(await _latency_ms(client, account, "/api/v1/integrations", "limit=50&offset=0", k))
        out["catalog"]["deep"].append(await _latency_ms(client, account, "/api/v1/integrations",
                                                        f"limit=50&offset={max(0, visible - 50)}", k))
        out["catalog"]["deep_cursor"].append(await _latency_ms(client, account, "/api/v1/integrations",
                                                               f"limit=50&cursor={_deep_catalog_cursor(visible)}",
                                                               AUDIT_SAMPLES, warmup=3))
        out["audit"]["first"].append(await _latency_ms(client, account, "/api/v1/tenant/audit-logs", "limit=50",
                                                       AUDIT_SAMPLES, warmup=3))
        cursor = _deep_cursor(chain, max(2, audit_rows - 100))
        out["audit"]["deep"].append(await _latency_ms(client, account, "/api/v1/tenant/audit-logs",
                                                      f"limit=50&cursor={cursor}", AUDIT_SAMPLES, warmup=3))
        for table in ("catalog", "audit"):
            first, deep = out[table]["first"][-1], out[table]["deep"][-1]
            cursor = f", deep by cursor {out[table]['deep_cursor'][-1]['median_ms']:9.1f} ms" if table == "catalog" else ""
            log(f"  growth {table:<7} at {size:>9,}: first {first['median_ms']:9.1f} ms, deep {deep['median_ms']:9.1f} ms"
                f"{cursor}")
    return out
