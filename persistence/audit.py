"""Audit entries: written in the caller's transaction, never updated or deleted.

Seeds: integration runbook section 7.2 ("Audit logs generated"), integration API "Audit Logging".
Each tenant's entries (and the platform's) form a hash chain: an entry's `hash` covers its
content and the previous entry's hash, so editing or deleting a row breaks every later link,
which `verify` (and `integration-hub audit verify`) detects.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence.models import AuditChainHead, AuditEntry, as_utc

PLATFORM_CHAIN = "platform"

REDACTED = "[REDACTED]"
# Keys whose values are secrets: matched at the end of the key (`clientSecret`, `accessToken`,
# `apiKey`), so `tokenUrl` or `passenger` are kept.
_SECRET_KEY = re.compile(
    r"(passwords?|passwd|passphrase|secrets?|tokens?|api[_-]?keys?|credentials?|authorization|private[_-]?keys?|cookies?)$", re.I
)


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: the audit's view of a request's caller."""

    user_id: uuid.UUID | None
    role: str | None
    tenant_id: uuid.UUID | None
    request_id: str | None = None
    ip: str | None = None


def redact(value: Any) -> Any:
    """Return a copy of `value` with every secret-looking key's value replaced by `[REDACTED]`."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def record(
    session: Session,
    *,
    tenant_id: uuid.UUID | None,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: object | None = None,
    changes: dict[str, Any] | None = None,
    outcome: str = "success",
) -> AuditEntry:
    """Add one audit entry to the session (committed with the change it records).

    `action` is `<resource>.<verb>` (e.g. `provider.create`); `changes` is redacted here, so
    callers may pass request bodies as they are.
    """
    entry = AuditEntry(
        chain=str(tenant_id) if tenant_id else PLATFORM_CHAIN,
        tenant_id=tenant_id,
        actor_id=actor.user_id,
        actor_role=actor.role,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id) if resource_id is not None else None,
        request_id=actor.request_id,
        ip=actor.ip,
        changes=redact(changes) if changes else None,
        outcome=outcome,
    )
    _link(session, entry)
    session.add(entry)
    return entry


def digest(entry: AuditEntry) -> str:
    """Return the SHA-256 (hex) over the entry's content and its `prev_hash` (canonical JSON)."""
    created = as_utc(entry.created_at)
    content = {
        "chain": entry.chain, "seq": entry.seq, "prevHash": entry.prev_hash,
        "tenantId": str(entry.tenant_id) if entry.tenant_id else None,
        "actorId": str(entry.actor_id) if entry.actor_id else None, "actorRole": entry.actor_role,
        "action": entry.action, "resourceType": entry.resource_type, "resourceId": entry.resource_id,
        "requestId": entry.request_id, "ip": entry.ip, "changes": entry.changes, "outcome": entry.outcome,
        "createdAt": created.isoformat(timespec="microseconds"),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _link(session: Session, entry: AuditEntry) -> None:
    # The head row is locked (PostgreSQL) so concurrent writers of one chain queue up instead of forking it.
    head = session.exec(select(AuditChainHead).where(AuditChainHead.chain == entry.chain).with_for_update()).first()
    if head is None:
        head = AuditChainHead(chain=entry.chain)
    entry.seq, entry.prev_hash = head.seq + 1, head.hash
    entry.hash = digest(entry)
    head.seq, head.hash = entry.seq, entry.hash
    session.add(head)


@dataclass(frozen=True)
class ChainBreak:
    """Where a chain stops verifying: the chain, the sequence number and what is wrong."""

    chain: str
    seq: int
    problem: str


def verify(session: Session, *, batch: int = 1000) -> tuple[int, list[ChainBreak]]:
    """Check every chain link by link; return (entries checked, breaks found; empty when intact)."""
    checked, breaks = 0, []
    for head in session.exec(select(AuditChainHead)).all():
        expected_seq, previous, after = 1, "", 0
        while True:
            rows = session.exec(select(AuditEntry).where(AuditEntry.chain == head.chain, AuditEntry.seq > after)
                                .order_by(AuditEntry.seq).limit(batch)).all()
            if not rows:
                break
            for row in rows:
                checked += 1
                if row.seq != expected_seq:
                    breaks.append(ChainBreak(head.chain, expected_seq, "entry missing"))
                elif row.prev_hash != previous:
                    breaks.append(ChainBreak(head.chain, row.seq, "link to the previous entry broken"))
                elif digest(row) != row.hash:
                    breaks.append(ChainBreak(head.chain, row.seq, "content altered"))
                expected_seq, previous, after = row.seq + 1, row.hash, row.seq
                if breaks:
                    break
            if breaks and breaks[-1].chain == head.chain:
                break
        if not (breaks and breaks[-1].chain == head.chain) and (expected_seq - 1 != head.seq or previous != head.hash):
            breaks.append(ChainBreak(head.chain, head.seq, "latest entries missing"))
    return checked, breaks


@dataclass(frozen=True)
class AuditFilter:
    """Filters of the audit log API; None means "any". `tenant_id` None lists every chain (super admin)."""

    tenant_id: uuid.UUID | None = None
    actor_id: uuid.UUID | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: str | None = None
    since: Any = None
    until: Any = None


def list_entries(session: Session, *, filters: AuditFilter, limit: int,
                 after: tuple[Any, uuid.UUID] | None = None) -> list[AuditEntry]:
    """Return up to `limit + 1` entries newest first, strictly after the cursor `(created_at, id)`.

    Keyset pagination: the cost does not grow with how deep the page is. The extra row tells
    the caller whether there is a next page.
    """
    stmt = select(AuditEntry)
    for column, value in ((AuditEntry.tenant_id, filters.tenant_id), (AuditEntry.actor_id, filters.actor_id),
                          (AuditEntry.action, filters.action), (AuditEntry.resource_type, filters.resource_type),
                          (AuditEntry.resource_id, filters.resource_id), (AuditEntry.outcome, filters.outcome)):
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.since is not None:
        stmt = stmt.where(AuditEntry.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEntry.created_at < filters.until)
    if after is not None:
        created, entry_id = after
        # A row-value comparison lets the (tenant_id, created_at, id) index seek straight to the
        # cursor; the equivalent OR of comparisons makes SQLite scan the tenant's whole prefix.
        stmt = stmt.where(sa.tuple_(AuditEntry.created_at, AuditEntry.id)
                          < sa.tuple_(sa.literal(created, AuditEntry.created_at.type),
                                      sa.literal(entry_id, AuditEntry.id.type)))
    stmt = stmt.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit + 1)
    return list(session.exec(stmt).all())
