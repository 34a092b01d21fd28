"""Sends webhook deliveries: Standard Webhooks headers and signatures, through the SSRF guard.

Each attempt (Standard Webhooks spec, https://www.standardwebhooks.com; Svix's sender):
`POST` of the job's body with `webhook-id` (the event id, the same on every retry),
`webhook-timestamp` (unix seconds of this attempt) and `webhook-signature` (`v1,<base64>` per
signing secret, space-separated: two during a rotation's grace period), signed with the
`standardwebhooks` package. Timeout 15 s; no redirect followed (a 3xx is a failure); the host
is resolved and checked by `connectors.outbound.check_url` at every send and the connection
pinned to the checked address; https only when the deployment says so (production).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import ssl
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from standardwebhooks.webhooks import Webhook

from connectors.outbound import OutboundPolicy, OutboundRefused, check_url, screen_url, tls_context
from persistence.deliveries import RESPONSE_BODY_LIMIT, AttemptResult, Job

if TYPE_CHECKING:
    import aiohttp

TIMEOUT_SECONDS = 15.0
USER_AGENT = "IntegrationHub-Webhooks/1.0"


def check_endpoint_url(url: str, policy: OutboundPolicy, *, https_only: bool) -> None:
    """Refuse, when an endpoint is saved, a URL the sender would refuse (OutboundRefused).

    A host that does not resolve now is let through (it is checked again at every send).
    """
    if https_only and urlsplit(url).scheme != "https":
        raise OutboundRefused("webhook endpoints must use https")
    screen_url(url, policy)


def sign(job: Job, when: datetime) -> dict[str, str]:
    """Return the Standard Webhooks headers of one attempt of `job` made at `when` (aware UTC)."""
    signatures = " ".join(Webhook(secret).sign(job.event_id, when, job.body) for secret in job.secrets)
    return {"webhook-id": job.event_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json", "user-agent": USER_AGENT}


def retry_after_seconds(value: str | None) -> float | None:
    """Parse `Retry-After` (RFC 9110 section 10.2.3: delay-seconds or an HTTP-date) into seconds, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class WebhookSender:
    """Makes delivery attempts over pooled keep-alive connections; use as `async with WebhookSender(...) as sender`.

    aiohttp rather than httpx here: with a pool of 16 connections, httpcore polls every idle
    connection of the pool at each request (`has_expired`), and an attempt cost ~1.9 ms of CPU
    against ~0.14 ms with aiohttp (one worker to a loopback receiver; the bench's figures in the
    README). The SSRF guard is applied as `GuardedTransport` does: each attempt resolves and
    checks the host (`check_url`), then connects to the checked address itself (an IP-literal
    URL, `Host` the endpoint's, TLS SNI and certificate check on the endpoint's host name).
    aiohttp keys its pool by (address, port, TLS, server name), so a kept-alive connection is
    only reused for the same checked address, and for https the same host name. No redirect
    is followed, no cookie is kept, no proxy is taken from the environment.
    """

    def __init__(self, policy: OutboundPolicy, *, https_only: bool, max_connections: int = 100,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.policy, self.https_only = policy, https_only
        self._limit, self._timeout = max_connections, timeout
        self._session: aiohttp.ClientSession | None = None
        self._tls_errors: tuple[type[BaseException], ...] = ()
        self._client_errors: tuple[type[BaseException], ...] = ()

    async def __aenter__(self) -> "WebhookSender":
        # Imported here, not with the module: the API imports this module (the endpoint URL
        # check, the test send) and aiohttp's import (~0.2 s, it builds TLS contexts) would be
        # paid by every API process's cold start. Built inside the running loop, which aiohttp
        # binds its session and connector to.
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ssl=tls_context())
        # What `send` tells apart, kept with the session so an attempt needs no import.
        self._tls_errors = (aiohttp.ClientSSLError, ssl.SSLError)
        self._client_errors = (aiohttp.ClientError, OSError)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout),
                                              cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()

    async def _pinned(self, url: str) -> tuple[str, dict[str, str], str | None]:
        """Check `url` (OutboundRefused) and return (URL to the checked address, Host header, TLS server name)."""
        parts = urlsplit(url)
        if self.https_only and parts.scheme != "https":
            raise OutboundRefused("webhook endpoints must use https")
        if _is_ip_literal(parts.hostname or ""):
            host, address = check_url(url, self.policy)
        else:  # a DNS lookup blocks: keep it off the event loop
            host, address = await asyncio.to_thread(check_url, url, self.policy)
        port = f":{parts.port}" if parts.port is not None else ""
        name = host if host.isascii() else host.encode("idna").decode("ascii")
        target = urlunsplit((parts.scheme, _bracketed(address) + port, parts.path or "/", parts.query, ""))
        return target, {"Host": _bracketed(name) + port}, name if parts.scheme == "https" else None

    async def send(self, job: Job) -> AttemptResult:
        """Make one attempt of `job`; never raises: every failure is an AttemptResult with its error kind."""
        started = time.perf_counter()
        try:
            target, host_header, server_name = await self._pinned(job.url)
            headers = {**sign(job, datetime.now(timezone.utc)), **host_header}
            async with self._session.post(target, data=job.body.encode(), headers=headers, allow_redirects=False,
                                          server_hostname=server_name) as response:
                body = await _read_prefix(response)
            ms = (time.perf_counter() - started) * 1000
            ok = 200 <= response.status < 300
            return AttemptResult(job, response_status=response.status, response_body=body, duration_ms=ms,
                                 error_kind=None if ok else "http_status",
                                 error=None if ok else f"HTTP {response.status}",
                                 retry_after=retry_after_seconds(response.headers.get("retry-after")))
        except OutboundRefused as exc:
            return _failed(job, started, "ssrf_refused", exc)
        except TimeoutError as exc:  # aiohttp's timeouts (ServerTimeoutError included) are TimeoutErrors
            return _failed(job, started, "timeout", str(exc) or "timed out")
        except self._tls_errors as exc:
            return _failed(job, started, "tls", exc)
        except self._client_errors as exc:
            return _failed(job, started, "connect_error", exc)
        except Exception as exc:  # noqa: BLE001 - a sender bug must not lose the delivery: it retries
            return _failed(job, started, "connect_error", exc)


async def _read_prefix(response: aiohttp.ClientResponse) -> str:
    # The rest of a longer body is left unread: aiohttp then closes that connection.
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= RESPONSE_BODY_LIMIT:
            break
    # NUL cannot be stored in PostgreSQL text; the log keeps what a person can read.
    return b"".join(chunks)[:RESPONSE_BODY_LIMIT].decode("utf-8", "replace").replace("\x00", "\ufffd")


def _failed(job: Job, started: float, kind: str, exc: object) -> AttemptResult:
    message = str(exc) or type(exc).__name__
    return AttemptResult(job, duration_ms=(time.perf_counter() - started) * 1000, error_kind=kind,
                         error=message[:500])


def send_now(job: Job, policy: OutboundPolicy, *, https_only: bool) -> AttemptResult:
    """Make one attempt of `job` from synchronous code (the test send); blocks up to 15 s."""

    async def once() -> AttemptResult:
        async with WebhookSender(policy, https_only=https_only, max_connections=1) as sender:
            return await sender.send(job)

    return asyncio.run(once())
