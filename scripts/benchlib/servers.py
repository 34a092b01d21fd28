"""uvicorn servers for the throughput runs: one worker, pinned to core 0 with taskset."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchlib.fixture import ROOT
from server.cli import SERVE_LOOP

SERVER_CORE = "0"
HUB_APP = ("server.app:serving_app", "--loop", SERVE_LOOP)  # the factory and event loop `integration-hub serve` runs
FLOOR_APP = ("bench_floor:serving_floor", "--app-dir", str(ROOT / "scripts"))
FASTAPI_APP = ("bench_fastapi:serving_fastapi", "--app-dir", str(ROOT / "scripts"))


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A uvicorn process serving `app` (a factory), its output in `log`."""

    def __init__(self, name: str, app: tuple[str, ...], env: dict[str, str], log: Path) -> None:
        self.name, self.port, self.log = name, free_port(), log
        self.argv = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "uvicorn", *app, "--factory",
                     "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1", "--no-access-log",
                     "--log-level", "warning"]
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, probe_path: str, token: str, timeout: float = 120) -> Server:
        """Start the process and wait until `probe_path` answers 200 with the token."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(self.base + probe_path, headers={"Authorization": f"Bearer {token}"})
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {probe_path} within {timeout:.0f} s; see {self.log}")

    def cpu_seconds(self) -> float:
        """User + system CPU the server process (all its threads) has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 120) -> None:
        """Wait until the server stops using CPU: a run's backlog must not spill into the next run."""
        deadline, last = time.monotonic() + timeout, self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.cpu_seconds()
            if now - last < 0.02:
                return
            last = now

    def peak_rss_mib(self) -> float | None:
        """VmHWM (peak resident set) of the server process, in MiB."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, 9)
            self.proc.wait()
