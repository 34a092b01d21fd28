"""`./scripts/bench`: the hub against a bare-Starlette floor and an idiomatic FastAPI app doing the same work.

Phases: prepare a SQLite database (migrated, bootstrapped, 10k catalog providers, one fresh
tenant per measurement); cold start (fresh interpreters); a parity check (the FastAPI app
answers the benchmarked requests as the floor does); CPU µs/request in-process; req/s and
p50/p99 under wrk with the three apps under uvicorn (production settings, then with the hub's
response validation on); peak RSS; cost growth of the catalog (offset) and audit log (cursor)
pages at 10k/100k/1M rows; then the new capabilities' headline figures at reduced sizes (webhook
deliveries/s and latency, event -> WebSocket latency, sync ingestion, search p95: see
benchlib/capabilities.py; `--no-capabilities` skips them). Prints a table with each target's
PASS/MISS and writes build/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from benchlib import capabilities, coldstart, growth, inprocess, parity, report, throughput, wrk
from benchlib.asgi import AsgiClient
from benchlib.fixture import RATE_LIMIT_SCALE, BenchEnv, prepare

MODES = {
    "full": {"providers": 10_000, "accounts": 192, "rounds": 3, "sample_scale": 1.0, "cold_runs": 3, "wrk_seconds": 4.0,
                 "wrk_warmup": 1.0, "wrk_configs": throughput.CONFIGS, "sizes": growth.SIZES},
    # Tiny sizes, one round: checks that every phase runs (tests/test_bench_smoke.py), measures nothing.
    # wrk: 32 connections share one pinned core, and the threadpool interleaves their requests, so
    # on a loaded machine 32 catalog pages all finished after a one-second run had ended (0 req/s):
    # three seconds, after a one-second warm-up (an app's first requests build what it builds lazily).
    "quick": {"providers": 300, "accounts": 64, "rounds": 1, "sample_scale": 0.05, "cold_runs": 1, "wrk_seconds": 3.0,
                  "wrk_warmup": 1.0, "wrk_configs": throughput.CONFIGS[:1], "sizes": (300, 1_000)},
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _log_like_production(env: BenchEnv) -> None:
    # serving_app logs one JSON line per request; in-process runs pay for it too (into a file).
    import logging

    from server.observability import configure_logging

    configure_logging(env.settings().log_format)
    (env.workdir / "logs").mkdir(parents=True, exist_ok=True)
    logging.getLogger().handlers[0].setStream(open(env.workdir / "logs" / "inprocess.log", "w"))  # noqa: SIM115


async def _measure_apps(env: BenchEnv, fixture, mode: dict, use_wrk: bool) -> dict:
    import bench_fastapi
    import bench_floor

    from server.app import create_app

    _log_like_production(env)

    floor_app = bench_floor.build(bench_floor.Floor(env.settings()))
    fastapi_app = bench_fastapi.build(bench_fastapi.State(env.settings()))
    results: dict = {"cpu": {}}
    async with AsgiClient(floor_app) as floor, AsgiClient(fastapi_app) as fastapi:
        log("Parity: the FastAPI app answers as the floor ...")
        results["parity"] = await parity.check(floor, fastapi, fixture)
        for config, validate in throughput.CONFIGS:
            hub_app = create_app(env.settings(validate_responses=validate))
            async with AsgiClient(hub_app) as hub:
                log(f"CPU per request in-process, hub {config} ...")
                results["cpu"][config] = await inprocess.measure({"floor": floor, "fastapi": fastapi, "hub": hub},
                                                                 fixture, rounds=mode["rounds"],
                                                                 sample_scale=mode["sample_scale"])
        if use_wrk:
            log("Throughput under wrk ...")
            results["wrk"] = throughput.measure(fixture, rounds=mode["rounds"], seconds=mode["wrk_seconds"],
                                                warmup=mode["wrk_warmup"], configs=mode["wrk_configs"], log=log)
        hub_app = create_app(env.settings())
        async with AsgiClient(hub_app) as hub:
            log("Cost growth ...")
            results["growth"] = await growth.measure(hub, fixture, sizes=mode["sizes"], log=log)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke run (~1 minute)")
    parser.add_argument("--no-wrk", action="store_true", help="skip the throughput runs under wrk")
    parser.add_argument("--no-capabilities", action="store_true",
                        help="skip the new capabilities' phase (webhooks, realtime, sync, search; ~3 minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench.json", help="where to write the JSON")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench", help="database, logs, scratch")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database afterwards")
    parser.add_argument("--only", choices=["realtime", "webhooks", "search", "sync"],
                        help="run one section alone (realtime: 1,000 WebSocket subscribers; webhooks: delivery "
                             "throughput, latency and the CPU cost of emitting; search: latency at 100k and 1M "
                             "records and the indexing cost, SQLite and PostgreSQL; sync: full-sync ingestion, "
                             "incremental cost, the records deep page at 1M, webhook-to-record latency); writes "
                             "build/bench-<section>.json")
    parser.add_argument("--search-sizes", default="100000,1000000",
                        help="search: comma-separated record counts (default 100000,1000000; the 1M loads take "
                             "minutes: pass 100000 alone for a shorter run)")
    parser.add_argument("--pg-url", help="search: an empty PostgreSQL database to use (default: a throwaway cluster)")
    parser.add_argument("--no-postgres", action="store_true", help="search: SQLite only")
    args = parser.parse_args(argv)
    if args.only == "realtime":
        return _realtime_only(args)
    if args.only == "webhooks":
        return _webhooks_only(args)
    if args.only == "search":
        return _search_only(args)
    if args.only == "sync":
        return _sync_only(args)
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    use_wrk = wrk.available() and not args.no_wrk
    started, load_start = time.perf_counter(), _loadavg()

    import uvloop

    env = BenchEnv(args.workdir.resolve())
    log(f"Preparing {env.db_path} ({mode['providers']:,} catalog providers) ...")
    fixture = prepare(env, providers=mode["providers"], accounts=mode["accounts"])
    log("Cold start ...")
    results = {"cold_start": coldstart.measure(env.environ(), fixture.take().token, runs=mode["cold_runs"])}
    results.update(uvloop.run(_measure_apps(env, fixture, mode, use_wrk)))
    if not args.no_capabilities:
        log("New capabilities: webhooks, realtime, sync, search (in a child process) ...")
        results["capabilities"] = capabilities.run(env.workdir / "capabilities", mode=mode_name, log=log)

    figures, targets = report.build(results)
    meta = {"mode": mode_name, "rounds": mode["rounds"], "catalog_providers": mode["providers"],
            "rate_limit_scale": RATE_LIMIT_SCALE, "wrk": shutil.which("wrk") if use_wrk else None,
            "wrk_seconds": mode["wrk_seconds"] if use_wrk else None, "connections": wrk.CONNECTIONS,
            "cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_start": load_start,
            "loadavg_end": _loadavg(), "duration_s": round(time.perf_counter() - started, 1),
            "capabilities": ({**results["capabilities"]["sizes"], "duration_s": results["capabilities"]["duration_s"]}
                             if "capabilities" in results else None),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                  text=True, check=False).stdout.strip()}
    document = {"meta": meta, "parity": results["parity"], **figures, "targets": targets}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str))
    print(report.table(figures, targets, meta))
    print(f"\nWrote {args.out} in {meta['duration_s']:.0f} s")
    if not args.keep_db:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{env.db_path}{suffix}").unlink(missing_ok=True)
    return 0


def _realtime_only(args: argparse.Namespace) -> int:
    from benchlib import realtime

    sockets, rounds = (100, 3) if args.quick else (1000, 20)
    figures = realtime.measure(sockets=sockets, rounds=rounds, log=log)
    out = args.out.with_name("bench-realtime.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    targets = figures["targets"]
    print(f"Realtime, {figures['sockets']} WebSocket subscribers on one process, {figures['rounds']} events:")
    print(f"  delivery p50 {figures['p50_ms']} ms (target <= 50: {targets['p50_ms']}), "
          f"p99 {figures['p99_ms']} ms (target <= 250: {targets['p99_ms']}), max {figures['max_ms']} ms")
    print(f"  first / last socket served, median over events: {figures['first_delivered_p50_ms']} / "
          f"{figures['all_delivered_p50_ms']} ms")
    print(f"  CPU per event (server, including its 2 HTTP requests / bench client): "
          f"{figures['server_cpu_ms_per_event']} / {figures['client_cpu_ms_per_event']} ms")
    print(f"  memory per idle socket {figures['kib_per_idle_socket']} KiB (target <= 50: "
          f"{targets['kib_per_idle_socket']}); server RSS {figures['server_rss_idle_mib']} MiB")
    print(f"Wrote {out}")
    return 0


def _webhooks_only(args: argparse.Namespace) -> int:
    """`./scripts/bench --only webhooks`: delivery throughput, latency and the CPU cost of emitting."""
    from benchlib import webhooks

    started = time.perf_counter()
    env = BenchEnv(args.workdir.resolve() / "webhooks")
    sizes = ({"events": 300, "latency_samples": 20, "cpu_samples": 20, "cpu_rounds": 1} if args.quick else
             {"events": 3000, "latency_samples": 200, "cpu_samples": 300, "cpu_rounds": 5})
    result = webhooks.measure(env, concurrency=16, log=log, **sizes)
    result["meta"] = {"mode": "quick" if args.quick else "full", "cpus": os.cpu_count(), **sizes,
                      "python": platform.python_version(), "duration_s": round(time.perf_counter() - started, 1)}
    out = args.out if args.out != ROOT / "build" / "bench.json" else ROOT / "build" / "bench-webhooks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(webhooks.table(result))
    print(f"\nWrote {out} in {result['meta']['duration_s']:.0f} s")
    if not args.keep_db:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{env.db_path}{suffix}").unlink(missing_ok=True)
    return 0


def _sync_only(args: argparse.Namespace) -> int:
    """`./scripts/bench --only sync`: ingestion rate, incremental cost, records deep page, webhook latency."""
    from benchlib import sync

    started = time.perf_counter()
    env = BenchEnv(args.workdir.resolve() / "sync")
    sizes = ({"accounts": 500, "deep_records": 20_000, "page_samples": 20, "webhook_samples": 10} if args.quick else
             {"accounts": 5000, "deep_records": 1_000_000, "page_samples": 200, "webhook_samples": 50})
    result = sync.measure(env, log=log, **sizes)
    result["meta"] = {"mode": "quick" if args.quick else "full", "cpus": os.cpu_count(), **sizes,
                      "python": platform.python_version(), "loadavg": _loadavg(),
                      "duration_s": round(time.perf_counter() - started, 1)}
    out = args.out if args.out != ROOT / "build" / "bench.json" else ROOT / "build" / "bench-sync.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(sync.table(result))
    print(f"\nWrote {out} in {result['meta']['duration_s']:.0f} s")
    if not args.keep_db:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{env.db_path}{suffix}").unlink(missing_ok=True)
    return 0


def _search_only(args: argparse.Namespace) -> int:
    """`./scripts/bench --only search`: search latency by database and size, and the indexing cost."""
    from benchlib import search

    started = time.perf_counter()
    sizes = (2_000, 10_000) if args.quick else tuple(sorted(int(size) for size in args.search_sizes.split(",")))
    samples, pages = (5, 4) if args.quick else (40, 40)
    results = search.measure(args.workdir.resolve() / "search", sizes=sizes, samples=samples, cost_pages=pages,
                             pg_url=args.pg_url, postgres=not args.no_postgres, log=log)
    checks = search.targets(results)
    document = {"meta": {"mode": "quick" if args.quick else "full", "sizes": sizes, "samples": samples,
                         "cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_end": _loadavg(),
                         "duration_s": round(time.perf_counter() - started, 1)}, **results, "targets": checks}
    out = args.out if args.out != ROOT / "build" / "bench.json" else ROOT / "build" / "bench-search.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str))
    print(search.table(results, checks))
    print(f"\nWrote {out} in {document['meta']['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
