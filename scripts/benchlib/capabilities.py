"""The capabilities phase of `./scripts/bench`: the new capabilities' headline figures beside the HTTP ones.

One figure (or two) per capability, each measured by its own section module at a size that keeps
the phase to a few minutes on the 2-core machine, with the target its issue set:

- webhooks (issue 12): deliveries/s of one worker process to a loopback receiver (>= 300) and
  event-to-first-attempt latency p50/p99 with the worker idle (<= 100 ms / <= 1 s);
  `benchlib.webhooks.measure` without its CPU-cost-of-emitting part;
- realtime (issue 13): event -> WebSocket delivery p50/p99 over every subscriber of one hub
  process (<= 50 / <= 250 ms) and memory per idle socket (<= 50 KiB); `benchlib.realtime.measure`;
- sync (issue 14): full-sync ingestion from the sandbox in its own process, records/s on SQLite
  (>= 2,000); `benchlib.sync.measure_ingestion`;
- search (issue 15): p95 of the selective query (a word in 20 records) on SQLite
  (<= 100 ms; the issue's size is 1M records, here 100k); `benchlib.search.measure_database`.

The full-size figures (and what this phase leaves out: emitting cost, incremental sync, deep
pages, incoming webhooks, indexing cost, PostgreSQL, 1M search records) come from
`./scripts/bench --only <section>`.

The phase runs in a child process (`run`): every section configures the persistence layer's
global engine for its own database, and the realtime client's timestamps should not pay for
the garbage collections of the main bench's heap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib.fixture import ROOT

SIZES = {
    # Webhooks, realtime and sync at their `--only` sizes; search at 100k records on SQLite (the
    # 1M loads and PostgreSQL take ~12 minutes). 1-2 minutes on the 2-core machine, by its load.
    "full": {"webhook_events": 3000, "webhook_latency_samples": 200, "webhook_concurrency": 16,
             "realtime_sockets": 1000, "realtime_rounds": 20, "sync_accounts": 5000, "search_records": 100_000,
             "search_samples": 40},
    # Tiny sizes: the smoke test checks that every measurement runs; the figures mean nothing.
    "quick": {"webhook_events": 100, "webhook_latency_samples": 10, "webhook_concurrency": 16,
              "realtime_sockets": 20, "realtime_rounds": 3, "sync_accounts": 200, "search_records": 2_000,
              "search_samples": 5},
}
SECTIONS = ("webhooks", "realtime", "sync", "search")
_DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def measure(workdir: Path, *, sizes: dict, log) -> dict:
    """Run the four measurements in this process under `workdir`; return their figures.

    `sizes`: one of `SIZES`. Returns {"sizes", "seconds": {section: wall s}, "webhooks": {...},
    "realtime": {...}, "sync": {...}, "search": {...}}; a section that fails raises.
    """
    from benchlib import realtime, search, sync, webhooks
    from benchlib.fixture import BenchEnv

    figures: dict = {"sizes": dict(sizes), "seconds": {}}

    started = time.perf_counter()
    env = BenchEnv(workdir / "webhooks")
    raw = webhooks.measure(env, events=sizes["webhook_events"], latency_samples=sizes["webhook_latency_samples"],
                           cpu_samples=0, cpu_rounds=0, concurrency=sizes["webhook_concurrency"], log=log)["webhooks"]
    figures["webhooks"] = {key: raw[key] for key in ("deliveries", "deliveries_per_s", "worker_cpu_ms_per_delivery",
                                                     "latency_ms")}
    _remove_sqlite(env.db_path)
    figures["seconds"]["webhooks"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    log(f"Realtime: {sizes['realtime_sockets']:,} WebSocket subscribers, {sizes['realtime_rounds']} events ...")
    raw = realtime.measure(sockets=sizes["realtime_sockets"], rounds=sizes["realtime_rounds"], log=log)
    figures["realtime"] = {key: raw[key] for key in ("sockets", "rounds", "p50_ms", "p99_ms", "max_ms",
                                                     "kib_per_idle_socket", "server_cpu_ms_per_event")}
    figures["seconds"]["realtime"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    env = BenchEnv(workdir / "sync")
    raw = sync.measure_ingestion(env, accounts=sizes["sync_accounts"], log=log)
    figures["sync"] = {"records": raw["full"]["added"], "seconds": raw["full"]["seconds"],
                       "pages": raw["full"]["pages"], "records_per_s": raw["records_per_s"]}
    _remove_sqlite(env.db_path)
    figures["seconds"]["sync"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    path = workdir / "search" / "search.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_sqlite(path)
    log(f"Search: selective query at {sizes['search_records']:,} records, SQLite ...")
    raw = search.measure_database(f"sqlite:///{path}", sizes=(sizes["search_records"],),
                                  samples=sizes["search_samples"], cost_pages=0, kinds=("selective",), log=log)
    selective = raw["sizes"][-1]["selective"]
    figures["search"] = {"database": raw["database"], "records": sizes["search_records"], **selective}
    _remove_sqlite(path)
    figures["seconds"]["search"] = round(time.perf_counter() - started, 1)
    return figures


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def run(workdir: Path, *, mode: str, log) -> dict:
    """Run `measure` with `SIZES[mode]` in a child interpreter (its progress lines on our stderr); return its
    figures plus "duration_s" (the whole phase, wall s). Raises RuntimeError when the child fails."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "capabilities.json"
    out.unlink(missing_ok=True)
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "scripts")])}
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "benchlib.capabilities", "--mode", mode,
                           "--workdir", str(workdir), "--out", str(out)], cwd=ROOT, env=environ, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the capabilities phase failed (exit {done.returncode}); its error is above")
    figures = json.loads(out.read_text())
    figures["duration_s"] = round(time.perf_counter() - started, 1)
    return figures


