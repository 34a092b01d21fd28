"""The proxy: a caller's request forwarded to the provider of a tenant integration, credentials injected.

What goes out and what comes back is an allow-list: a few content-negotiation and precondition
headers go to the provider (never the caller's Authorization, X-API-Key or cookies: the hub's
credentials replace them, `connectors.provider_api`), and the provider's status, body,
content type, caching/paging headers, `Retry-After` and `X-RateLimit-*` come back. Injected
credentials found in the answer are replaced by `[REDACTED]`. Writes (every method but GET) are
audited as `proxy.request` with the method, path and provider status; they emit no event: the
hub does not know what they changed at the provider (a sync or an incoming webhook will).
Anchor: Nango's proxy.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from connectors import provider_api
from connectors.connection_flows import FlowContext
from persistence import audit
from persistence.db import transaction

FORWARDED_REQUEST_HEADERS = ("accept", "accept-language", "content-type", "if-match", "if-none-match",
                             "if-modified-since", "idempotency-key")
RETURNED_HEADERS = ("content-type", "etag", "last-modified", "link", "location", "retry-after", "cache-control")
RETURNED_PREFIXES = ("x-ratelimit-", "ratelimit")  # X-RateLimit-* and the IETF draft RateLimit / RateLimit-Policy
SOURCE_HEADER = ("X-Proxy-Source", "provider")


def forward(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, method: str, path: str,
            query: Sequence[tuple[str, str]], headers: Mapping[str, str], body: Any = None,
            has_body: bool = False) -> tuple[provider_api.ProviderResponse, dict[str, str]]:
    """Send the caller's request to the provider through the tenant connection; return (answer, headers to return).

    `query` the caller's query pairs (forwarded as they are), `headers` the caller's request
    headers (only FORWARDED_REQUEST_HEADERS pass), `body` the decoded JSON body when `has_body`.
    Raises what `provider_api.send` raises (NotFound, NotConnected, ConnectionExpired,
    InvalidInput for a path with `..`, OutboundBlocked, ProviderUnreachable, ProviderTimeout,
    ResponseTooLarge, CredentialsRejected). A write that reached for the provider is audited,
    answered or not (outcome `failure` for a 4xx/5xx or no answer).
    """
    outgoing = {name: value for name, value in headers.items() if name.lower() in FORWARDED_REQUEST_HEADERS}
    body_kwargs = {"json": body} if has_body else {}
    write = method.upper() != "GET"
    try:
        answer = provider_api.send(ctx, tenant_id=actor.tenant_id, integration_id=integration_id, method=method,
                                   path=path, params=list(query), headers=outgoing, redact_credentials=True,
                                   **body_kwargs)
    except provider_api.ProviderCallFailed as exc:
        # The write went out (or was about to) and its fate is unknown: audited. Refusals before
        # any call (unknown integration, not connected, bad path) change nothing and are not.
        if write:
            _audit(actor, integration_id=integration_id, method=method, path=path, answer=None, error=exc.code)
        raise
    if write:
        _audit(actor, integration_id=integration_id, method=method, path=path, answer=answer)
    return answer, returned_headers(answer)


def returned_headers(answer: provider_api.ProviderResponse) -> dict[str, str]:
    """The provider's response headers the caller gets back, plus `X-Proxy-Source: provider`."""
    kept = {name: value for name, value in answer.headers.items()
            if name.lower() in RETURNED_HEADERS or name.lower().startswith(RETURNED_PREFIXES)}
    return {**kept, SOURCE_HEADER[0]: SOURCE_HEADER[1]}


def _audit(actor: audit.Actor, *, integration_id: uuid.UUID, method: str, path: str,
           answer: provider_api.ProviderResponse | None, error: str | None = None) -> None:
    # Kept short: the path may carry provider ids, never a secret (credentials go in headers).
    with transaction() as session:
        audit.record(session, tenant_id=actor.tenant_id, actor=actor, action="proxy.request",
                     resource_type="integration", resource_id=integration_id,
                     outcome="success" if answer is not None and answer.status < 400 else "failure",
                     changes={"method": method.upper(), "path": "/" + path.lstrip("/")[:500],
                              "providerStatus": answer.status if answer is not None else None, "error": error})
