"""Requests/s and p50/p99 under wrk, hub vs floor, A B A B; peak RSS of each server afterwards.

The floor serves throughout; the hub is started once per configuration (production settings,
then with response validation on). Each (app, round, operation) uses a fresh tenant.
"""

from __future__ import annotations

from pathlib import Path

from benchlib import wrk
from benchlib.fixture import Fixture
from benchlib.ops import OPERATIONS
from benchlib.servers import FLOOR_APP, HUB_APP, Server

CONFIGS = (("production", False), ("validate_responses", True))


def _run(server: Server, op, fixture: Fixture, *, seconds: float, tag: str, workdir: Path) -> dict:
    account = fixture.take()
    path = op.floor_path if server.name == "floor" else op.path
    url = f"{server.base}{path}" + (f"?{op.query}" if op.query else "")
    create = (tag, fixture.provider_id) if op.method == "POST" else None
    server.wait_idle()
    cpu = server.cpu_seconds()
    result = wrk.run(url, token=account.token, seconds=seconds, workdir=workdir, create=create).as_dict()
    # Server CPU per completed request while wrk ran: robust to other processes sharing the core.
    result["server_cpu_us"] = (server.cpu_seconds() - cpu) / max(1, result["requests"]) * 1e6
    return result


def measure(fixture: Fixture, *, rounds: int, seconds: float, warmup: float, configs=CONFIGS,
            log=print) -> dict:
    """Return {config: {"ops": {op: {"floor": [..], "hub": [..]}}, "hub_peak_rss_mib"}, "floor_peak_rss_mib"}."""
    env, workdir = fixture.env, fixture.env.workdir
    results: dict = {}
    floor = Server("floor", FLOOR_APP, env.environ(), workdir / "logs" / "floor.log")
    floor.start("/api/v1/auth/me", fixture.take().token)
    try:
        for config, validate in configs:
            hub = Server("hub", HUB_APP, env.environ(validate_responses=validate), workdir / "logs" / f"hub-{config}.log")
            hub.start("/api/v1/auth/me", fixture.take().token)
            try:
                for op in OPERATIONS if warmup > 0 else ():
                    for server in (floor, hub):
                        _run(server, op, fixture, seconds=warmup, tag=f"warm-{config}", workdir=workdir)
                ops = {op.key: {"floor": [], "hub": []} for op in OPERATIONS}
                for r in range(rounds):
                    for op in OPERATIONS:
                        for server in (floor, hub):
                            result = _run(server, op, fixture, seconds=seconds, tag=f"wrk-{config}-{r}", workdir=workdir)
                            ops[op.key][server.name].append(result)
                            log(f"  wrk {config} round {r + 1} {op.key:<10} {server.name:<5} {result['rps']:8.1f} req/s "
                                f"p50 {result['p50_ms']:7.2f} ms p99 {result['p99_ms']:7.2f} ms "
                                f"server CPU {result['server_cpu_us']:8.0f} µs/req errors {result['errors']}")
                hub.wait_idle()
                results[config] = {"ops": ops, "hub_peak_rss_mib": hub.peak_rss_mib()}
            finally:
                hub.stop()
        results["floor_peak_rss_mib"] = floor.peak_rss_mib()
    finally:
        floor.stop()
    return results
