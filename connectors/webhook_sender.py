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
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from connectors.outbound import OutboundPolicy, OutboundRefused, check_url, screen_url
from persistence.deliveries import RESPONSE_BODY_LIMIT, AttemptResult, Job

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


class GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    """The async twin of `connectors.outbound.GuardedTransport`: check, then pin to the checked address."""

    def __init__(self, policy: OutboundPolicy, *, https_only: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.policy, self.https_only = policy, https_only

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse a forbidden URL (OutboundRefused), else send to the resolved, checked address."""
        if self.https_only and request.url.scheme != "https":
            raise OutboundRefused("webhook endpoints must use https")
        url = str(request.url)
        if _is_ip_literal(request.url.host):
            host, address = check_url(url, self.policy)
        else:  # a DNS lookup blocks: keep it off the event loop
            host, address = await asyncio.to_thread(check_url, url, self.policy)
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        request.headers["Host"] = request.url.netloc.decode("ascii")
        request.url = request.url.copy_with(host=f"[{address}]" if ":" in address else address)
        return await super().handle_async_request(request)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class WebhookSender:
    """An async client that makes delivery attempts; use as `async with WebhookSender(...) as sender`."""

    def __init__(self, policy: OutboundPolicy, *, https_only: bool, max_connections: int = 100,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self._client = httpx.AsyncClient(
            transport=GuardedAsyncTransport(policy, https_only=https_only,
                                            limits=httpx.Limits(max_connections=max_connections,
                                                                max_keepalive_connections=max_connections)),
            timeout=httpx.Timeout(timeout), follow_redirects=False)

    async def __aenter__(self) -> "WebhookSender":
        return self

    async def __aexit__(self, *exc) -> None:
        await self._client.aclose()

    async def send(self, job: Job) -> AttemptResult:
        """Make one attempt of `job`; never raises: every failure is an AttemptResult with its error kind."""
        started = time.perf_counter()
        try:
            async with self._client.stream("POST", job.url, content=job.body.encode(),
                                           headers=sign(job, datetime.now(timezone.utc))) as response:
                body = await _read_prefix(response)
            ms = (time.perf_counter() - started) * 1000
            ok = 200 <= response.status_code < 300
            return AttemptResult(job, response_status=response.status_code, response_body=body, duration_ms=ms,
                                 error_kind=None if ok else "http_status",
                                 error=None if ok else f"HTTP {response.status_code}",
                                 retry_after=retry_after_seconds(response.headers.get("retry-after")))
        except OutboundRefused as exc:
            return _failed(job, started, "ssrf_refused", exc)
        except httpx.TimeoutException as exc:
            return _failed(job, started, "timeout", exc or "timed out")
        except httpx.HTTPError as exc:
            tls = isinstance(exc.__cause__, ssl.SSLError) or "SSL" in str(exc) or "CERTIFICATE" in str(exc)
            return _failed(job, started, "tls" if tls else "connect_error", exc)
        except Exception as exc:  # noqa: BLE001 - a sender bug must not lose the delivery: it retries
            return _failed(job, started, "connect_error", exc)


async def _read_prefix(response: httpx.Response) -> str:
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
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
