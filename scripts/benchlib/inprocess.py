"""CPU microseconds per request, in-process: both apps driven by AsgiClient, A B A B.

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


async def call(client: AsgiClient, op: Operation, *, floor: bool, account: Account, provider_id: str,
               name: str) -> None:
    """Send `op` once; raise BenchError unless it answers the expected status."""
    status, body = await client.request(op.method, op.floor_path if floor else op.path, query=op.query,
                                        headers=account.headers, body=op.body(provider_id, name))
    if status != op.expected:
        raise BenchError(f"{'floor' if floor else 'hub'} {op.label}: {status} {body[:300]!r}")


async def cpu_us(client: AsgiClient, op: Operation, *, floor: bool, fixture: Fixture, samples: int,
                 tag: str) -> float:
    """Return the mean CPU µs per request of `op` over `samples` requests (after a warm-up)."""
    account = fixture.take()
    for i in range(WARMUP):
        await call(client, op, floor=floor, account=account, provider_id=fixture.provider_id, name=f"{tag}-w{i}")
    started = time.process_time()
    for i in range(samples):
        await call(client, op, floor=floor, account=account, provider_id=fixture.provider_id, name=f"{tag}-{i}")
    return (time.process_time() - started) / samples * 1e6


async def measure(floor: AsgiClient, hub: AsgiClient, fixture: Fixture, *, rounds: int,
                  sample_scale: float) -> dict[str, dict[str, list[float]]]:
    """Return {operation: {"floor": [µs per round], "hub": [...]}}, floor and hub interleaved."""
    results = {op.key: {"floor": [], "hub": []} for op in OPERATIONS}
    for r in range(rounds):
        for op in OPERATIONS:
            samples = max(5, int(SAMPLES[op.key] * sample_scale))
            for name, client in (("floor", floor), ("hub", hub)):
                value = await cpu_us(client, op, floor=name == "floor", fixture=fixture, samples=samples,
                                     tag=f"cpu-{name}-{r}")
                results[op.key][name].append(value)
    return results
