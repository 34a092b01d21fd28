"""JWT access and refresh tokens (PyJWT).

Access tokens live 15 minutes, refresh tokens 7 days (integration runbook section 3.2). Both
carry `iss`, `aud`, `sub`, `iat`, `exp`, `jti` and a `typ` (`access` / `refresh`) so one can
never be used as the other; the header's `kid` names the signing key so keys can rotate.
Verification pins the algorithm list (RFC 8725 section 3.1).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt

from server.errors import ApiError

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "typ", "jti"]


@dataclass(frozen=True)
class TokenConfig:
    """What signing and verifying need: secret, algorithm, issuer, audience and lifetimes (seconds)."""

    secret: str
    algorithm: str
    issuer: str
    audience: str
    access_ttl: int
    refresh_ttl: int

    @property
    def kid(self) -> str:
        """Key id: a digest of the secret, so a rotated key gets a new id without naming it."""
        return hashlib.sha256(self.secret.encode()).hexdigest()[:16]


def mint_access(config: TokenConfig, *, user_id: uuid.UUID, tenant_id: uuid.UUID | None, role: str,
                family_id: uuid.UUID) -> str:
    """Return a signed access token for the user (valid `config.access_ttl` seconds).

    `fam` carries the login (refresh-token family) it belongs to, so revoking the login
    (logout, refresh-token reuse) refuses the access token at once (server/security.py).
    """
    return _encode(
        config,
        {"sub": str(user_id), "tid": str(tenant_id) if tenant_id else None, "role": role, "typ": "access",
         "fam": str(family_id)},
        ttl=config.access_ttl,
        jti=str(uuid.uuid4()),
    )


def mint_refresh(config: TokenConfig, *, user_id: uuid.UUID, token_id: uuid.UUID, family_id: uuid.UUID) -> str:
    """Return a signed refresh token whose `jti` is the refresh-token row id."""
    return _encode(
        config,
        {"sub": str(user_id), "fam": str(family_id), "typ": "refresh"},
        ttl=config.refresh_ttl,
        jti=str(token_id),
    )


def decode(config: TokenConfig, token: str, *, typ: str) -> dict[str, Any]:
    """Verify `token` and return its claims.

    Raises ApiError(401, INVALID_TOKEN) when the signature, key id, algorithm, issuer, audience,
    expiry or token type is wrong, or a required claim is missing.
    """
    try:
        decoded = jwt.decode_complete(
            token,
            config.secret,
            algorithms=[config.algorithm],
            audience=config.audience,
            issuer=config.issuer,
            options={"require": REQUIRED_CLAIMS},
        )
        if decoded["header"].get("kid") != config.kid:
            raise jwt.InvalidTokenError("unknown key id")
        claims = decoded["payload"]
        if claims.get("typ") != typ:
            raise jwt.InvalidTokenError("wrong token type")
        uuid.UUID(claims["sub"])
        uuid.UUID(claims["jti"])
        uuid.UUID(claims["fam"])  # access: its login; refresh: its family
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "INVALID_TOKEN", "Token has expired") from None
    except (jwt.InvalidTokenError, ValueError, TypeError, KeyError):
        raise ApiError(401, "INVALID_TOKEN", "Token is invalid") from None
    return claims


def _encode(config: TokenConfig, claims: dict[str, Any], *, ttl: int, jti: str) -> str:
    now = datetime.now(timezone.utc)
    payload = {
        **claims,
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "exp": now + timedelta(seconds=ttl),
        "jti": jti,
    }
    return jwt.encode(payload, config.secret, algorithm=config.algorithm, headers={"kid": config.kid})
