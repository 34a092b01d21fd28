"""connectors.outbound: the SSRF guard every outbound call passes, and where the hub applies it.

Unit tests of `check_url`, `GuardedTransport`, `client` and `read_capped` against real loopback
servers, then the two places the API applies the policy: when a provider is configured
(POST /admin/integrations) and when a connection is used (POST .../connection/test).
"""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlmodel import select

from connectors.outbound import (
    GuardedTransport,
    OutboundPolicy,
    OutboundRefused,
    check_url,
    client,
    read_capped,
)
from connectors.probe import probe
from persistence.db import transaction
from persistence.models import Provider
from tests import factories
from tests.handlers.test_providers import assert_error

PROVIDERS = "/api/v1/admin/integrations"
TENANT_INTEGRATIONS = "/api/v1/tenant/integrations"
NO_ALLOWLIST = OutboundPolicy(allowlist=(), timeout=2)
METADATA = "http://169.254.169.254/latest/meta-data/"
BODY_BYTES = 2048  # what /big answers


class _Handler(BaseHTTPRequestHandler):
    """/redirect-metadata 302 to the metadata address, /redirect-local 302 to /ok, /big BODY_BYTES bytes, /ok 200."""

    def do_GET(self) -> None:
        self.server.hits.append((self.path, self.headers.get("Host")))
        if self.path == "/redirect-metadata":
            self._answer(302, b"", {"Location": METADATA})
        elif self.path == "/redirect-local":
            self._answer(302, b"", {"Location": "/ok"})
        elif self.path == "/big":
            self._answer(200, b"x" * BODY_BYTES)
        elif self.path == "/ok":
            self._answer(200, b'{"ok": true}', {"Content-Type": "application/json"})
        else:
            self._answer(404, b"")

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _serve(host: str, family: int | None = None):
    server_class = ThreadingHTTPServer
    if family is not None:
        server_class = type("IPv6Server", (ThreadingHTTPServer,), {"address_family": family})
    server = server_class((host, 0), _Handler)
    server.daemon_threads = True
    server.hits = []
    bracketed = f"[{host}]" if ":" in host else host
    server.base_url = f"http://{bracketed}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def loopback():
    """A threaded HTTP server on 127.0.0.1:<free port> (`.base_url`, `.hits`)."""
    server = _serve("127.0.0.1")
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def loopback_v6():
    """The same server on [::1]:<free port>; skipped where the machine has no IPv6 loopback."""
    import socket

    try:
        server = _serve("::1", socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    yield server
    server.shutdown()
    server.server_close()


class StartsWith:
    """Equals any string that starts with `prefix` (for messages that end with the resolver's words)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(self.prefix)

    def __repr__(self) -> str:
        return f"<text starting with {self.prefix!r}>"


def db_provider_by_key(key: str) -> Provider | None:
    with transaction() as session:
        return session.exec(select(Provider).where(Provider.provider == key)).first()


class TestCheckUrl:
    @pytest.mark.parametrize("url", [
        "http://127.0.0.1/",
        "http://127.1.2.3/",
        "http://localhost/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "http://[fd00:ec2::254]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "https://10.0.0.1:8443/api",
    ])
    def test_refuses_non_global_address(self, url):
        with pytest.raises(OutboundRefused, match="is not allowed"):
            check_url(url, NO_ALLOWLIST)

    @pytest.mark.parametrize("url", [
        "ftp://93.184.216.34/file",
        "file:///etc/passwd",
        "gopher://93.184.216.34:70/",
        "93.184.216.34/path",
        "http:///path-without-host",
        "//93.184.216.34/",
    ])
    def test_refuses_non_http_url(self, url):
        with pytest.raises(OutboundRefused, match="only absolute http\\(s\\) URLs may be called"):
            check_url(url, NO_ALLOWLIST)

    def test_refuses_malformed_port(self):
        with pytest.raises(OutboundRefused, match="malformed URL: invalid port"):
            check_url("http://93.184.216.34:99999/", NO_ALLOWLIST)

    def test_refuses_unresolvable_host(self):
        with pytest.raises(OutboundRefused, match="cannot resolve host 'hub-test-unresolvable.invalid'"):
            check_url("http://hub-test-unresolvable.invalid/", NO_ALLOWLIST)

    @pytest.mark.parametrize("url, expected", [
        ("http://93.184.216.34/", ("93.184.216.34", "93.184.216.34")),
        ("https://93.184.216.34:8443/v1?q=1", ("93.184.216.34", "93.184.216.34")),
        ("http://[2606:2800:220:1:248:1893:25c8:1946]/", ("2606:2800:220:1:248:1893:25c8:1946",
                                                           "2606:2800:220:1:248:1893:25c8:1946")),
    ])
    def test_passes_global_literal(self, url, expected):
        assert check_url(url, NO_ALLOWLIST) == expected


class TestAllowlist:
    def test_listed_address_passes(self):
        assert check_url("http://127.0.0.1:8100/me", OutboundPolicy(allowlist=("127.0.0.1",))) == ("127.0.0.1", "127.0.0.1")

    def test_neighbour_of_listed_address_is_refused(self):
        with pytest.raises(OutboundRefused, match="address 127.0.0.2 of host '127.0.0.2' is not allowed"):
            check_url("http://127.0.0.2/", OutboundPolicy(allowlist=("127.0.0.1",)))

    def test_cidr_entry_covers_its_network_only(self):
        policy = OutboundPolicy(allowlist=("10.20.0.0/16",))

        assert check_url("http://10.20.30.40/", policy) == ("10.20.30.40", "10.20.30.40")
        with pytest.raises(OutboundRefused):
            check_url("http://10.21.0.1/", policy)
        with pytest.raises(OutboundRefused):
            check_url("http://169.254.169.254/", policy)

    def test_listing_loopback_does_not_open_metadata(self):
        with pytest.raises(OutboundRefused):
            check_url(METADATA, OutboundPolicy(allowlist=("127.0.0.1", "::1", "localhost")))

    def test_host_name_entry_exempts_that_name(self):
        assert check_url("http://localhost:9/", OutboundPolicy(allowlist=("localhost",)))[0] == "localhost"

    def test_host_name_entry_is_exact(self):
        with pytest.raises(OutboundRefused):
            check_url("http://127.0.0.1/", OutboundPolicy(allowlist=("localhost",)))


class TestGuardedTransport:
    def test_calls_allowed_address_and_keeps_host_header(self, loopback):
        policy = OutboundPolicy(allowlist=("127.0.0.1",), timeout=2)
        with httpx.Client(transport=GuardedTransport(policy), timeout=2) as http:
            response = http.get(loopback.base_url + "/ok")

        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert loopback.hits[-1] == ("/ok", loopback.base_url.removeprefix("http://"))

    def test_refuses_loopback_v6_not_on_the_allowlist(self, loopback_v6):
        hits_before = len(loopback_v6.hits)
        policy = OutboundPolicy(allowlist=("127.0.0.1",), timeout=2)

        with (httpx.Client(transport=GuardedTransport(policy), timeout=2) as http,
              pytest.raises(OutboundRefused, match="address ::1 of host '::1' is not allowed")):
            http.get(loopback_v6.base_url + "/ok")
        assert len(loopback_v6.hits) == hits_before

    def test_refuses_loopback_without_allowlist(self, loopback):
        hits_before = len(loopback.hits)

        with (httpx.Client(transport=GuardedTransport(NO_ALLOWLIST), timeout=2) as http,
              pytest.raises(OutboundRefused, match="address 127.0.0.1 of host '127.0.0.1' is not allowed")):
            http.get(loopback.base_url + "/ok")
        assert len(loopback.hits) == hits_before


class TestRedirects:
    def test_redirect_to_metadata_is_answered_not_followed(self, loopback):
        requested: list[str] = []
        policy = OutboundPolicy(allowlist=("127.0.0.1",), timeout=2)

        with client(policy, event_hooks={"request": [lambda request: requested.append(str(request.url))]}) as http:
            response = http.get(loopback.base_url + "/redirect-metadata")

        assert response.status_code == 302
        assert response.headers["Location"] == METADATA
        assert requested == [loopback.base_url + "/redirect-metadata"]

    def test_redirect_on_the_same_host_is_not_followed_either(self, loopback):
        hits_before = len(loopback.hits)
        policy = OutboundPolicy(allowlist=("127.0.0.1",), timeout=2)

        with client(policy) as http:
            response = http.get(loopback.base_url + "/redirect-local")

        assert response.status_code == 302
        assert [path for path, _ in loopback.hits[hits_before:]] == ["/redirect-local"]

    def test_probe_reports_a_redirect_as_a_failed_answer(self, loopback):
        policy = OutboundPolicy(allowlist=("127.0.0.1",), timeout=2)

        result = probe(loopback.base_url, method="GET", path="/redirect-metadata", expected_status=None, policy=policy)

        assert result.success is False
        assert result.status == 302
        assert result.error == f"GET {loopback.base_url}/redirect-metadata answered 302, expected a 2xx"


class TestReadCapped:
    def _read(self, loopback, limit: int) -> bytes:
        policy = OutboundPolicy(allowlist=("127.0.0.1",), timeout=2)
        with client(policy) as http, http.stream("GET", loopback.base_url + "/big") as response:
            return read_capped(response, limit)

    def test_reads_a_body_within_the_cap(self, loopback):
        assert self._read(loopback, BODY_BYTES) == b"x" * BODY_BYTES

    def test_raises_past_the_cap(self, loopback):
        with pytest.raises(OutboundRefused, match=f"response body exceeds {BODY_BYTES - 1} bytes"):
            self._read(loopback, BODY_BYTES - 1)

    def test_probe_reports_an_oversized_body_as_refused(self, loopback):
        policy = OutboundPolicy(allowlist=("127.0.0.1",), timeout=2, max_response_bytes=1024)

        result = probe(loopback.base_url, method="GET", path="/big", expected_status=None, policy=policy)

        assert result.success is False
        assert result.error == (f"GET {loopback.base_url}/big refused by the outbound guard: "
                                "response body exceeds 1024 bytes")


class TestRefusedWhenConfigured:
    """POST /admin/integrations screens apiBaseUrl and the OAuth URLs (conftest allowlists 127.0.0.1 only)."""

    @pytest.mark.parametrize("field, overrides, address, host", [
        ("apiBaseUrl", {"apiBaseUrl": "http://169.254.169.254"}, "169.254.169.254", "169.254.169.254"),
        ("apiBaseUrl", {"apiBaseUrl": "http://10.0.0.1/api"}, "10.0.0.1", "10.0.0.1"),
        ("apiBaseUrl", {"apiBaseUrl": "http://[::1]:8080"}, "::1", "::1"),
        ("apiBaseUrl", {"apiBaseUrl": "http://[::ffff:169.254.169.254]"}, "::ffff:a9fe:a9fe", "::ffff:169.254.169.254"),
        ("apiBaseUrl", {"apiBaseUrl": "http://167772161/"}, "10.0.0.1", "167772161"),
        ("oauthConfig.tokenUrl", {"oauthConfig": {"tokenUrl": "http://10.0.0.1/token"}}, "10.0.0.1", "10.0.0.1"),
        ("oauthConfig.tokenUrl", {"oauthConfig": {"tokenUrl": "http://169.254.169.254/token"}}, "169.254.169.254",
         "169.254.169.254"),
        ("oauthConfig.revocationUrl", {"oauthConfig": {"revocationUrl": "http://192.168.1.1/revoke"}}, "192.168.1.1",
         "192.168.1.1"),
    ])
    def test_forbidden_address_is_refused(self, client, super_admin, sandbox, field, overrides, address, host):
        fields = factories.sandbox_provider_fields(sandbox.base_url)
        if "oauthConfig" in overrides:
            fields["oauthConfig"] = fields["oauthConfig"] | overrides.pop("oauthConfig")
        body = factories.provider_body(**(fields | overrides))

        response = client.post(PROVIDERS, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR",
                     message=f"{field} may not be called: address {address} of host '{host}' is not allowed",
                     details={"field": field})
        assert db_provider_by_key(body["provider"]) is None

    def test_non_http_base_url_is_refused(self, client, super_admin):
        body = factories.provider_body(apiBaseUrl="ftp://93.184.216.34/")

        response = client.post(PROVIDERS, json=body, headers=super_admin.headers)

        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert db_provider_by_key(body["provider"]) is None

    def test_forbidden_address_is_refused_on_update(self, client, super_admin, sandbox_provider):
        url = f"{PROVIDERS}/{sandbox_provider['category']}/{sandbox_provider['id']}"

        response = client.patch(url, json={"apiBaseUrl": "http://169.254.169.254"}, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR",
                     message="apiBaseUrl may not be called: address 169.254.169.254 of host '169.254.169.254' is not allowed",
                     details={"field": "apiBaseUrl"})
        with transaction() as session:
            assert session.get(Provider, uuid.UUID(sandbox_provider["id"])).api_base_url == sandbox_provider["apiBaseUrl"]


class TestRefusedWhenCalled:
    """A URL that passes configuration is checked again on every call."""

    def _api_key_integration(self, client, super_admin, tenant_admin, base_url: str) -> dict:
        provider = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(
            base_url, authType="api_key", oauthConfig=None))
        return factories.enable_integration(client, tenant_admin, provider["id"])

    def test_unresolvable_host_is_accepted_at_creation_and_refused_at_call(self, client, super_admin, tenant_admin):
        base_url = "http://hub-test-unresolvable.invalid"
        integration = self._api_key_integration(client, super_admin, tenant_admin, base_url)

        response = client.post(f"{TENANT_INTEGRATIONS}/{integration['id']}/connect/api-key",
                               json={"apiKey": "sandbox-api-key"}, headers=tenant_admin.headers)

        assert_error(response, 502, "CONNECTION_FAILED",
                     message=StartsWith(f"GET {base_url}/me refused by the outbound guard: cannot resolve host "
                                        f"'hub-test-unresolvable.invalid'"),
                     details={"providerStatus": None})

    def test_address_changed_in_the_database_is_refused_at_call(self, client, super_admin, tenant_admin, sandbox):
        integration = self._api_key_integration(client, super_admin, tenant_admin, sandbox.base_url)
        connected = client.post(f"{TENANT_INTEGRATIONS}/{integration['id']}/connect/api-key",
                                json={"apiKey": "sandbox-api-key"}, headers=tenant_admin.headers)
        assert connected.status_code == 200, connected.text
        with transaction() as session:
            row = session.get(Provider, uuid.UUID(integration["integrationId"]))
            row.api_base_url = "http://10.0.0.1"
            session.add(row)

        response = client.post(f"{TENANT_INTEGRATIONS}/{integration['id']}/connection/test", headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is False
        assert body["error"] == ("GET http://10.0.0.1/me refused by the outbound guard: "
                                 "address 10.0.0.1 of host '10.0.0.1' is not allowed")
        assert body["responseTime"] is None
        assert "details" not in body
