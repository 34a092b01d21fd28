"""Idempotency records (as Stripe does): a retried POST with the same key replays the first answer.

Keys are scoped per principal (an API token, a user, or the client IP of an anonymous call) and
kept 24 hours. Stored answers can carry secrets shown once (an API token, the JWTs of a
registration), so the answer body is sealed with the vault, bound to its record's scope and key:
nothing of it is readable at rest, and a sealed body copied to another record does not open.
No HTTP here; the middleware in server/idempotency.py drives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import vault
from persistence.models import IdempotencyRecord, as_utc, utcnow

RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a key: `new` (go ahead), `replay`, `mismatch` or `in_progress`."""

    outcome: str
    record: IdempotencyRecord | None = None


def claim(session: Session, *, scope: str, key: str, request_hash: str) -> Claim:
    """Claim `key` for a request, or report what an earlier request with it did.

    An expired record (older than 24 h) is discarded and the key claimed anew. The caller
    commits the claim before running the request, so a concurrent duplicate sees it.
    """
    row = session.exec(select(IdempotencyRecord).where(IdempotencyRecord.scope == scope,
                                                       IdempotencyRecord.key == key).with_for_update()).first()
    if row is not None and as_utc(row.created_at) <= utcnow() - RETENTION:
        session.delete(row)
        session.flush()
        row = None
    if row is None:
        session.add(IdempotencyRecord(scope=scope, key=key, request_hash=request_hash))
        session.flush()
        return Claim("new")
    if row.request_hash != request_hash:
        return Claim("mismatch", row)
    if row.state != "done":
        return Claim("in_progress", row)
    return Claim("replay", row)


def complete(session: Session, *, scope: str, key: str, status: int, body: str, headers: dict[str, str]) -> None:
    """Store the answer of a claimed request, its body sealed (vault), so retries replay it."""
    sealed = vault.seal(body, binding=_binding(scope, key))
    session.exec(sa.update(IdempotencyRecord)
                 .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                 .values(state="done", response_status=status, response_body=sealed, response_headers=headers))


def stored_body(record: IdempotencyRecord) -> str:
    """Return the answer body stored by `complete`; vault.VaultError if it no longer opens (key retired)."""
    if not record.response_body:
        return ""
    return vault.open_sealed(record.response_body, binding=_binding(record.scope, record.key))


def _binding(scope: str, key: str) -> str:
    return f"idempotency:{scope}:{key}"


def release(session: Session, *, scope: str, key: str) -> None:
    """Forget a claim whose request failed on the server side, so a retry can run it again."""
    session.exec(sa.delete(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key))


def purge_expired(session: Session) -> int:
    """Delete records older than 24 hours; return how many."""
    result = session.exec(sa.delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - RETENTION))
    return result.rowcount or 0