def targets(figures: dict) -> list[dict]:
    """The capabilities' targets, in the main report's shape ({"name", "value", "target", "pass"})."""
    from benchlib import realtime, search, sync, webhooks

    hooks, live, synced, found = figures["webhooks"], figures["realtime"], figures["sync"], figures["search"]
    sockets = f"{live['sockets']:,} sockets"
    rows = [
        (f"webhooks: deliveries/s, one worker ({hooks['deliveries']:,} events)", hooks["deliveries_per_s"],
         ">=", webhooks.TARGETS["deliveries_per_s"]),
        ("webhooks: event to first attempt p50, idle worker (ms)", hooks["latency_ms"]["p50"],
         "<=", webhooks.TARGETS["latency_p50_ms"]),
        ("webhooks: event to first attempt p99, idle worker (ms)", hooks["latency_ms"]["p99"],
         "<=", webhooks.TARGETS["latency_p99_ms"]),
        (f"realtime: event to socket p50, {sockets} (ms)", live["p50_ms"], "<=", realtime.TARGETS["p50_ms"]),
        (f"realtime: event to socket p99, {sockets} (ms)", live["p99_ms"], "<=", realtime.TARGETS["p99_ms"]),
        (f"realtime: memory per idle socket, {sockets} (KiB)", live["kib_per_idle_socket"],
         "<=", realtime.TARGETS["kib_per_idle_socket"]),
        (f"sync: full-sync ingestion, {synced['records']:,} records (records/s)", synced["records_per_s"],
         ">=", sync.TARGETS["records_per_s"]),
        (f"search: selective query p95, {found['records']:,} records, {_DATABASES[found['database']]} (ms)",
         found["p95_ms"],
         "<=", search.P95_TARGET_MS),
    ]
    return [{"name": name, "value": value, "target": f"{op} {limit:g}",
             "pass": value >= limit if op == ">=" else value <= limit} for name, value, op, limit in rows]


def table(figures: dict) -> list[str]:
    """The "New capabilities" block of the printed report: each figure, its target and PASS/MISS."""
    rows = targets(figures)
    sizes, seconds = figures["sizes"], figures["seconds"]
    lines = [f"New capabilities (SQLite; phase {figures.get('duration_s', sum(seconds.values())):.0f} s: "
             + ", ".join(f"{name} {seconds[name]:.0f} s" for name in SECTIONS) + ")",
             f"  {'measure':<62} {'value':>10}  {'target':<9} result"]
    for t in rows:
        lines.append(f"  {t['name']:<62} {t['value']:>10,.1f}  {t['target']:<9} {'PASS' if t['pass'] else 'MISS'}")
    hooks = figures["webhooks"]
    lines.append(f"  sizes: webhooks {sizes['webhook_events']:,} events queued, then {hooks['latency_ms']['samples']} "
                 f"one by one (worker concurrency {sizes['webhook_concurrency']}); realtime "
                 f"{sizes['realtime_sockets']:,} sockets x {sizes['realtime_rounds']} events;")
    lines.append(f"    sync {figures['sync']['records']:,} sandbox records ({figures['sync']['pages']} pages); search "
                 f"{sizes['search_records']:,} records, {sizes['search_samples']} queries (the issue's size: 1M)")
    lines.append("  full sections (search at 1M and on PostgreSQL, emitting cost, incremental sync, deep pages, "
                 "incoming webhooks):")
    lines.append("    ./scripts/bench --only webhooks|realtime|sync|search")
    return lines


def main(argv: list[str] | None = None) -> int:
    """The child interpreter of `run`: measure, write the figures as JSON to --out."""
    parser = argparse.ArgumentParser(prog="benchlib.capabilities")
    parser.add_argument("--mode", choices=sorted(SIZES), required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    figures = measure(args.workdir.resolve(), sizes=SIZES[args.mode], log=log)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
