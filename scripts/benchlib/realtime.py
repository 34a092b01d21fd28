"""Realtime benchmark: 1,000 WebSocket subscribers on one hub process.

Serves the hub as `integration-hub serve --no-sandbox` does (one process, its uvicorn options) on a fresh
SQLite database, opens `sockets` WebSocket subscribers of one tenant (channel `integrations`),
measures the server's resident memory per idle socket, then commits `rounds` events (an
integration enabled over HTTP) and records, for every socket, the delay from the event's
`timestamp` (written in the transaction, before COMMIT) to its arrival at the client. Targets:
p50 <= 50 ms, p99 <= 250 ms, <= 50 KiB per idle socket. The client runs on the same 2-core
machine, so its own reading of 1,000 messages is part of the figures; it reads with websockets'
sans-I/O protocol (`_Subscriber`) and stamps each message as it reads its bytes. Also reported:
the first and the last socket's delay per event, and CPU per event of the hub and the client.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from benchlib.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN = ("bench-admin@hub.local", "bench-admin-password-123")
EVENT_MARK = b'"type":"integration"'  # an event message, not a control message (ping, ...)
TARGETS = {"p50_ms": 50.0, "p99_ms": 250.0, "kib_per_idle_socket": 50.0}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class _Subscriber(asyncio.Protocol):
    """A WebSocket client as light as it gets: websockets' sans-I/O protocol on an asyncio transport.

    The measuring client shares the 2 cores with the hub: websockets' asyncio client spends
    ~80 us of CPU per message (a future and a task step each), which queued 1,000 arrivals
    behind each other as much as the hub's sending did. Here a message is parsed by the same
    library, stamped in `data_received` (the moment the client reads the bytes), and kept for
    the checks after the round.
    """

    def __init__(self, uri: str) -> None:
        # Offers permessage-deflate as browsers do: the hub's answer decides (it declines).
        self.conn = ClientProtocol(parse_uri(uri), extensions=enable_client_permessage_deflate(None))
        self.opened = asyncio.get_running_loop().create_future()
        self.inbox: list[tuple[float, bytes]] = []
        self.on_message = None  # callable(arrived, data) for the round in progress
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.conn.send_request(self.conn.connect())
        self._flush()

    def _flush(self) -> None:
        for data in self.conn.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        arrived = time.time()
        self.conn.receive_data(data)
        for event in self.conn.events_received():
            if isinstance(event, Response):
                if not self.opened.done():
                    self.opened.set_result(event.status_code)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.inbox.append((arrived, bytes(event.data)))
                if EVENT_MARK in event.data:
                    if self.on_message is not None:
                        self.on_message()
                elif json.loads(event.data).get("type") == "ping":
                    # As a client must: the hub closes a socket it has not heard from for
                    # HUB_WS_IDLE_TIMEOUT_SECONDS (90 s), which a slow run of 1,000 sockets outlasted.
                    self.conn.send_text(b'{"type":"pong"}')
        self._flush()

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed"))

    def send(self, text: str) -> None:
        self.conn.send_text(text.encode())
        self._flush()

    def close(self) -> None:
        self.conn.send_close(1000)
        self._flush()
        self.transport.close()


async def _open(host: str, port: int, uri: str) -> _Subscriber:
    _, subscriber = await asyncio.get_running_loop().create_connection(lambda: _Subscriber(uri), host, port)
    status = await asyncio.wait_for(subscriber.opened, 60)
    assert status == 101, status
    return subscriber


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def _run(base: str, ws_url: str, pid: int, *, sockets: int, rounds: int, log) -> dict:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        login = await http.post("/api/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
        root = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        reg = await http.post("/api/v1/auth/register", json={
            "email": f"bench{time.time_ns()}@example.com", "password": "bench-password-123", "name": "Bench",
            "tenantName": f"Bench {time.time_ns()}"})
        admin = reg.json()["accessToken"]
        baseline = _rss_kib(pid)
        log(f"opening {sockets} sockets ...")
        host, port = ws_url.split("//")[1].split("/")[0].split(":")
        conns = []
        for _ in range(sockets):
            ws = await _open(host, int(port), f"{ws_url}?token={admin}")
            ws.send(json.dumps({"type": "subscribe", "channels": ["integrations"]}))
            conns.append(ws)
        deadline = time.monotonic() + 60
        while not all(ws.inbox for ws in conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for ws in conns:
            assert json.loads(ws.inbox[0][1])["type"] == "subscribed", ws.inbox
            ws.inbox.clear()
        await asyncio.sleep(1.0)
        idle = _rss_kib(pid)
        per_socket = (idle - baseline) / sockets
        log(f"server RSS {baseline} KiB -> {idle} KiB with {sockets} idle sockets ({per_socket:.1f} KiB each)")

        samples: list[float] = []
        everyone: list[float] = []
        first: list[float] = []
        client_cpu, server_cpu = time.process_time(), _cpu_seconds(pid)

        for number in range(rounds):
            provider = await http.post("/api/v1/admin/integrations", headers=root, json=_provider())
            everybody = asyncio.get_running_loop().create_future()
            missing = [len(conns)]

            def arrived(everybody=everybody, missing=missing) -> None:
                missing[0] -= 1
                if missing[0] == 0:
                    everybody.set_result(None)

            for ws in conns:
                ws.inbox.clear()
                ws.on_message = arrived
            response = await http.post("/api/v1/tenant/integrations", headers={"Authorization": f"Bearer {admin}"},
                                       json={"integrationId": provider.json()["id"], "name": f"Bench {number}"})
            assert response.status_code == 201, response.text
            await asyncio.wait_for(everybody, timeout=60)
            stamps = []
            for ws in conns:
                ws.on_message = None
                (at, raw), = [item for item in ws.inbox if EVENT_MARK in item[1]]  # exactly one event
                message = json.loads(raw)
                assert message["type"] == "integration" and message["data"]["name"] == f"Bench {number}", message
                sent = datetime.strptime(message["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
                stamps.append(at - sent.timestamp())
            samples += stamps
            everyone.append(max(stamps))
            first.append(min(stamps))
        client_cpu, server_cpu = time.process_time() - client_cpu, _cpu_seconds(pid) - server_cpu
        for ws in conns:
            ws.close()
    samples_ms = sorted(s * 1000 for s in samples)
    return {
        "sockets": sockets, "rounds": rounds,
        "p50_ms": round(statistics.median(samples_ms), 1),
        "p99_ms": round(samples_ms[int(len(samples_ms) * 0.99) - 1], 1),
        "max_ms": round(samples_ms[-1], 1),
        "all_delivered_p50_ms": round(statistics.median(everyone) * 1000, 1),
        "first_delivered_p50_ms": round(statistics.median(first) * 1000, 1),
        "per_event_first_last_ms": [[round(a * 1000), round(b * 1000)] for a, b in zip(first, everyone, strict=True)],
        "client_cpu_ms_per_event": round(client_cpu * 1000 / rounds, 1),
        "server_cpu_ms_per_event": round(server_cpu * 1000 / rounds, 1),
        "kib_per_idle_socket": round(per_socket, 1),
        "server_rss_idle_mib": round(idle / 1024, 1),
    }


def _provider() -> dict:
    key = f"bench_{time.time_ns()}"
    return {"name": "Bench CRM", "displayName": "Bench CRM", "description": "bench", "category": "crm", "provider": key,
            "status": "active", "audience": "tenant", "capabilities": ["read"], "supportedSyncDirections": ["pull"],
            "supportsRealtime": False, "supportsWebhooks": False, "supportsNotifications": False,
            "supportsSearch": False, "searchableEntities": [], "requiresUserScoping": False, "authType": "api_key",
            "oauthConfig": None, "availableEntities": [], "entityMappings": [], "icon": "b", "color": "#336699",
            "version": "v1", "isPremium": False, "requiredPlan": None, "apiBaseUrl": "https://api.bench.example",
            "testRequest": {"method": "GET", "path": "/ping", "expectedStatus": 200}}


def measure(*, sockets: int = 1000, rounds: int = 20, log=print) -> dict:
    """Serve a hub, run the measurement, stop it; return the figures and each target's PASS/MISS."""
    _raise_fd_limit(sockets * 2 + 256)
    work = Path(tempfile.mkdtemp(prefix="bench-realtime-"))
    port = free_port()
    env = {**os.environ, "HUB_VAR_DIR": str(work), "DATABASE_URL": f"sqlite:///{work / 'hub.db'}",
           "JWT_SECRET": "bench-secret-" + "x" * 40, "HUB_ADMIN_EMAIL": ADMIN[0], "HUB_ADMIN_PASSWORD": ADMIN[1],
           "HUB_RATE_LIMIT_SCALE": "1000", "HUB_VALIDATE_RESPONSES": "false", "HUB_LOG_FORMAT": "json",
           "HUB_REALTIME_QUEUE_SIZE": "1000"}
    subprocess.run([sys.executable, "-c", "from server.cli import migrate, bootstrap; from server.settings import "
                    "load_settings as l; s = l(); migrate(s); bootstrap(s)"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    with open(work / "hub.log", "wb") as out:
        # The production serving path: `integration-hub serve` (its uvicorn options, one process).
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--no-sandbox", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"hub did not start; see {work / 'hub.log'}")
            time.sleep(0.2)
        figures = asyncio.run(_run(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", proc.pid,
                                   sockets=sockets, rounds=rounds, log=log))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    shutil.rmtree(work, ignore_errors=True)  # kept when the run failed: its hub.log says why
    figures["targets"] = {name: ("PASS" if figures[name] <= limit else "MISS") for name, limit in TARGETS.items()}
    return figures
