"""Unit tests of connectors.probe.probe against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.outbound import OutboundPolicy
from connectors.probe import USER_AGENT, probe

LOOPBACK = ("127.0.0.1",)  # the test server lives here; the SSRF guard refuses loopback otherwise
SLOW_SECONDS = 2.0  # longer than the short timeouts the tests use, short enough to keep the run quick


class _LoopbackHandler(BaseHTTPRequestHandler):
    """GET/HEAD/POST /ping 200, /redirect 302 to /ping, /slow 200 after SLOW_SECONDS, else 404."""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.server.hits.append((self.command, self.path, dict(self.headers)))
        if self.path == "/slow":
            time.sleep(SLOW_SECONDS)
        if self.path in ("/ping", "/slow"):
            self._answer(200)
        elif self.path == "/redirect":
            self._answer(302, {"Location": "/ping"})
        else:
            self._answer(404)

    do_HEAD = do_GET
    do_POST = do_GET

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the client gave up (timeout tests)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def loopback():
    """A threaded HTTP server on 127.0.0.1:<free port>; yields it (`.base_url`, `.hits`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LoopbackHandler)
    server.daemon_threads = True
    server.hits = []
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def refused_url():
    """A URL on a port that is bound but not listening, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class TestProbe:
    def test_expected_status_is_success(self, loopback):
        result = probe(loopback.base_url, method="GET", path="/ping", expected_status=200, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=2))

        assert result.success is True
        assert result.message == f"GET {loopback.base_url}/ping answered 200 as expected"
        assert result.error is None
        assert result.response_time_ms is not None and result.response_time_ms > 0
        assert result.tested_at.tzinfo is not None and result.tested_at.utcoffset() == timezone.utc.utcoffset(None)

    def test_sends_method_path_and_user_agent(self, loopback):
        loopback.hits.clear()

        result = probe(loopback.base_url + "/", method="HEAD", path="/ping", expected_status=200, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=2))

        assert result.success is True
        assert [(method, path) for method, path, _ in loopback.hits] == [("HEAD", "/ping")]
        assert loopback.hits[0][2]["User-Agent"] == USER_AGENT

    def test_other_status_is_failure_naming_both_statuses(self, loopback):
        result = probe(loopback.base_url, method="GET", path="/nope", expected_status=200, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=2))

        assert result.success is False
        assert result.message is None
        assert result.error == f"GET {loopback.base_url}/nope answered 404, expected 200"
        assert result.response_time_ms is not None and result.response_time_ms > 0

    def test_refused_connection_is_failure_without_response_time(self, refused_url):
        result = probe(refused_url, method="GET", path="/ping", expected_status=200, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=2))

        assert result.success is False
        assert result.message is None
        assert result.error.startswith(f"GET {refused_url}/ping failed: ConnectError")
        assert result.response_time_ms is None

    def test_timeout_is_failure_without_response_time(self, loopback):
        started = time.perf_counter()

        result = probe(loopback.base_url, method="GET", path="/slow", expected_status=200, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=0.5))

        assert time.perf_counter() - started < SLOW_SECONDS
        assert result.success is False
        assert result.message is None
        assert result.error == f"GET {loopback.base_url}/slow timed out after 0.5 s"
        assert result.response_time_ms is None

    def test_redirect_is_an_answer_not_followed(self, loopback):
        loopback.hits.clear()

        result = probe(loopback.base_url, method="GET", path="/redirect", expected_status=302, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=2))

        assert result.success is True
        assert result.message == f"GET {loopback.base_url}/redirect answered 302 as expected"
        assert [path for _, path, _ in loopback.hits] == ["/redirect"]

    def test_redirect_when_another_status_is_expected_is_failure(self, loopback):
        loopback.hits.clear()

        result = probe(loopback.base_url, method="GET", path="/redirect", expected_status=200, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=2))

        assert result.success is False
        assert result.error == f"GET {loopback.base_url}/redirect answered 302, expected 200"
        assert [path for _, path, _ in loopback.hits] == ["/redirect"]

    @pytest.mark.parametrize(("base_url", "path"), [
        ("http://127.0.0.1:abc", "/ping"),
        ("http://[zz]", "/ping"),
        ("http://127.0.0.1:1", "/ping\nHost: elsewhere"),
    ], ids=["bad-port", "bad-ipv6-host", "control-character-in-path"])
    def test_unusable_url_is_failure_not_exception(self, base_url, path):
        result = probe(base_url, method="GET", path=path, expected_status=200, policy=OutboundPolicy(allowlist=LOOPBACK, timeout=0.5))

        assert result.success is False
        assert result.message is None
        assert result.error.startswith("GET ") and "failed" in result.error
        assert result.response_time_ms is None
