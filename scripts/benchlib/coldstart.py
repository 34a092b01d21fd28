"""Cold start in a fresh interpreter: import, app build, lifespan start-up (Connexion builds its
middleware stack there), then the first request; floor, FastAPI app and hub in turn, pinned to core 0.
The FastAPI figure is for information (no target)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from benchlib.fixture import ROOT

_PROGRAM = r"""
import asyncio, json, sys, time
from benchlib.asgi import AsgiClient
t0 = time.perf_counter()
if sys.argv[1] == "hub":
    from server.app import create_app as factory
elif sys.argv[1] == "fastapi":
    from bench_fastapi import create_fastapi as factory
else:
    from bench_floor import create_floor as factory
from server.settings import load_settings
t1 = time.perf_counter()
app = factory(load_settings())
t2 = time.perf_counter()

async def main():
    async with AsgiClient(app) as client:
        t3 = time.perf_counter()
        path = "/api/v1/auth/me"
        status, _ = await client.request("GET", path, headers=[(b"authorization", b"Bearer " + sys.argv[2].encode())])
        return t3, time.perf_counter(), status

t3, t4, status = asyncio.run(main())
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "startup_s": t3 - t2, "first_request_s": t4 - t3,
                  "ready_s": t3 - t0, "status": status}))
"""


def _once(app: str, env: dict[str, str], token: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(["taskset", "-c", "0", sys.executable, "-W", "ignore", "-c", _PROGRAM, app, token],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cold start of {app} failed: {done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["process_s"] = time.perf_counter() - started
    if figures["status"] != 200:
        raise RuntimeError(f"cold start of {app}: first request answered {figures['status']}")
    return figures


def measure(env: dict[str, str], token: str, *, runs: int) -> dict:
    """Return {"hub": {...}, "floor": {...}, "fastapi": {...}}: per figure the median, min and max over `runs`."""
    raw = {"hub": [], "floor": [], "fastapi": []}
    for _ in range(runs):
        for app in ("floor", "fastapi", "hub"):
            raw[app].append(_once(app, env, token))
    return {app: {key: {"median": statistics.median(r[key] for r in runs_),
                        "min": min(r[key] for r in runs_), "max": max(r[key] for r in runs_)}
                  for key in ("import_s", "build_s", "startup_s", "first_request_s", "ready_s", "process_s")}
            for app, runs_ in raw.items()}
