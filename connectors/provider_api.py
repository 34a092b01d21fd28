"""One authenticated request to a tenant integration's provider: the building block of the proxy,
write-through, sync runs and incoming-webhook follow-ups.

`send` resolves the integration's provider and connection, injects the connection's credentials
(OAuth access tokens refreshed when due, `connectors.connection_flows.fresh_credentials`), sends
`method apiBaseUrl + path` through the SSRF guard (`connectors.outbound`) with a timeout and a
response size cap, and returns the provider's answer whatever its status. A provider 401 to an
OAuth token gets exactly one forced refresh and one retry; when the refreshed token is refused
too, the connection is marked `expired` (`connection.expired` event) and ConnectionExpired is
raised. 429 and 5xx answers are returned, not retried: the proxy passes them through and the
sync engine applies its own policy (Retry-After, backoff).

Every failure is a `persistence.errors.DomainError`, so a handler can let it reach the error
envelope as is, and a worker can map it by class:

    NotConnected (409 NOT_CONNECTED)            no usable connection, integration disabled
      ConnectionExpired (409 CONNECTION_EXPIRED)  the grant is dead: authorize again
    InvalidInput (400 VALIDATION_ERROR)         a path that is not a plain path under apiBaseUrl
    ProviderCallFailed (502, base of the rest)
      OutboundBlocked (502 OUTBOUND_REFUSED)      the SSRF guard refused the provider's address
      ProviderUnreachable (502 CONNECTION_FAILED) DNS, TCP, TLS failures
        ProviderTimeout (504 PROVIDER_TIMEOUT)    no answer within the timeout
      ResponseTooLarge (502 PROVIDER_RESPONSE_TOO_LARGE)
      CredentialsRejected (502 CREDENTIALS_REJECTED) static credentials answered 401
      ProviderError (502 PROVIDER_ERROR)          raised by `ProviderResponse.raise_for_status`

Call it outside any open transaction: it opens its own short ones (credentials, expiry) and
never holds one across the outbound call.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import httpx

from connectors import connection_flows
from connectors.connection_flows import FlowContext
from connectors.outbound import OutboundRefused, client, read_capped
from persistence import connections, integrations
from persistence.db import transaction
from persistence.errors import DomainError, InvalidInput
from persistence.models import Provider

USER_AGENT = "integration-hub/1.0 (+provider-api)"
_UNSET: Any = object()
# Request headers a caller may never set: the hub injects the credentials, and hop-by-hop
# headers (RFC 9110 section 7.6.1) belong to one connection, not to the forwarded request.
_NEVER_FORWARDED = {"authorization", "cookie", "proxy-authorization", "host", "connection", "keep-alive",
                    "te", "trailer", "transfer-encoding", "upgrade", "content-length", "x-api-key"}
_REDACTED = b"[REDACTED]"
_MIN_REDACTED_LENGTH = 6  # shorter values (a port, "true") would mangle unrelated text


class NotConnected(DomainError):
    """The integration has no usable connection (none, revoked, in error without credentials, or disabled)."""

    code = "NOT_CONNECTED"
    status = 409


class ConnectionExpired(NotConnected):
    """The connection's grant is dead (refresh refused, or 401 after a refresh): authorize it again."""

    code = "CONNECTION_EXPIRED"


class ProviderCallFailed(DomainError):
    """The provider call produced no usable answer. `details.providerStatus` when one came back."""

    code = "PROVIDER_ERROR"
    status = 502


class OutboundBlocked(ProviderCallFailed):
    """The SSRF guard refused the provider URL (a private, link-local or unresolvable address)."""

    code = "OUTBOUND_REFUSED"


class ProviderUnreachable(ProviderCallFailed):
    """The provider could not be reached (DNS, TCP, TLS), or its token endpoint could not."""

    code = "CONNECTION_FAILED"


class ProviderTimeout(ProviderUnreachable):
    """The provider did not answer within the timeout."""

    code = "PROVIDER_TIMEOUT"
    status = 504


class ResponseTooLarge(ProviderCallFailed):
    """The provider's answer exceeded the size cap (the body was not kept)."""

    code = "PROVIDER_RESPONSE_TOO_LARGE"


class CredentialsRejected(ProviderCallFailed):
    """The provider answered 401 to static credentials (API key, basic, custom); the connection is marked `error`."""

    code = "CREDENTIALS_REJECTED"


class ProviderError(ProviderCallFailed):
    """The provider answered a status the caller cannot use (see `ProviderResponse.raise_for_status`)."""


