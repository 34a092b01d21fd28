"""Outgoing webhooks: delivery throughput, event-to-first-attempt latency, the CPU cost of emitting.

Targets (the events-and-webhooks issue, section 5), on the bench machine:
- deliveries per second of one `integration-hub worker` process to a loopback receiver: >= 300;
- latency from an event's commit to its first attempt reaching the receiver, with the worker
  idle: p50 <= 100 ms, p99 <= 1 s;
- CPU a mutation pays for emitting (the event row and its outbox row, beside the audit entry it
  always wrote): <= 10 % over the same mutation auditing only.

The receiver runs under uvicorn on a thread of this process (idle otherwise while the worker,
a separate process, delivers); arrival times are wall-clock, like the event commit times.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from benchlib.asgi import AsgiClient
from benchlib.fixture import ROOT, BenchEnv, prepare

TARGETS = {"deliveries_per_s": 300, "latency_p50_ms": 100, "latency_p99_ms": 1000, "emit_cpu_overhead_pct": 10}


class Receiver:
    """A loopback receiver answering 200 at once; records the first arrival time of each webhook-id."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.requests = 0
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = None

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        now = time.time()
        self.requests += 1
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                self.arrivals.setdefault(value.decode(), now)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> "Receiver":
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", access_log=False, interface="asgi3"))
        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


def _emit(tenant_id: uuid.UUID, endpoint_id: uuid.UUID, count: int) -> list[str]:
    from persistence import events, webhooks
    from persistence.audit import Actor
    from persistence.db import transaction
    from persistence.models import WebhookEndpoint

    ids, system = [], Actor(user_id=None, role=None, tenant_id=tenant_id)
    for start in range(0, count, 500):
        with transaction() as session:
            row = session.get(WebhookEndpoint, endpoint_id)
            for _ in range(min(500, count - start)):
                ids.append(events.record_change(session, tenant_id=tenant_id, actor=system,
                                                action="webhook_endpoint.update", resource_type="webhook_endpoint",
                                                resource_id=row.id, event_type="webhook_endpoint.updated",
                                                data=webhooks.endpoint_view(row)).id)
    return ids


