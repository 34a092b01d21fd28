"""CPU microseconds per request, in-process: the apps driven by AsgiClient, interleaved (A B C A B C).

`time.process_time` counts every thread of the process, so work the apps hand to the
threadpool (handlers, database calls) is included.
Each (app, round, operation) uses a fresh tenant so rate-limit windows start empty.
"""

from __future__ import annotations

import time

from benchlib.asgi import AsgiClient
from benchlib.fixture import Account, Fixture
from benchlib.ops import OPERATIONS, Operation

# Requests per measurement (full mode); the catalog page sorts 10k rows, so fewer of those.
SAMPLES = {"catalog": 40, "me": 300, "create": 250, "me_limited": 300}
WARMUP = 20


class BenchError(RuntimeError):
    """An operation answered something else than its expected status: nothing to time."""


def path(op: Operation, app: str) -> str:
    """The path `app` serves `op` on: the hub's own, or the floor's (the FastAPI app mirrors the floor's routes)."""
    return op.path if app == "hub" else op.floor_path


async def call(client: AsgiClient, op: Operation, *, app: str, account: Account, provider_id: str,
               name: str) -> None:
    """Send `op` once to `app` ("floor", "fastapi" or "hub"); raise BenchError unless it answers the expected status."""
    status, body = await client.request(op.method, path(op, app), query=op.query,
                                        headers=account.headers, body=op.body(provider_id, name))
    if status != op.expected:
        raise BenchError(f"{app} {op.label}: {status} {body[:300]!r}")


async def cpu_us(client: AsgiClient, op: Operation, *, app: str, fixture: Fixture, samples: int,
                 tag: str) -> float:
    """Return the mean CPU µs per request of `op` over `samples` requests (after a warm-up)."""
    account = fixture.take()
    for i in range(WARMUP):
        await call(client, op, app=app, account=account, provider_id=fixture.provider_id, name=f"{tag}-w{i}")
    started = time.process_time()
    for i in range(samples):
        await call(client, op, app=app, account=account, provider_id=fixture.provider_id, name=f"{tag}-{i}")
    return (time.process_time() - started) / samples * 1e6


async def measure(apps: dict[str, AsgiClient], fixture: Fixture, *, rounds: int,
                  sample_scale: float) -> dict[str, dict[str, list[float]]]:
    """Return {operation: {app: [µs per round]}} for `apps` ({"floor": .., "fastapi": .., "hub": ..}), interleaved."""
    results = {op.key: {name: [] for name in apps} for op in OPERATIONS}
    for r in range(rounds):
        for op in OPERATIONS:
            samples = max(5, int(SAMPLES[op.key] * sample_scale))
            for name, client in apps.items():
                value = await cpu_us(client, op, app=name, fixture=fixture, samples=samples, tag=f"cpu-{name}-{r}")
                results[op.key][name].append(value)
    return results