@dataclass(frozen=True)
class ProviderResponse:
    """The provider's answer.

    `status` the HTTP status; `headers` the response headers (case-insensitive, as received);
    `content` the raw body (at most the cap); `url` the URL called without its query;
    `elapsed_ms` the time to the full body; `refreshed` whether an OAuth token was refreshed
    after a 401 to get this answer.
    """

    status: int
    headers: httpx.Headers
    content: bytes
    url: str
    elapsed_ms: float
    refreshed: bool = False
    _json: Any = field(default=_UNSET, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """Return the decoded JSON body, or None when the body is empty or not JSON."""
        if self._json is _UNSET:
            try:
                value = jsonlib.loads(self.content) if self.content else None
            except ValueError:
                value = None
            object.__setattr__(self, "_json", value)
        return self._json

    def retry_after(self, now: datetime | None = None) -> float | None:
        """Return the `Retry-After` header in seconds (delta-seconds or HTTP-date, RFC 9110 section 10.2.3), or None."""
        value = self.headers.get("Retry-After")
        if value is None:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return max(0.0, (moment - (now or datetime.now(timezone.utc))).total_seconds())

    def raise_for_status(self, action: str) -> "ProviderResponse":
        """Return self for a 2xx; raise ProviderError (502 PROVIDER_ERROR) naming `action` otherwise.

        `details` carry `providerStatus` and, when the provider explained itself, `providerError`
        (its JSON error body or text, at most 500 characters) and `retryAfter` for a 429.
        """
        if self.ok:
            return self
        details: dict[str, Any] = {"providerStatus": self.status}
        body = self.json()
        excerpt = jsonlib.dumps(body)[:500] if body is not None else self.content[:500].decode("utf-8", "replace")
        if excerpt:
            details["providerError"] = excerpt
        if self.status == 429 and self.retry_after() is not None:
            details["retryAfter"] = int(self.retry_after() or 0)
        raise ProviderError(f"The provider answered {self.status} to {action}", details=details)


@dataclass(frozen=True)
class _Target:
    base_url: str
    provider: Provider
    auth_type: str


def send(
    ctx: FlowContext,
    *,
    tenant_id: uuid.UUID,
    integration_id: uuid.UUID,
    user_id: uuid.UUID | None = None,
    method: str,
    path: str,
    params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    json: Any = _UNSET,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    max_response_bytes: int | None = None,
    timeout: float | None = None,
    redact_credentials: bool = False,
) -> ProviderResponse:
    """Send `method apiBaseUrl+path?params` to the integration's provider with the connection's credentials.

    - `user_id` None uses the tenant connection, else that user's connection (user-scoped integrations).
    - `path` is relative to the provider's `apiBaseUrl` (a leading `/` is added); `.`/`..`
      segments (also percent-encoded), backslashes and control characters raise InvalidInput.
    - The body is `json` (encoded, `Content-Type: application/json`) or raw `content` (with the
      caller's Content-Type in `headers`), or none.
    - `headers` are the caller's extra request headers; Authorization, Cookie, X-API-Key,
      hop-by-hop headers and any header the credentials set are dropped, so only the hub's
      credentials reach the provider.
    - `max_response_bytes` and `timeout` (seconds, connect and read) default to the outbound policy's.
    - `redact_credentials` replaces every injected credential value found in the answer's body
      and headers by `[REDACTED]` (the proxy: an echoing endpoint must not hand tokens out).

    Returns the ProviderResponse whatever its status. Raises NotFound (another tenant's or an
    unknown integration), NotConnected, ConnectionExpired, InvalidInput, OutboundBlocked,
    ProviderUnreachable, ProviderTimeout, ResponseTooLarge, CredentialsRejected (see the module doc).
    """
    relative = checked_path(path)
    target = _target(tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
    credentials = _credentials(ctx, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
    url = target.base_url + relative
    policy = ctx.policy
    limit = max_response_bytes or policy.max_response_bytes
    body_kwargs: dict[str, Any] = {}
    if json is not _UNSET:
        body_kwargs["json"] = json
    elif content is not None:
        body_kwargs["content"] = content

    def attempt(creds: dict[str, Any]) -> ProviderResponse:
        injected = connection_flows.auth_headers(target.provider, target.auth_type, creds)
        outgoing = _outgoing_headers(headers, injected)
        return _call(policy, method=method, url=url, params=params, headers=outgoing, limit=limit,
                     timeout=timeout, body_kwargs=body_kwargs)

    response = attempt(credentials)
    if response.status == 401 and target.auth_type == "oauth2":
        response, credentials = _retry_after_refresh(ctx, attempt, credentials, tenant_id=tenant_id,
                                                     integration_id=integration_id, user_id=user_id)
    elif response.status == 401:
        reason = f"The provider refused the stored {target.auth_type} credentials (401); replace them"
        with transaction() as session:
            row = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
            if row is not None:
                connections.mark(session, connection=row, status="error", error=reason)
        raise CredentialsRejected(reason, details={"providerStatus": 401})
    if redact_credentials:
        injected = connection_flows.auth_headers(target.provider, target.auth_type, credentials)
        response = _redacted(response, [*credentials.values(), *injected.values()])
    return response


def checked_path(path: str) -> str:
    """Return `path` with one leading `/` if it is a plain path; InvalidInput (details.field `path`) otherwise.

    Refused: `.` and `..` segments (also percent-encoded: `%2e%2e` is `..` to many servers),
    backslashes, control characters, `?`/`#` (the query goes in `params`).
    """
    relative = "/" + path.lstrip("/")
    decoded = unquote(relative)
    if any(ch in decoded for ch in "\\?#") or any(ord(ch) < 32 or ord(ch) == 127 for ch in decoded):
        raise InvalidInput("path must be a plain path under the provider's apiBaseUrl", details={"field": "path"})
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise InvalidInput("path must not contain '.' or '..' segments", details={"field": "path"})
    return relative


def _target(*, tenant_id: uuid.UUID, integration_id: uuid.UUID, user_id: uuid.UUID | None) -> _Target:
    with transaction() as session:
        integration = integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
        provider = session.get(Provider, integration.provider_id)
        if integration.status == "disabled":
            raise NotConnected("The integration is disabled; enable it first", details={"integrationStatus": "disabled"})
        if not provider.api_base_url:
            raise InvalidInput("The provider declares no apiBaseUrl to call", details={"field": "apiBaseUrl"})
        row = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
        if row is None or row.status == "revoked" or not row.secret:
            who = "the tenant" if user_id is None else "this user"
            raise NotConnected(f"The integration has no connection for {who}; connect it first")
        if row.status == "expired":
            raise ConnectionExpired(row.validation_error or "The connection expired; authorize it again")
        return _Target(provider.api_base_url.rstrip("/"), provider, row.auth_type)


def _credentials(ctx: FlowContext, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
                 user_id: uuid.UUID | None, rejected_token: str | None = None) -> dict[str, Any]:
    credentials, problem = connection_flows.fresh_credentials(ctx, tenant_id=tenant_id, integration_id=integration_id,
                                                              user_id=user_id, rejected_token=rejected_token)
    if credentials:
        return credentials
    with transaction() as session:
        row = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
        status = row.status if row is not None else None
    if status == "expired":
        raise ConnectionExpired(problem or "The connection expired; authorize it again")
    if problem and problem.startswith("Token refresh failed"):
        raise ProviderUnreachable(problem[:500])
    raise NotConnected(problem or "The connection has no credentials; connect it again")


def _retry_after_refresh(ctx: FlowContext, attempt, credentials: dict[str, Any], *, tenant_id: uuid.UUID,
                         integration_id: uuid.UUID,
                         user_id: uuid.UUID | None) -> tuple[ProviderResponse, dict[str, Any]]:
    """One forced refresh and one retry after a 401; a second 401 expires the connection.

    Returns the retry's answer and the credentials it was sent with.
    """
    refreshed = _credentials(ctx, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id,
                             rejected_token=credentials.get("accessToken"))
    response = attempt(refreshed)
    if response.status != 401:
        return ProviderResponse(response.status, response.headers, response.content, response.url,
                                response.elapsed_ms, refreshed=True), refreshed
    reason = "The provider refused a freshly refreshed access token (401); authorize the connection again"
    connection_flows.expire(ctx, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id,
                            reason=reason, error="unauthorized_after_refresh")
    raise ConnectionExpired(reason, details={"providerStatus": 401})


def _outgoing_headers(extra: Mapping[str, str] | None, injected: Mapping[str, str]) -> dict[str, str]:
    taken = {name.lower() for name in injected} | _NEVER_FORWARDED
    outgoing = {"User-Agent": USER_AGENT}
    for name, value in (extra or {}).items():
        if name.lower() not in taken:
            outgoing[name] = value
    outgoing.update(injected)
    return outgoing


def _call(policy, *, method: str, url: str, params, headers: dict[str, str], limit: int, timeout: float | None,
          body_kwargs: dict[str, Any]) -> ProviderResponse:
    started = time.perf_counter()
    try:
        with client(policy) as http:
            if timeout is not None:
                http.timeout = httpx.Timeout(timeout)
            with http.stream(method.upper(), url, params=params, headers=headers, **body_kwargs) as response:
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise OutboundRefused(f"response body exceeds {limit} bytes")
                raw = read_capped(response, limit)
                status, answer_headers = response.status_code, response.headers
    except OutboundRefused as exc:
        if "exceeds" in str(exc):
            raise ResponseTooLarge(f"The provider's answer exceeds {limit} bytes", details={"limitBytes": limit}) from None
        raise OutboundBlocked(f"The outbound guard refused {method.upper()} {url}: {exc}"[:500]) from None
    except httpx.TimeoutException:
        raise ProviderTimeout(f"{method.upper()} {url} timed out after {timeout or policy.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        raise ProviderUnreachable(f"{method.upper()} {url} failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    return ProviderResponse(status, httpx.Headers(answer_headers), raw, url, elapsed)


def _redacted(response: ProviderResponse, values: Sequence[Any]) -> ProviderResponse:
    secrets = sorted({str(v) for v in values if v is not None and len(str(v)) >= _MIN_REDACTED_LENGTH},
                     key=len, reverse=True)
    if not secrets:
        return response
    content = response.content
    for secret in secrets:
        content = content.replace(secret.encode(), _REDACTED)
    items = []
    for name, value in response.headers.multi_items():
        for secret in secrets:
            value = value.replace(secret, _REDACTED.decode())
        items.append((name, value))
    return ProviderResponse(response.status, httpx.Headers(items), content, response.url, response.elapsed_ms,
                            response.refreshed)
