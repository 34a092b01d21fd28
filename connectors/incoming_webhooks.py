"""Incoming provider webhooks: verify a notification's signature and find the record it names.

Pure functions over the raw request (headers and the exact body bytes), driven by a provider's
declaration (`persistence.webhook_verification.Declaration`); no HTTP, no database. The hub's
handler calls `verify` then `route`; the worker reads the record with `fetch_path`/`fetched_item`.

Sources: Stripe "Verify webhook signatures" (https://docs.stripe.com/webhooks#verify-manually),
GitHub "Validating webhook deliveries"
(https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries), Slack
"Verifying requests from Slack" (https://api.slack.com/authentication/verifying-requests-from-slack),
Standard Webhooks (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from persistence.webhook_verification import Declaration, Route

MAX_EVENT_ID_LENGTH = 255
MAX_EXTERNAL_ID_LENGTH = 255


class Rejected(Exception):
    """The notification is not authentic: `reason` is missing_signature, bad_signature, missing_timestamp or stale_timestamp."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unusable(Exception):
    """An authentic notification the hub cannot key: no event id, or one longer than 255 characters."""


@dataclass(frozen=True)
class Verified:
    """An authentic notification: the provider's `event_id` and the signed `timestamp` (Unix seconds, or None)."""

    event_id: str
    timestamp: int | None


@dataclass(frozen=True)
class Notification:
    """What a verified notification changes: `entity`, the record's `external_id`, and the `record` when it carries it."""

    entity: str
    external_id: str
    record: dict | None


def generate_secret(scheme: str) -> str:
    """Return a fresh secret for `scheme`: `whsec_` + base64 of 32 random bytes (Standard Webhooks), else 64 hex digits."""
    if scheme == "standard_webhooks":
        return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_hex(32)


def verify(declaration: Declaration, *, secret: str, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
    """Check the notification's signature and timestamp; return its event id and timestamp.

    `headers` is matched case-insensitively; `body` the exact bytes received; `now` Unix seconds.
    Raises Rejected when the signature is missing or wrong, or the timestamp missing or more than
    `tolerance_seconds` away from `now`; Unusable when an authentic notification has no event id.
    Every comparison of signatures is constant-time (`hmac.compare_digest`).
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    if declaration.scheme == "standard_webhooks":
        return _verify_standard(secret=secret, headers=lowered, body=body, now=now)
    signatures, timestamp = _presented(declaration, lowered)
    if not signatures:
        raise Rejected("missing_signature")
    if "{timestamp}" in declaration.signed_payload and timestamp is None:
        raise Rejected("missing_timestamp")
    head, _, _ = declaration.signed_payload.partition("{body}")
    signed = head.replace("{timestamp}", timestamp or "").encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    # Every candidate is compared (no early exit), so timing says nothing about which one matched.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, _decode(candidate, declaration.signature_encoding))
    if not matched:
        raise Rejected("bad_signature")
    moment = None
    if timestamp is not None:
        moment = _fresh(timestamp, now=now, tolerance=declaration.tolerance_seconds)
    return Verified(_event_id(declaration, lowered, body), moment)


def route(declaration: Declaration, *, headers: Mapping[str, str], body: bytes) -> Notification | None:
    """Return what a verified notification changes, by the first route that applies; None when none does.

    A body that is not a JSON object applies to no route that reads it. A route whose id is
    missing (or longer than 255 characters) makes the notification unroutable too: the hub
    acknowledges it and does nothing, as it does for event types it does not sync.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    payload = _json_object(body)
    for candidate in declaration.routes:
        if not _applies(candidate, lowered, payload):
            continue
        if payload is None:
            return None
        external_id = field_value(payload, candidate.external_id_field)
        if isinstance(external_id, bool) or not isinstance(external_id, (str, int)) \
                or not 0 < len(str(external_id)) <= MAX_EXTERNAL_ID_LENGTH:
            return None
        record = field_value(payload, candidate.record_field) if candidate.record_field else None
        return Notification(candidate.entity, str(external_id), record if isinstance(record, dict) else None)
    return None


def field_value(document: Any, path: str) -> Any:
    """Return the value at dotted `path` in nested dicts, or None when any step is missing."""
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def _verify_standard(*, secret: str, headers: dict[str, str], body: bytes, now: float) -> Verified:
    timestamp = headers.get("webhook-timestamp")
    if not headers.get("webhook-signature") or not headers.get("webhook-id"):
        raise Rejected("missing_signature")
    if not timestamp:
        raise Rejected("missing_timestamp")
    _fresh(timestamp, now=now, tolerance=300)
    try:
        # The library checks the timestamp against its own clock too (same 5 minutes).
        Webhook(secret).verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError, UnicodeDecodeError, binascii.Error):
        # Malformed signature lists, undecodable base64 and non-UTF-8 bodies are wrong signatures.
        raise Rejected("bad_signature") from None
    event_id = headers["webhook-id"]
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise Unusable("the webhook-id is longer than 255 characters")
    return Verified(event_id, int(timestamp))


