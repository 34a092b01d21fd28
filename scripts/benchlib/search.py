"""`./scripts/bench --only search`: search latency at 100k and 1M records, and what indexing costs a synced record.

For each database (SQLite file; PostgreSQL: a throwaway cluster from tests/pg_cluster.py, or
`--pg-url`), one integration with search on is filled with synthetic contacts (name title,
e-mail, company and a few words of notes as searchable fields) and their index documents,
loaded in bulk (SQLite: executemany with the FTS5 triggers doing the indexing; PostgreSQL: COPY
into a staging table, then one INSERT ... SELECT computing the weighted tsvector, the GIN index
built after the load). Then, per size:

- latency p50/p95 of the search the operations run (`search_index.scope` + `search`, the
  tenant admin's view, `limit` 10, in one transaction, wall time in-process: the HTTP layer's
  cost is the same as any small JSON operation's, measured by the main bench) for a selective
  query (a word in ~20 records) and a common word (in ~20 % of records);
- (once) the indexing cost a synced record pays: `records.upsert` of pages of 100 new contacts
  into an integration with search on vs one with search off, per record.

The selective word is in every (largest size / 20)-th record: 20 records at the largest size.
Targets (issue 15): selective p95 <= 100 ms at the largest size on both databases; indexing
adds <= 30 % to an upsert.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

SELECTIVE_WORD = "zephyrine"
SELECTIVE_COUNT = 20
COMMON_WORD = "customer"
COMMON_SHARE = 0.2
P95_TARGET_MS = 100.0
INDEX_COST_TARGET = 0.30
_FIRST = [f"{a}{b}" for a in ("ada", "bo", "cy", "di", "eve", "fay", "gus", "hal", "ivy", "jo") for b in
          ("na", "ra", "lo", "mi", "te", "sa", "ko", "ve", "du", "pe", "li", "an", "or", "is", "um", "el", "yn", "ax",
           "ot", "er")]
_LAST = [f"{a}{b}" for a in ("smi", "jon", "bro", "tay", "wil", "dav", "eva", "tho", "rob", "wal") for b in
         ("th", "es", "wn", "lor", "son", "ies", "ns", "mas", "erts", "ker", "den", "ford", "ley", "ton", "well",
          "by", "ham", "worth", "ing", "more")]
_COMPANIES = [f"{a} {b}" for a in ("acme", "globex", "initech", "umbrella", "stark", "wayne", "hooli", "vandelay",
                                   "soylent", "tyrell") for b in ("labs", "systems", "foods", "logistics", "energy")]
_VOCAB = [f"{a}{b}{c}" for a in ("ka", "lo", "mu", "ne", "po", "ri", "su", "ta", "vi", "zo") for b in
          ("ban", "cel", "dor", "fen", "gil", "hor", "jun", "kel", "lom", "mar") for c in
          ("a", "e", "i", "o", "u", "y", "ar", "en", "is", "os", "um", "ex", "al", "on", "it", "ul", "ad", "ek", "ir",
           "ot")]  # 2,000 note words
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _contact(rng: random.Random, n: int, selective: set[int]) -> dict:
    first, last, company = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_COMPANIES)
    words = rng.sample(_VOCAB, 6)
    if rng.random() < COMMON_SHARE:
        words.append(COMMON_WORD)
    if n in selective:
        words.append(SELECTIVE_WORD)
    return {"id": f"c{n}", "name": f"{first.title()} {last.title()}",
            "email": f"{first}.{last}.{n}@{company.replace(' ', '-')}.example.com", "company": company.title(),
            "notes": " ".join(words)}


ENTITY = {"name": "Contact", "displayName": "Contacts",
          "fields": [{"name": name, "type": "string"} for name in ("name", "email", "company", "notes")],
          "sync": {"path": "/contacts", "itemsPath": "data", "idField": "id", "titleField": "name",
                   "searchableFields": ["name", "email", "company", "notes"], "paging": {"type": "none"}}}


def _setup(session, *, searchable: bool, tenant_id: uuid.UUID, provider_id: uuid.UUID | None):
    """One integration (search on or off) of the bench tenant; the provider is created once."""
    from persistence import providers
    from persistence.models import Integration, Tenant

    if provider_id is None:
        if session.get(Tenant, tenant_id) is None:
            session.add(Tenant(id=tenant_id, name=f"bench-{tenant_id.hex[:8]}"))
            session.flush()
        provider_id = providers.create(session, fields={
            "provider": f"bench_search_{uuid.uuid4().hex[:6]}", "name": "Bench CRM", "display_name": "Bench CRM",
            "category": "crm", "status": "active", "audience": "tenant", "capabilities": ["read", "search"],
            "supported_sync_directions": ["pull"], "auth_type": "api_key", "icon": "x", "color": "#336699",
            "version": "1.0.0", "available_entities": [ENTITY], "searchable_entities": ["Contact"]}).id
    integration = Integration(tenant_id=tenant_id, provider_id=provider_id, name=f"bench {uuid.uuid4().hex[:8]}",
                              search_enabled=searchable, searchable_entities=["Contact"] if searchable else [])
    session.add(integration)
    session.flush()
    return integration, provider_id


def _load(engine, integration, *, start: int, count: int, seed: int, selective_every: int, log) -> None:
    """Bulk-load contacts `start`..`start+count-1` (records and their index documents)."""
    from persistence import search_query
    from persistence.records import content_hash
    from persistence.search_index import document_text
    from persistence.sync_definitions import parse_definition

    definition = parse_definition(ENTITY)
    rng = random.Random(seed)
    selective = {n for n in range(start, start + count) if n % selective_every == 0}
    dialect = engine.dialect.name
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        batch, started = 50_000, time.perf_counter()
        for first in range(start, start + count, batch):
            records, documents = [], []
            for n in range(first, min(first + batch, start + count)):
                data = _contact(rng, n, selective)
                record_id = uuid.uuid4()
                title, body = document_text(definition, data)
                records.append((record_id, data, n))
                documents.append((record_id, title, body))
            if dialect == "postgresql":
                _copy_pg(cur, integration, records, documents, search_query)
            else:
                _insert_sqlite(cur, integration, records, documents, content_hash)
            raw.commit()
        if dialect == "postgresql":
            cur.execute("CREATE INDEX IF NOT EXISTS ix_search_documents_vector ON search_documents "
                        "USING gin (search_vector)")
            cur.execute("ANALYZE records; ANALYZE search_documents")
            raw.commit()
        log(f"    loaded {count:,} records in {time.perf_counter() - started:.1f} s")
    finally:
        raw.close()


def _insert_sqlite(cur, integration, records, documents, content_hash) -> None:
    import json

    stamp = NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
    cur.executemany(
        "INSERT INTO records (id, tenant_id, integration_id, owner_key, user_id, entity, external_id, data, "
        "content_hash, provider_updated_at, first_seen_at, last_modified_at, last_action, deleted_at, seq, "
        "last_seen_run_id) VALUES (?, ?, ?, 'tenant', NULL, 'Contact', ?, ?, ?, NULL, ?, ?, 'added', NULL, ?, NULL)",
        [(rid.hex, integration.tenant_id.hex, integration.id.hex, data["id"], json.dumps(data), content_hash(data),
          stamp, stamp, n) for rid, data, n in records])
    cur.executemany(
        "INSERT INTO search_documents (record_id, tenant_id, integration_id, owner_key, entity, title, body) "
        "VALUES (?, ?, ?, 'tenant', 'Contact', ?, ?)",
        [(rid.hex, integration.tenant_id.hex, integration.id.hex, title, body) for rid, title, body in documents])


def _copy_pg(cur, integration, records, documents, search_query) -> None:
    import json

    from persistence.records import content_hash

    with cur.copy("COPY records (id, tenant_id, integration_id, owner_key, entity, external_id, data, content_hash, "
                  "first_seen_at, last_modified_at, last_action, seq) FROM STDIN") as copy:
        for rid, data, n in records:
            copy.write_row((rid, integration.tenant_id, integration.id, "tenant", "Contact", data["id"],
                            json.dumps(data), content_hash(data), NOW, NOW, "added", n))
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS stage (record_id uuid, title text, body text, title_words text, "
                "body_words text) ON COMMIT DELETE ROWS")
    with cur.copy("COPY stage FROM STDIN") as copy:
        for rid, title, body in documents:
            copy.write_row((rid, title, body, " ".join(search_query.tokens(title)),
                            " ".join(search_query.tokens(body))))
    cur.execute(
        "INSERT INTO search_documents (record_id, tenant_id, integration_id, owner_key, entity, title, body, "
        "search_vector) SELECT record_id, %s, %s, 'tenant', 'Contact', title, body, "
        "setweight(to_tsvector('simple', title_words), 'A') || setweight(to_tsvector('simple', body_words), 'B') "
        "FROM stage", (integration.tenant_id, integration.id))


def _latency(integration_id: uuid.UUID, tenant_id: uuid.UUID, text: str, samples: int, warmup: int = 3) -> dict:
    from persistence import search_index, search_query
    from persistence.db import transaction

    times, total = [], 0
    for index in range(warmup + samples):
        started = time.perf_counter()
        with transaction() as session:
            scope = search_index.scope(session, tenant_id=tenant_id, integration_ids=[integration_id],
                                       every_owner=True, owner_key=None)
            found = search_index.search(session, tenant_id=tenant_id, within=scope.searchable,
                                        query=search_query.parse(text), limit=10)
        elapsed = (time.perf_counter() - started) * 1e3
        total = found.total
        if index >= warmup:
            times.append(elapsed)
    times.sort()
    return {"query": text, "matches": total, "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))], 2), "samples": samples}


def _index_cost(tenant_id: uuid.UUID, on, off, *, pages: int, log) -> dict:
    """µs per record of `records.upsert` (pages of 100 new contacts) with search on vs off, interleaved."""
    from persistence import records
    from persistence.db import transaction

    rng = random.Random(7)
    spent = {"on": [], "off": []}
    serial = 10_000_000
    for page in range(pages):
        for label, integration in (("on", on), ("off", off)) if page % 2 else (("off", off), ("on", on)):
            items = []
            for _ in range(100):
                serial += 1
                data = _contact(rng, serial, set())
                items.append(records.Item(data["id"], data, None))
            started = time.perf_counter()
            with transaction() as session:
                records.upsert(session, tenant_id=tenant_id, integration_id=integration.id, owner_key="tenant",
                               user_id=None, entity="Contact", items=items, now=NOW)
            spent[label].append((time.perf_counter() - started) * 1e6 / 100)
    on_us, off_us = statistics.median(spent["on"]), statistics.median(spent["off"])
    cost = on_us / off_us - 1
    log(f"    upsert per record: {off_us:.0f} µs without the index, {on_us:.0f} µs with it (+{cost:.0%})")
    return {"pages": pages, "page_size": 100, "us_per_record_without_index": round(off_us, 1),
            "us_per_record_with_index": round(on_us, 1), "cost": round(cost, 3),
            "pass": cost <= INDEX_COST_TARGET}


QUERIES = {"selective": SELECTIVE_WORD, "common": COMMON_WORD, "prefix": "zephyr*", "phrase": '"acme labs"'}


def measure_database(url: str, *, sizes: tuple[int, ...], samples: int, cost_pages: int, log,
                     kinds: tuple[str, ...] = tuple(QUERIES)) -> dict:
    """Run the search bench on the migrated database at `url`; return its figures.

    `kinds`: which of `QUERIES` to time at each size (the common word gets a third of `samples`);
    `cost_pages=0` skips the indexing cost (no `index_cost` key then). The main bench's
    capabilities phase runs the selective query alone this way.
    """
    from persistence import db
    from persistence.db import transaction
    from persistence.migrate import upgrade

    upgrade(url)
    engine = db.configure(url)
    tenant_id = uuid.uuid4()
    with transaction() as session:
        searched, provider_id = _setup(session, searchable=True, tenant_id=tenant_id, provider_id=None)
        unsearched, _ = _setup(session, searchable=False, tenant_id=tenant_id, provider_id=provider_id)
        cost_on, _ = _setup(session, searchable=True, tenant_id=tenant_id, provider_id=provider_id)
    out = {"database": engine.dialect.name, "sizes": []}
    if cost_pages:
        log(f"  {engine.dialect.name}: indexing cost ...")
        out["index_cost"] = _index_cost(tenant_id, cost_on, unsearched, pages=cost_pages, log=log)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # built once after the bulk load (faster than growing it row by row)
            conn.exec_driver_sql("DROP INDEX IF EXISTS ix_search_documents_vector")
    loaded = 0
    for size in sizes:
        log(f"  {engine.dialect.name}: {size:,} records ...")
        _load(engine, searched, start=loaded, count=size - loaded, seed=size,
              selective_every=max(1, max(sizes) // SELECTIVE_COUNT), log=log)
        loaded = size
        entry = {"records": size}
        for name in kinds:
            entry[name] = _latency(searched.id, tenant_id, QUERIES[name],
                                   max(5, samples // 3) if name == "common" else samples)
            figures = entry[name]
            log(f"    {name:<9} {figures['query']!r:<28} {figures['matches']:>8,} matches: "
                f"p50 {figures['p50_ms']:8.1f} ms, p95 {figures['p95_ms']:8.1f} ms")
        out["sizes"].append(entry)
    db.configure(url).dispose()
    return out


def measure(workdir: Path, *, sizes: tuple[int, ...], samples: int, cost_pages: int, pg_url: str | None,
            postgres: bool, log) -> dict:
    """Run the bench on SQLite (a file under `workdir`) and PostgreSQL; return {"sqlite": ..., "postgresql": ...}."""
    workdir.mkdir(parents=True, exist_ok=True)
    sqlite_path = workdir / "search.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    results = {"sqlite": measure_database(f"sqlite:///{sqlite_path}", sizes=sizes, samples=samples,
                                          cost_pages=cost_pages, log=log)}
    if postgres:
        if pg_url:
            results["postgresql"] = measure_database(pg_url, sizes=sizes, samples=samples, cost_pages=cost_pages,
                                                     log=log)
        else:
            from tests.pg_cluster import PostgresCluster

            with PostgresCluster() as cluster:
                results["postgresql"] = measure_database(cluster.url, sizes=sizes, samples=samples,
                                                         cost_pages=cost_pages, log=log)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    return results


def targets(results: dict) -> list[dict]:
    """The PASS/MISS lines: selective p95 at the largest size, indexing cost, per database."""
    out = []
    for name, figures in results.items():
        if not isinstance(figures, dict) or "sizes" not in figures:
            continue
        largest = figures["sizes"][-1]
        p95 = largest["selective"]["p95_ms"]
        out.append({"name": f"{name}: selective search p95 at {largest['records']:,} records (ms)", "value": p95,
                    "target": f"<= {P95_TARGET_MS:g}", "pass": p95 <= P95_TARGET_MS})
        cost = figures["index_cost"]["cost"]
        out.append({"name": f"{name}: indexing cost per synced record (share over search off)", "value": cost,
                    "target": f"<= {INDEX_COST_TARGET}", "pass": cost <= INDEX_COST_TARGET})
    return out


def table(results: dict, checks: list[dict]) -> str:
    """The printed report."""
    lines = ["Search (in-process: scope + search in one transaction, tenant admin, limit 10 per integration)"]
    lines.append(f"  {'database':<11} {'records':>10} {'query':<10} {'matches':>9} {'p50 ms':>9} {'p95 ms':>9}")
    for name, figures in results.items():
        if not isinstance(figures, dict) or "sizes" not in figures:
            continue
        for entry in figures["sizes"]:
            for kind in ("selective", "prefix", "phrase", "common"):
                row = entry[kind]
                lines.append(f"  {name:<11} {entry['records']:>10,} {kind:<10} {row['matches']:>9,} "
                             f"{row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f}")
        cost = figures["index_cost"]
        lines.append(f"  {name:<11} upsert per record: {cost['us_per_record_without_index']:.0f} µs search off, "
                     f"{cost['us_per_record_with_index']:.0f} µs search on (+{cost['cost']:.0%})")
    lines += ["", "Targets:"]
    lines += [f"  {'PASS' if check['pass'] else 'MISS'}  {check['name']}: {check['value']:.2f} (target {check['target']})"
              for check in checks]
    return "\n".join(lines)


