"""Throwaway Redis server for the tests: `redis-server` on a free loopback port, persistence off.

Typical use::

    if find_redis_server() is None:
        pytest.skip("redis-server not installed")
    with RedisServer() as redis:
        storage_uri = redis.url        # redis://127.0.0.1:PORT

The server keeps nothing on disk (no RDB snapshots, no AOF), listens on 127.0.0.1 only, runs in
the foreground as a child process, and is stopped on `stop()` / leaving the `with` block
(SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL). Only the standard library is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["RedisServer", "RedisUnavailable", "find_redis_server"]

HOST = "127.0.0.1"
_START_TIMEOUT = 10.0  # seconds until the server must answer PING
_STOP_TIMEOUT = 10.0
_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server",
               "/opt/homebrew/bin/redis-server")


class RedisUnavailable(RuntimeError):
    """The server binary is missing, or the server did not start (message: its output)."""


def find_redis_server() -> str | None:
    """Return the path of the `redis-server` binary (PATH first, then usual places), or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    return next((path for path in _CANDIDATES if os.access(path, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _command(port: int, command: bytes, timeout: float = 1.0) -> bytes:
    """Send one inline command and return the first reply line (b"" if the server hung up)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(command + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            reply += chunk
    return reply


class RedisServer:
    """One `redis-server` child process on a free port of 127.0.0.1, with nothing persisted."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._dir: Path | None = None
        self._log = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT` (the storage URI the `limits` library takes)."""
        if self.port is None:
            raise RedisUnavailable("server not started")
        return f"redis://{HOST}:{self.port}"

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers PING; RedisUnavailable on failure."""
        if self.binary is None:
            raise RedisUnavailable("redis-server not found")
        if self.process is not None:
            raise RedisUnavailable("server already started")
        self._dir = Path(tempfile.mkdtemp(prefix="redistest-"))
        self._log = open(self._dir / "redis.log", "w+b")
        for _ in range(3):  # another process may take the port between choosing and binding it
            self.port = _free_port()
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--dir", str(self._dir), "--protected-mode", "yes", "--loglevel", "warning"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self._dir)
            if self._wait_ready():
                return self
            self._kill()
        output = self._output()
        self.stop()
        raise RedisUnavailable(f"redis-server did not start:\n{output}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if _command(self.port, b"PING").startswith(b"+PONG"):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def _kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_TIMEOUT)
        self.process = None

    def stop(self) -> None:
        """Stop the server (SHUTDOWN NOSAVE, then signals) and remove its directory. Safe to repeat."""
        if self.process is not None and self.process.poll() is None:
            try:
                _command(self.port, b"SHUTDOWN NOSAVE")
            except OSError:
                pass
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.port = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None and self.process.poll() is None else "stopped"
        return f"<RedisServer {state} port={self.port}>"


@contextlib.contextmanager
def redis_or_skip(purpose: str):
    """Yield a running `RedisServer` for `purpose` (e.g. "rate-limit"); without redis-server the
    tests are skipped visibly, except with CI=true where they are mandatory and fail."""
    if find_redis_server() is None:
        message = "redis-server not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: the Redis {purpose} tests are mandatory in CI", pytrace=False)
        pytest.skip(f"{message}: Redis {purpose} tests skipped")
    with RedisServer() as server:
        yield server