def _endpoint(tenant_id: uuid.UUID, url: str) -> uuid.UUID:
    from persistence import webhooks
    from persistence.db import transaction

    with transaction() as session:
        row, _ = webhooks.create_endpoint(session, tenant_id=tenant_id, url=url, description="bench", event_types=[],
                                          enabled=True)
        return row.id


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _worker(env: BenchEnv, concurrency: int) -> subprocess.Popen:
    environ = {**env.environ(), "HUB_ENV": "development", "HUB_OUTBOUND_ALLOWLIST": "127.0.0.1",
               "HUB_LOG_FORMAT": "text"}
    return subprocess.Popen([sys.executable, "-m", "server.cli", "worker", "--concurrency", str(concurrency)],
                            cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _cpu_per_patch(env: BenchEnv, account, endpoint_id: uuid.UUID, *, samples: int, rounds: int,
                         log) -> dict[str, list[float]]:
    """CPU µs per `PATCH /webhooks/endpoints/{id}`: emitting (record_change) vs auditing only, interleaved."""
    from persistence import audit, events
    from server.app import create_app

    emitting = events.record_change

    def audit_only(session, *, tenant_id, actor, action, resource_type, resource_id, event_type, data, changes=None):
        return audit.record(session, tenant_id=tenant_id, actor=actor, action=action, resource_type=resource_type,
                            resource_id=resource_id, changes=changes)

    app = create_app(env.settings())
    path = f"/api/v1/webhooks/endpoints/{endpoint_id}"
    results: dict[str, list[float]] = {"emit": [], "audit_only": []}
    async with AsgiClient(app) as client:
        for r in range(rounds):
            for name, function in (("emit", emitting), ("audit_only", audit_only)):
                events.record_change = function
                try:
                    for i in range(5):  # warm
                        await client.request("PATCH", path, headers=account.headers,
                                             body=json.dumps({"description": f"warm {i}"}).encode())
                    started = time.process_time()
                    for i in range(samples):
                        status, body = await client.request("PATCH", path, headers=account.headers,
                                                            body=json.dumps({"description": f"{name} {r} {i}"}).encode())
                        assert status == 200, body[:300]
                    results[name].append((time.process_time() - started) / samples * 1e6)
                finally:
                    events.record_change = emitting
            log(f"  round {r + 1}: emit {results['emit'][-1]:.0f} µs, audit only {results['audit_only'][-1]:.0f} µs")
    return results


def measure(env: BenchEnv, *, events: int, latency_samples: int, cpu_samples: int, cpu_rounds: int,
            concurrency: int, log) -> dict:
    """Run the three measurements on a fresh database under `env`; return the figures and targets.

    `cpu_rounds=0` skips the CPU cost of emitting (the main bench's capabilities phase measures
    delivery only); its figures and target are then absent.
    """
    fixture = prepare(env, providers=10, accounts=2)
    account = fixture.take()
    receiver = Receiver().start()
    endpoint_id = _endpoint(account.tenant_id, receiver.url)
    figures: dict = {}
    try:
        log(f"Webhooks: {events:,} events queued, then one worker process (concurrency {concurrency}) ...")
        ids = _emit(account.tenant_id, endpoint_id, events)
        worker = _worker(env, concurrency)
        try:
            _wait(lambda: len(receiver.arrivals) > 0, timeout=60)
            cpu_start, seen_start = _cpu_seconds(worker.pid), len(receiver.arrivals)
            if not _wait(lambda: len(receiver.arrivals) >= len(ids), timeout=120 + len(ids) / 20):
                raise RuntimeError(f"only {len(receiver.arrivals)} of {len(ids)} delivered in time")
            cpu_ms = (_cpu_seconds(worker.pid) - cpu_start) * 1000 / max(1, len(ids) - seen_start)
            times = sorted(receiver.arrivals[i] for i in ids)
            figures["deliveries"] = len(ids)
            figures["requests"] = receiver.requests
            figures["deliveries_per_s"] = round(len(ids) / (times[-1] - times[0]), 1)
            figures["worker_cpu_ms_per_delivery"] = round(cpu_ms, 2)
            figures["deliveries_per_cpu_second"] = round(1000 / cpu_ms, 1) if cpu_ms else None
            log(f"  {figures['deliveries_per_s']} deliveries/s; worker CPU {cpu_ms:.2f} ms a delivery "
                f"({figures['deliveries_per_cpu_second']} per CPU-second)")

            log(f"Webhooks: latency of {latency_samples} events to an idle worker ...")
            time.sleep(1.0)
            latencies = []
            for _ in range(latency_samples):
                [event_id] = _emit(account.tenant_id, endpoint_id, 1)
                committed = time.time()
                if not _wait(lambda: event_id in receiver.arrivals, timeout=30):
                    raise RuntimeError(f"{event_id} not delivered in 30 s")
                latencies.append((receiver.arrivals[event_id] - committed) * 1000)
                time.sleep(0.02 + (hash(event_id) % 30) / 1000)  # idle between events, out of phase with the poll
            figures["latency_ms"] = {"p50": round(_percentile(latencies, 0.5), 1),
                                     "p99": round(_percentile(latencies, 0.99), 1),
                                     "max": round(max(latencies), 1), "samples": len(latencies)}
            log(f"  p50 {figures['latency_ms']['p50']} ms, p99 {figures['latency_ms']['p99']} ms")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
    finally:
        receiver.stop()

    targets = [
        {"name": "deliveries/s (one worker)", "value": figures["deliveries_per_s"], "target": ">= 300",
         "pass": figures["deliveries_per_s"] >= TARGETS["deliveries_per_s"]},
        {"name": "event-to-first-attempt p50 ms", "value": figures["latency_ms"]["p50"], "target": "<= 100",
         "pass": figures["latency_ms"]["p50"] <= TARGETS["latency_p50_ms"]},
        {"name": "event-to-first-attempt p99 ms", "value": figures["latency_ms"]["p99"], "target": "<= 1000",
         "pass": figures["latency_ms"]["p99"] <= TARGETS["latency_p99_ms"]},
    ]
    if cpu_rounds:
        log("Webhooks: CPU per mutation, emitting vs auditing only ...")
        cpu = asyncio.run(_cpu_per_patch(env, account, endpoint_id, samples=cpu_samples, rounds=cpu_rounds, log=log))
        emit_us, audit_us = statistics.median(cpu["emit"]), statistics.median(cpu["audit_only"])
        figures["cpu_us_per_patch"] = {"emit": round(emit_us, 1), "audit_only": round(audit_us, 1),
                                       "rounds": cpu_rounds, "samples": cpu_samples}
        figures["emit_cpu_overhead_pct"] = round((emit_us - audit_us) / audit_us * 100, 1)
        targets.append({"name": "emit CPU overhead %", "value": figures["emit_cpu_overhead_pct"], "target": "<= 10",
                        "pass": figures["emit_cpu_overhead_pct"] <= TARGETS["emit_cpu_overhead_pct"]})
    return {"webhooks": figures, "targets": targets}


def table(result: dict) -> str:
    """The section's figures and targets as text."""
    lines = ["Webhooks", f"  {'measure':34} {'value':>10}  target   result"]
    for target in result["targets"]:
        lines.append(f"  {target['name']:34} {target['value']:>10}  {target['target']:8} "
                     f"{'PASS' if target['pass'] else 'MISS'}")
    lines.append(f"  worker CPU per delivery: {result['webhooks']['worker_cpu_ms_per_delivery']} ms "
                 f"({result['webhooks']['deliveries_per_cpu_second']} deliveries per CPU-second)")
    cpu = result["webhooks"]["cpu_us_per_patch"]
    lines.append(f"  CPU per PATCH: {cpu['emit']} µs emitting, {cpu['audit_only']} µs auditing only (median of "
                 f"{cpu['rounds']} rounds x {cpu['samples']})")
    return "\n".join(lines)
