"""Incoming-webhook declarations of providers: their typed form and the rules checked when a provider is saved.

A provider's `webhookVerification` (contract: `IncomingWebhookVerification` in
openapi/components/providers.yaml) says how the hub authenticates the change notifications the
provider POSTs to `/webhooks/incoming/{integrationId}` and how it finds the changed record in
them, so no provider needs code of its own. Two schemes:

- `hmac_sha256`: an HMAC-SHA256, keyed by the integration's secret, of `signedPayload` (a
  template over `{timestamp}` and the raw `{body}`: `{body}` for GitHub, `{timestamp}.{body}` for
  Stripe and the sandbox, `v0:{timestamp}:{body}` for Slack), carried hex or base64 in
  `signatureHeader`, after an optional `signaturePrefix` (`sha256=`, `v0=`), or as the values
  of `signatureKey` in a `k=v,k=v` header (Stripe's `t=...,v1=...`). The timestamp (Unix seconds)
  comes from `timestampHeader` or the `timestampKey` pair; the event id from `eventIdHeader` or
  the body's `eventIdField`.
- `standard_webhooks`: the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
  `webhook-signature`; https://www.standardwebhooks.com), the secret a `whsec_` base64 key.

`routes` map a notification to an entity of the provider (first match wins) and say where its
external id sits and, when the notification carries the complete record, where.

The JSON schema checks the structure; this module checks what it cannot (cross-field rules).
Pure: no HTTP, no database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from persistence.errors import InvalidInput

SCHEMES = ("hmac_sha256", "standard_webhooks")
ENCODINGS = ("hex", "base64")
DEFAULT_TOLERANCE_SECONDS = 300
# `{body}` last (the signed bytes end with the raw body), at most one `{timestamp}` before it.
_TEMPLATE = re.compile(r"^[^{}]*(\{timestamp\}[^{}]*)?\{body\}$")
# Fields that only an `hmac_sha256` declaration may carry (Standard Webhooks fixes them all).
_HMAC_ONLY = ("signatureHeader", "signatureEncoding", "signaturePrefix", "signatureKey", "signedPayload",
              "timestampHeader", "timestampKey", "eventIdHeader", "eventIdField")


@dataclass(frozen=True)
class Route:
    """Where one kind of notification points: its `entity`, when it applies, its id and maybe its record.

    The route applies when `match_header` (a request header) or `match_field` (a dotted field of
    the JSON body) equals `match_value`, or always when neither is set. `record_field` names the
    complete record in the body; without it the hub fetches the record (the entity's `fetch`).
    """

    entity: str
    external_id_field: str
    record_field: str | None = None
    match_header: str | None = None
    match_field: str | None = None
    match_value: str | None = None


@dataclass(frozen=True)
class Declaration:
    """The typed `webhookVerification` of a provider (see `IncomingWebhookVerification` in the contract)."""

    scheme: str
    routes: tuple[Route, ...]
    signature_header: str | None = None
    signature_encoding: str = "hex"
    signature_prefix: str = ""
    signature_key: str | None = None
    signed_payload: str = "{body}"
    timestamp_header: str | None = None
    timestamp_key: str | None = None
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS
    event_id_header: str | None = None
    event_id_field: str | None = None
    source: str | None = None


def parse(raw: Mapping[str, Any] | None) -> Declaration | None:
    """Return the Declaration of a provider's `webhookVerification`, or None when it declares none.

    Expects an already validated declaration (see `validate`); a KeyError means it was not.
    """
    if not raw:
        return None
    return Declaration(
        scheme=raw["scheme"],
        routes=tuple(Route(entity=route["entity"], external_id_field=route["externalIdField"],
                           record_field=route.get("recordField"), match_header=route.get("matchHeader"),
                           match_field=route.get("matchField"), match_value=route.get("matchValue"))
                     for route in raw["routes"]),
        signature_header=raw.get("signatureHeader"),
        signature_encoding=raw.get("signatureEncoding", "hex"),
        signature_prefix=raw.get("signaturePrefix", ""),
        signature_key=raw.get("signatureKey"),
        signed_payload=raw.get("signedPayload", "{body}"),
        timestamp_header=raw.get("timestampHeader"),
        timestamp_key=raw.get("timestampKey"),
        tolerance_seconds=raw.get("toleranceSeconds", DEFAULT_TOLERANCE_SECONDS),
        event_id_header=raw.get("eventIdHeader"),
        event_id_field=raw.get("eventIdField"),
        source=raw.get("source"),
    )


def validate(raw: Mapping[str, Any] | None, available_entities: Sequence[Mapping[str, Any]] | None) -> None:
    """Check the cross-field rules of a `webhookVerification`; raise InvalidInput on the first break.

    - `hmac_sha256` needs `signatureHeader`; `signaturePrefix` and `signatureKey` exclude each
      other; a `{timestamp}` in `signedPayload` needs exactly one of `timestampHeader` and
      `timestampKey` (and a timestamp source without `{timestamp}` is refused: it would be
      checked for age but not signed, so anyone could refresh it); `timestampKey` needs
      `signatureKey`; exactly one of `eventIdHeader` and `eventIdField` (the replay guard's key);
    - `standard_webhooks` takes none of those fields (the specification fixes them);
    - every route names an entity of `availableEntities` that declares `sync`; a route without
      `recordField` needs that definition's `fetch`; `matchValue` goes with exactly one of
      `matchHeader` and `matchField`, and neither of those without it.
    `details.field` names the offending field, e.g. `webhookVerification.routes[0].entity`.
    """
    if not raw:
        return
    where = "webhookVerification"
    if raw.get("scheme") == "standard_webhooks":
        for name in _HMAC_ONLY:
            if name in raw:
                raise InvalidInput(f"{name} does not apply to scheme standard_webhooks (the specification fixes it)",
                                   details={"field": f"{where}.{name}"})
    else:
        _check_hmac(raw, where=where)
    synced = {entity.get("name"): entity.get("sync") for entity in available_entities or () if entity.get("sync")}
    for index, route in enumerate(raw.get("routes") or ()):
        at = f"{where}.routes[{index}]"
        sync = synced.get(route.get("entity"))
        if sync is None:
            raise InvalidInput("a route's entity must be one of availableEntities with a sync definition",
                               details={"field": f"{at}.entity"})
        if not route.get("recordField") and not sync.get("fetch"):
            raise InvalidInput("a route without recordField needs the entity's sync.fetch request",
                               details={"field": f"{at}.recordField"})
        matchers = [name for name in ("matchHeader", "matchField") if route.get(name)]
        if ("matchValue" in route) != bool(matchers) or len(matchers) > 1:
            raise InvalidInput("matchValue goes with exactly one of matchHeader and matchField",
                               details={"field": f"{at}.matchValue"})


def _check_hmac(raw: Mapping[str, Any], *, where: str) -> None:
    if not raw.get("signatureHeader"):
        raise InvalidInput("scheme hmac_sha256 needs signatureHeader", details={"field": f"{where}.signatureHeader"})
    if raw.get("signaturePrefix") and raw.get("signatureKey"):
        raise InvalidInput("signaturePrefix and signatureKey exclude each other",
                           details={"field": f"{where}.signaturePrefix"})
    template = raw.get("signedPayload", "{body}")
    if not _TEMPLATE.match(template):
        raise InvalidInput("signedPayload must end with {body} and may hold one {timestamp} before it",
                           details={"field": f"{where}.signedPayload"})
    sources = [name for name in ("timestampHeader", "timestampKey") if raw.get(name)]
    if ("{timestamp}" in template) != bool(sources) or len(sources) > 1:
        raise InvalidInput("a {timestamp} in signedPayload needs exactly one of timestampHeader and timestampKey, "
                           "and a timestamp source needs {timestamp} in signedPayload",
                           details={"field": f"{where}.signedPayload"})
    if raw.get("timestampKey") and not raw.get("signatureKey"):
        raise InvalidInput("timestampKey needs signatureKey (both are pairs of the signature header)",
                           details={"field": f"{where}.timestampKey"})
    if bool(raw.get("eventIdHeader")) == bool(raw.get("eventIdField")):
        raise InvalidInput("exactly one of eventIdHeader and eventIdField is required (the replay guard's key)",
                           details={"field": f"{where}.eventIdHeader"})
