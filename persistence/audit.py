"""Audit entries: written in the caller's transaction, never updated or deleted.

Seeds: integration runbook section 7.2 ("Audit logs generated"), integration API "Audit Logging".
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from persistence.models import AuditEntry

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
    session.add(entry)
    return entry
