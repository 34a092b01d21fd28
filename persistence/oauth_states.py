"""Pending OAuth authorizations (the `state` parameter). RFC 6749 section 10.12, RFC 9700 4.7.

The state value itself is never stored, only its SHA-256; it is single-use and short-lived.

A flow started from a browser (a cookie session) is also bound to that browser, as RFC 6749
section 10.12 describes: the state ends with `.` and the SHA-256 of a random nonce the browser
alone holds (an HttpOnly cookie, server/security.py), so a callback from a browser without the
nonce is told apart (`same_browser`). The binding cannot be stripped from an authorization URL:
the row is found by the hash of the whole state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta

from sqlmodel import Session, select

from persistence import vault
from persistence.errors import InvalidInput
from persistence.models import OAuthState, as_utc, utcnow

TTL = timedelta(minutes=10)


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _binding(browser_nonce: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(browser_nonce.encode()).digest()).rstrip(b"=").decode()


def create(session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID, integration_id: uuid.UUID,
           user_scoped: bool, code_verifier: str, return_url: str, browser_nonce: str | None = None) -> str:
    """Record a new authorization and return its fresh, unguessable `state` value (256 bits).

    With `browser_nonce`, the state also carries the nonce's SHA-256 (base64url), 87 characters
    in all; without it, 43.
    """
    state = secrets.token_urlsafe(32)  # base64url alphabet: never contains the "." separator
    if browser_nonce is not None:
        state = f"{state}.{_binding(browser_nonce)}"
    row = OAuthState(state_hash=_digest(state), tenant_id=tenant_id, user_id=user_id, integration_id=integration_id,
                     user_scoped=user_scoped, sealed_verifier="", return_url=return_url, expires_at=utcnow() + TTL)
    row.sealed_verifier = vault.seal(code_verifier, binding=f"oauth-state:{row.id}")
    session.add(row)
    session.flush()
    return state


def consume(session: Session, *, state: str) -> tuple[OAuthState, str]:
    """Mark the authorization used and return it with its PKCE verifier.

    Raises InvalidInput for an unknown, expired or already used state (replay); the row is
    locked so two callbacks with one state cannot both pass.
    """
    row = session.exec(select(OAuthState).where(OAuthState.state_hash == _digest(state)).with_for_update()).first()
    if row is None or row.used_at is not None or as_utc(row.expires_at) <= utcnow():
        raise InvalidInput("The OAuth state is unknown, expired or already used", details={"field": "state"})
    row.used_at = utcnow()
    session.add(row)
    return row, vault.open_sealed(row.sealed_verifier, binding=f"oauth-state:{row.id}")


def same_browser(state: str, *, browser_nonce: str | None) -> bool:
    """Tell whether the callback carrying `state` comes from the browser that started the flow.

    True for a flow bound to no browser (started with a bearer or API token: the hub cannot
    know who is at the browser then). For a bound flow, true only when `browser_nonce` is the
    nonce the state was created with (compared in constant time).
    """
    _, separator, binding = state.partition(".")
    if not separator:
        return True
    return browser_nonce is not None and hmac.compare_digest(binding, _binding(browser_nonce))


def reseal_pending(session: Session) -> int:
    """Re-seal the PKCE verifiers of pending authorizations under the newest key; return how many changed."""
    changed = 0
    rows = session.exec(select(OAuthState).where(OAuthState.used_at.is_(None)).with_for_update()).all()
    for row in rows:
        if vault.needs_rotation(row.sealed_verifier):
            binding = f"oauth-state:{row.id}"
            row.sealed_verifier = vault.seal(vault.open_sealed(row.sealed_verifier, binding=binding), binding=binding)
            session.add(row)
            changed += 1
    return changed
