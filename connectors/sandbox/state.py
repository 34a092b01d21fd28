"""All mutable state of one sandbox app: codes, tokens, rate-limit counters and records.

Everything sits behind one re-entrant lock. The token endpoint holds that lock for a whole
request, so "check a refresh token, then rotate it" is atomic: two concurrent refreshes with
the same token cannot both succeed, the second is detected as replay.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from connectors.sandbox.config import SandboxConfig
from connectors.sandbox.faults import FaultInjector
from connectors.sandbox.models import AuthorizationCode, Token
from connectors.sandbox.notify import Notifier
from connectors.sandbox.ratelimit import SlidingWindowLimiter
from connectors.sandbox.records import build_accounts, build_contacts, format_timestamp


class SandboxState:
    """In-memory store of one sandbox instance; tests reach it as `SandboxServer.state`."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self._codes: dict[str, AuthorizationCode] = {}
        self._by_access: dict[str, Token] = {}
        self._by_refresh: dict[str, Token] = {}
        self._limiter = SlidingWindowLimiter()
        accounts = build_accounts(config.records)
        self._records: dict[str, list[dict]] = {"accounts": accounts, "contacts": build_contacts(accounts)}
        self._next_index = {kind: len(records) + 1 for kind, records in self._records.items()}
        self.faults = FaultInjector(config.faults)
        self.notifier = Notifier()

    # -- authorization codes ------------------------------------------------------------------

    def save_code(self, code: AuthorizationCode) -> None:
        """Store a newly issued code (and drop expired ones, which nobody can use any more)."""
        with self.lock:
            now = time.time()
            for stale in [c for c in self._codes.values() if c.is_expired(now)]:
                del self._codes[stale.code]
            self._codes[code.code] = code

    def find_code(self, value: str, *, client_id: str) -> AuthorizationCode | None:
        """Return the usable code `value` of `client_id`, else None.

        A code presented a second time is refused and, per RFC 6749 §4.1.2, every token
        already issued from it is revoked (the first redemption may have been the attacker's).
        """
        with self.lock:
            code = self._codes.get(value)
            if code is None or code.client_id != client_id:
                return None
            if code.used:
                self.revoke_family(code.family_id)
                return None
            return None if code.is_expired(time.time()) else code

    def consume_code(self, code: AuthorizationCode) -> None:
        """Mark `code` redeemed; it stays stored until expiry so that a replay can be recognised."""
        with self.lock:
            code.used = True

    # -- tokens -------------------------------------------------------------------------------

    def save_token(self, token: Token) -> None:
        """Store an issued access token and its refresh token."""
        with self.lock:
            self._by_access[token.access_token] = token
            if token.refresh_token:
                self._by_refresh[token.refresh_token] = token

    def find_access_token(self, value: str) -> Token | None:
        """Return the token whose access token is `value` (expired or revoked included), else None."""
        with self.lock:
            return self._by_access.get(value)

    def find_refresh_token(self, value: str) -> Token | None:
        """Return the token whose refresh token is `value` (used, expired or revoked included), else None."""
        with self.lock:
            return self._by_refresh.get(value)

    def mark_rotated(self, token: Token) -> None:
        """Mark the refresh token of `token` as exchanged; presenting it again is replay."""
        with self.lock:
            token.rotated = True

    def revoke_access(self, token: Token) -> None:
        """Revoke only the access token of `token` (RFC 7009 lets the refresh token live on)."""
        with self.lock:
            token.access_revoked = True

    def revoke_family(self, family_id: str) -> None:
        """Revoke every access and refresh token descending from one authorization (RFC 9700 §4.14.2)."""
        with self.lock:
            for token in self._by_access.values():
                if token.family_id == family_id:
                    token.access_revoked = token.refresh_revoked = True

    def revoke_all(self) -> None:
        """Revoke every token issued so far (a provider-side "disconnect everything")."""
        with self.lock:
            for token in self._by_access.values():
                token.access_revoked = token.refresh_revoked = True

    def expire_access_token(self, value: str) -> None:
        """Make the access token `value` expired now (fault injection); its refresh token stays usable."""
        with self.lock:
            token = self._by_access.get(value)
            if token is not None:
                token.expires_in = 0

    def family_tokens(self, family_id: str) -> list[Token]:
        """Return the tokens of one authorization, oldest first (for tests and debugging)."""
        with self.lock:
            return [token for token in self._by_access.values() if token.family_id == family_id]

    # -- rate limiting ------------------------------------------------------------------------

    def check_rate_limit(self, credential_key: str) -> int | None:
        """Count one API request of `credential_key`; return None if allowed, else Retry-After seconds."""
        return self._limiter.hit(credential_key, limit=self.config.rate_limit_per_minute, now=time.monotonic())

    def force_rate_limit(self, seconds: float = 60) -> None:
        """Answer 429 to every authenticated API request for the next `seconds` seconds."""
        self._limiter.block_all(until=time.monotonic() + seconds)

    def reset_rate_limits(self) -> None:
        """Forget all counted requests and any forced limit."""
        self._limiter.reset()

    # -- records ------------------------------------------------------------------------------

    def records(self, kind: str) -> list[dict]:
        """Return a snapshot of the `kind` records ("accounts" or "contacts")."""
        with self.lock:
            return [dict(record) for record in self._records[kind]]

    def touch(self, record_id: str, *, at: datetime | None = None, **changes: str) -> dict:
        """Apply `changes` to one record and set its updatedAt to `at` (default now); return it.

        For incremental-sync tests; raise KeyError for an unknown id. `changes` use the JSON
        field names (e.g. `name="Acme Renamed"`).
        """
        with self.lock:
            for records in self._records.values():
                for record in records:
                    if record["id"] == record_id:
                        record.update(changes)
                        record["updatedAt"] = format_timestamp(at or datetime.now(timezone.utc))
                        return dict(record)
        raise KeyError(record_id)

    # -- writes (soft deletes) ----------------------------------------------------------------

    def listable(self, kind: str, *, include_deleted: bool) -> list[dict]:
        """Return a snapshot of the `kind` records; deleted ones only with `include_deleted` (changed-since lists)."""
        with self.lock:
            return [dict(record) for record in self._records[kind] if include_deleted or not record.get("deleted")]

    def get_record(self, kind: str, record_id: str) -> dict | None:
        """Return a copy of the live record `record_id` of `kind`, or None (unknown or deleted)."""
        with self.lock:
            record = self._find(kind, record_id)
            return dict(record) if record is not None and not record.get("deleted") else None

    def create_record(self, kind: str, fields: dict) -> dict:
        """Add a `kind` record with the next id (`acc_0121`...) and updatedAt now; notify; return it."""
        with self.lock:
            index = self._next_index[kind]
            self._next_index[kind] = index + 1
            record = {"id": f"{kind[:3]}_{index:04d}", **fields, "updatedAt": self._bumped(None)}
            self._records[kind].append(record)
            created = dict(record)
        self.notifier.publish(entity=kind, change="created", record=created)
        return created

    def update_record(self, kind: str, record_id: str, fields: dict) -> dict | None:
        """Apply `fields` to a live record and bump its updatedAt; notify; return it, or None if unknown or deleted."""
        with self.lock:
            record = self._find(kind, record_id)
            if record is None or record.get("deleted"):
                return None
            record.update(fields)
            record["updatedAt"] = self._bumped(record["updatedAt"])
            updated = dict(record)
        self.notifier.publish(entity=kind, change="updated", record=updated)
        return updated

    def delete_record(self, kind: str, record_id: str) -> dict | None:
        """Soft-delete a live record (`deleted: true`, `deletedAt` = bumped updatedAt); notify; None if unknown or deleted."""
        with self.lock:
            record = self._find(kind, record_id)
            if record is None or record.get("deleted"):
                return None
            record["updatedAt"] = record["deletedAt"] = self._bumped(record["updatedAt"])
            record["deleted"] = True
            deleted = dict(record)
        self.notifier.publish(entity=kind, change="deleted", record=deleted)
        return deleted

    def _find(self, kind: str, record_id: str) -> dict | None:
        return next((record for record in self._records[kind] if record["id"] == record_id), None)

    @staticmethod
    def _bumped(previous: str | None) -> str:
        # Timestamps have one-second precision (like the generated data); a write always moves a
        # record's updatedAt forward, so two writes within a second stay ordered for last-write-wins.
        now = datetime.now(timezone.utc).replace(microsecond=0)
        if previous is not None:
            now = max(now, datetime.fromisoformat(previous) + timedelta(seconds=1))
        return format_timestamp(now)
