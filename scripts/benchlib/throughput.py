"""Requests/s and p50/p99 under wrk, floor vs FastAPI vs hub, interleaved (A B C A B C); peak RSS afterwards.

The floor and the FastAPI app serve throughout; the hub is started once per configuration
(production settings, then with response validation on). Each (app, round, operation) uses a
fresh tenant.
"""

from __future__ import annotations

from pathlib import Path

from benchlib import wrk
from benchlib.fixture import Fixture
from benchlib.inprocess import path
from benchlib.ops import OPERATIONS
from benchlib.servers import FASTAPI_APP, FLOOR_APP, HUB_APP, Server

CONFIGS = (("production", False), ("validate_responses", True))


def _run(server: Server, op, fixture: Fixture, *, seconds: float, tag: str, workdir: Path) -> dict:
    account = fixture.take()
    url = f"{server.base}{path(op, server.name)}" + (f"?{op.query}" if op.query else "")
    create = (f"{tag}-{server.name}", fixture.provider_id) if op.method == "POST" else None
    server.wait_idle()
    cpu = server.cpu_seconds()
    result = wrk.run(url, token=account.token, seconds=seconds, workdir=workdir, create=create).as_dict()
    # Server CPU per completed request while wrk ran: robust to other processes sharing the core.
    result["server_cpu_us"] = (server.cpu_seconds() - cpu) / max(1, result["requests"]) * 1e6
    return result


def measure(fixture: Fixture, *, rounds: int, seconds: float, warmup: float, configs=CONFIGS,
            log=print) -> dict:
    """Return {config: {"ops": {op: {"floor": [..], "fastapi": [..], "hub": [..]}}, "hub_peak_rss_mib"},
    "floor_peak_rss_mib", "fastapi_peak_rss_mib"}."""
    env, workdir = fixture.env, fixture.env.workdir
    results: dict = {}
    floor = Server("floor", FLOOR_APP, env.environ(), workdir / "logs" / "floor.log")
    fastapi = Server("fastapi", FASTAPI_APP, env.environ(), workdir / "logs" / "fastapi.log")
    try:
        for server in (floor, fastapi):
            server.start("/api/v1/auth/me", fixture.take().token)
        for config, validate in configs:
            hub = Server("hub", HUB_APP, env.environ(validate_responses=validate), workdir / "logs" / f"hub-{config}.log")
            hub.start("/api/v1/auth/me", fixture.take().token)
            servers = (floor, fastapi, hub)
            try:
                for op in OPERATIONS if warmup > 0 else ():
                    for server in servers:
                        _run(server, op, fixture, seconds=warmup, tag=f"warm-{config}", workdir=workdir)
                ops = {op.key: {server.name: [] for server in servers} for op in OPERATIONS}
                for r in range(rounds):
                    for op in OPERATIONS:
                        for server in servers:
                            result = _run(server, op, fixture, seconds=seconds, tag=f"wrk-{config}-{r}", workdir=workdir)
                            ops[op.key][server.name].append(result)
                            log(f"  wrk {config} round {r + 1} {op.key:<10} {server.name:<7} {result['rps']:8.1f} req/s "
                                f"p50 {result['p50_ms']:7.2f} ms p99 {result['p99_ms']:7.2f} ms "
                                f"server CPU {result['server_cpu_us']:8.0f} µs/req errors {result['errors']}")
                hub.wait_idle()
                results[config] = {"ops": ops, "hub_peak_rss_mib": hub.peak_rss_mib()}
            finally:
                hub.stop()
        results["floor_peak_rss_mib"] = floor.peak_rss_mib()
        results["fastapi_peak_rss_mib"] = fastapi.peak_rss_mib()
    finally:
        floor.stop()
        fastapi.stop()
    return results