def _presented(declaration: Declaration, headers: dict[str, str]) -> tuple[list[str], str | None]:
    """The candidate signatures and the timestamp as sent (text), from the declared headers."""
    raw = headers.get(declaration.signature_header.lower(), "").strip()
    timestamp = headers.get(declaration.timestamp_header.lower()) if declaration.timestamp_header else None
    if declaration.signature_key:
        pairs = [part.strip().partition("=") for part in raw.split(",")]
        signatures = [value for key, sep, value in pairs if sep and key == declaration.signature_key and value]
        if declaration.timestamp_key:
            timestamp = next((value for key, sep, value in pairs if sep and key == declaration.timestamp_key), None)
        return signatures, timestamp
    prefix = declaration.signature_prefix
    if not raw.startswith(prefix) or len(raw) == len(prefix):
        return [], timestamp
    return [raw[len(prefix):]], timestamp


def _decode(signature: str, encoding: str) -> bytes:
    # An undecodable candidate becomes bytes that cannot match, compared like any other.
    try:
        if encoding == "hex":
            return bytes.fromhex(signature)
        return base64.b64decode(signature, validate=True)
    except ValueError:
        return b""


def _fresh(timestamp: str, *, now: float, tolerance: int) -> int:
    """Return the timestamp (Unix seconds) when within `tolerance` seconds of `now`; Rejected otherwise."""
    text = timestamp.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise Rejected("stale_timestamp")
    moment = int(text)
    if abs(now - moment) > tolerance:
        raise Rejected("stale_timestamp")
    return moment


def _event_id(declaration: Declaration, headers: dict[str, str], body: bytes) -> str:
    if declaration.event_id_header:
        value: Any = headers.get(declaration.event_id_header.lower())
    else:
        value = field_value(_json_object(body), declaration.event_id_field)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise Unusable("the notification carries no event id")
    if len(str(value)) > MAX_EVENT_ID_LENGTH:
        raise Unusable("the event id is longer than 255 characters")
    return str(value)


def _json_object(body: bytes) -> dict | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _applies(candidate: Route, headers: dict[str, str], payload: dict | None) -> bool:
    if candidate.match_header:
        return headers.get(candidate.match_header.lower()) == candidate.match_value
    if candidate.match_field:
        value = field_value(payload, candidate.match_field)
        return value is not None and not isinstance(value, (dict, list)) and str(value) == candidate.match_value
    return True


def usable_secret(scheme: str, secret: str) -> bool:
    """Return whether `secret` can verify `scheme`: a Standard Webhooks secret must be (`whsec_`+) base64 of a key."""
    if scheme != "standard_webhooks":
        return True
    try:
        Webhook(secret)
    except Exception:  # noqa: BLE001 - the library raises several kinds for a malformed secret
        return False
    return True
