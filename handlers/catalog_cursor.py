"""The catalog's list cursor (`list_catalog`'s `cursor` / `nextCursor`): what it binds and how it is signed.

Kept apart from handlers/catalog.py so the operations stay thin; the audit log's cursor is the
unsigned sibling (handlers/audit_logs.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn
from uuid import UUID

from persistence import providers
from persistence.models import Provider
from persistence.pages import After, Page
from server import runtime
from server.errors import ApiError

CURSOR_VERSION = 1
_MAC_BYTES = 16
_TIMESTAMP_SORTS = {"createdAt", "updatedAt"}


@dataclass(frozen=True)
class Listing:
    """What a catalog cursor is bound to (sort and filters), and its codec.

    A cursor is base64url(JSON + HMAC): the sort key of the last row of its page, where the next
    page starts in the walk and the walk's total. The MAC (a key derived from the token signing
    secret) makes an altered cursor a 400, so the `total` and `offset` a cursor page reports are
    always ones the hub counted.
    """

    category: str | None
    search: str | None
    sort_by: str
    sort_order: str

    def next_cursor(self, page: Page[Provider]) -> str | None:
        """Return the cursor of the page after `page`, or None when `page` is the last."""
        if not page.has_more:
            return None
        return self.encode(page.items[-1], offset=page.next_offset, total=page.total)

    def encode(self, row: Provider, *, offset: int, total: int) -> str:
        """Return the cursor of the page after `row`, which starts at `offset` of a walk of `total`."""
        value, row_id = providers.sort_key(row, self.sort_by)
        if isinstance(value, datetime):
            value = value.isoformat(timespec="microseconds")
        payload = json.dumps([CURSOR_VERSION, self._binding(), value, row_id.hex, offset, total],
                             ensure_ascii=False, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload + _mac(payload)).decode().rstrip("=")

    def decode(self, cursor: str, *, offset: int) -> After:
        """Return the position `cursor` holds; 400 VALIDATION_ERROR unless this listing minted it."""
        if offset:
            _refuse("cursor and offset cannot be combined")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, binascii.Error):
            _refuse("cursor is not a cursor this API returned")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, _mac(payload)):
            _refuse("cursor is not a cursor this API returned")
        fields = json.loads(payload)
        if not isinstance(fields, list) or len(fields) != 6 or fields[0] != CURSOR_VERSION:
            _refuse("cursor is not a cursor this API returned")  # signed by an older hub
        _, binding, value, row_id, position, total = fields
        if binding != self._binding():
            _refuse("cursor belongs to another listing: keep sortBy, sortOrder, category and search "
                    "of the page it came from")
        if self.sort_by in _TIMESTAMP_SORTS:
            value = datetime.fromisoformat(value)
        return After(value=value, id=UUID(hex=row_id), offset=position, total=total)

    def _binding(self) -> str:
        # The sort in clear (a readable refusal), the filters as a digest (a search can be long).
        filters = hashlib.sha256(json.dumps([self.category, self.search]).encode()).hexdigest()[:16]
        return f"{self.sort_by}:{self.sort_order}:{filters}"


def _mac(payload: bytes) -> bytes:
    key = hmac.new(runtime.get().tokens.secret.encode(), b"catalog-cursor", hashlib.sha256).digest()
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _refuse(message: str) -> NoReturn:
    raise ApiError(400, "VALIDATION_ERROR", message, details={"field": "cursor"})
