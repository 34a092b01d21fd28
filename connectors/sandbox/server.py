"""Run the sandbox app on a loopback port in a background thread (tests, demos)."""

from __future__ import annotations

import threading
from types import TracebackType

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from connectors.sandbox.app import STATE_EXTENSION, create_sandbox_app
from connectors.sandbox.config import SandboxConfig
from connectors.sandbox.state import SandboxState


class _QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class SandboxServer:
    """A sandbox provider served over real HTTP by werkzeug's threaded server in a daemon thread.

    Use as a context manager or call `start()` / `stop()`. `port=0` lets the OS choose a free
    port; read the address from `base_url` after start. `app`, `config` and `state` are the live
    objects, so tests may tweak them (`server.config.access_token_ttl = 2`,
    `server.state.revoke_all()`, `server.state.force_rate_limit(30)`).
    """

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 *, log_requests: bool = False) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.app: Flask = create_sandbox_app(self.config)
        self.state: SandboxState = self.app.extensions[STATE_EXTENSION]
        self._host = host
        self._port = port
        self._handler = None if log_requests else _QuietRequestHandler
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """Return e.g. "http://127.0.0.1:43123"; raise RuntimeError when not started."""
        if self._server is None:
            raise RuntimeError("SandboxServer is not running; call start() first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._server.server_port}"

    def start(self) -> SandboxServer:
        """Bind the port and serve in a daemon thread; return self. Starting twice is a no-op."""
        if self._server is None:
            self._server = make_server(self._host, self._port, self.app, threaded=True, request_handler=self._handler)
            # A short poll interval keeps stop() fast: shutdown() waits for the loop's next poll.
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="sandbox-provider", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and wait for the thread. Safe to call twice."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
