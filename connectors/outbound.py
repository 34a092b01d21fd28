"""The one guard every outbound HTTP call goes through (provider APIs, token URLs, test requests).

Server-side request forgery defence (OWASP SSRF Prevention Cheat Sheet): only http(s); the host
is resolved once and every address must be globally routable unless it is on the allowlist;
the connection is pinned to the checked address (so DNS cannot change between check and use);
redirects are never followed; connect/read timeouts; the response body is capped.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from connectors.telemetry import OUTBOUND_CALLS, OUTBOUND_DURATION

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
# Not globally routable, or special-purpose, beyond what `ipaddress.is_global` already refuses.
_ALWAYS_FORBIDDEN = [
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT, RFC 6598
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, cloud metadata (169.254.169.254)
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64, RFC 6052: maps onto IPv4 targets
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64, RFC 8215
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
]


class OutboundRefused(Exception):
    """The URL may not be called: bad scheme, unresolvable host, or a forbidden address."""


@dataclass(frozen=True)
class OutboundPolicy:
    """What outbound calls may reach. `allowlist` holds hosts, IPs or CIDRs exempt from the address check."""

    allowlist: tuple[str, ...] = ()
    timeout: float = 10.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    _networks: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets = []
        for entry in self.allowlist:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # a host name; matched by name in `allows_host`
        object.__setattr__(self, "_networks", tuple(nets))

    def allows_host(self, host: str) -> bool:
        """True when the host name itself is allowlisted."""
        return host.lower() in {entry.lower() for entry in self.allowlist}

    def allows_address(self, address: ipaddress._BaseAddress) -> bool:
        """True when the address is globally routable, or inside an allowlisted network."""
        if any(address in net for net in self._networks):
            return True
        mapped = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
        if mapped is not None and not self.allows_address(mapped):
            return False
        if any(address in net for net in _ALWAYS_FORBIDDEN if net.version == address.version):
            return False
        return address.is_global and not address.is_multicast


def check_url(url: str, policy: OutboundPolicy) -> tuple[str, str]:
    """Validate `url` and resolve its host; return (host, checked IP address to connect to).

    Raises OutboundRefused for a non-http(s) URL, a missing or unresolvable host, or any
    resolved address that is not allowed (all addresses must pass, so a name with one private
    record is refused).
    """
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise OutboundRefused("malformed URL: invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused("only absolute http(s) URLs may be called")
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundRefused(f"cannot resolve host {host!r}: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise OutboundRefused(f"cannot resolve host {host!r}")
    if not policy.allows_host(host):
        for address in addresses:
            if not policy.allows_address(address):
                raise OutboundRefused(f"address {address} of host {host!r} is not allowed")
    return host, str(addresses[0])


def screen_url(url: str, policy: OutboundPolicy) -> None:
    """Refuse, at configuration time, a URL whose host is or resolves to a forbidden address.

    A host that does not resolve now is let through (it is checked again on every call), so a
    catalog of real services can be configured on a machine without DNS.
    Raises OutboundRefused for a non-http(s) URL or a forbidden address.
    """
    try:
        check_url(url, policy)
    except OutboundRefused as exc:
        if str(exc).startswith("cannot resolve host"):
            return
        raise


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport that checks every request's URL and pins it to the checked address."""

    def __init__(self, policy: OutboundPolicy, **kwargs) -> None:
        # One TLS context for every transport: building one loads the CA bundle (~60 ms), which
        # a client per provider call (sync pages, proxy) would otherwise pay on every request.
        kwargs.setdefault("verify", tls_context())
        super().__init__(**kwargs)
        self.policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            host, address = check_url(str(request.url), self.policy)
        except OutboundRefused:
            OUTBOUND_CALLS.labels(host=host, outcome="refused").inc()
            raise
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        request.headers["Host"] = request.url.netloc.decode("ascii")
        ip_host = f"[{address}]" if ":" in address else address
        request.url = request.url.copy_with(host=ip_host)
        started = time.perf_counter()
        try:
            response = super().handle_request(request)
        except httpx.HTTPError:
            OUTBOUND_CALLS.labels(host=host, outcome="error").inc()
            raise
        finally:
            OUTBOUND_DURATION.labels(host=host).observe(time.perf_counter() - started)
        OUTBOUND_CALLS.labels(host=host, outcome=str(response.status_code)).inc()
        return response


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The default verifying TLS context (certifi's CA bundle), built once; SSLContext is thread-safe."""
    return httpx.create_ssl_context()


def client(policy: OutboundPolicy, **kwargs) -> httpx.Client:
    """Return an httpx client whose every request passes the guard; redirects are not followed."""
    return httpx.Client(
        transport=GuardedTransport(policy),
        timeout=httpx.Timeout(policy.timeout),
        follow_redirects=False,
        **kwargs,
    )


def read_capped(response: httpx.Response, limit: int) -> bytes:
    """Read a streamed response body, raising OutboundRefused past `limit` bytes."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise OutboundRefused(f"response body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
