"""Opaque keyset cursors and RFC 3339 query instants of the lists that page newest first by
`(instant, id)`: the audit logs and the webhook attempts logs.

A cursor is the urlsafe base64 (unpadded) of `<instant in RFC 3339, microseconds>|<uuid>`: the
last row of a page; the next page starts strictly after it.
"""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID

from persistence.models import as_utc
from server.errors import ApiError


def encode(instant: datetime, row_id: UUID) -> str:
    """Return the cursor that points after the row `(instant, row_id)`."""
    raw = f"{as_utc(instant).isoformat(timespec='microseconds')}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, UUID]:
    """Return the `(instant (UTC), id)` a cursor of `encode` holds.

    Raises ApiError 400 VALIDATION_ERROR (`details.field: cursor`) for anything else.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        instant, row_id = raw.split("|")
        return as_utc(datetime.fromisoformat(instant)), UUID(row_id)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not a cursor this API returned",
                       details={"field": "cursor"}) from None


def instant(value: str | None, field: str) -> datetime | None:
    """Return the RFC 3339 date-time `value` as UTC (None for None).

    Raises ApiError 400 naming `field` when it is not a date-time or has no timezone.
    """
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "VALIDATION_ERROR", f"{field} must be an RFC 3339 date-time", details={"field": field}) from None
    if when.tzinfo is None:
        raise ApiError(400, "VALIDATION_ERROR", f"{field} needs a timezone (Z or an offset)", details={"field": field})
    return as_utc(when)
