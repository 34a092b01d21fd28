"""Password hashing with argon2id (argon2-cffi defaults, RFC 9106 recommended parameters)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the email is unknown, so a login with an unknown email costs as much
    # as one with a wrong password and timing does not reveal which accounts exist. Made on first
    # use, not at import: an argon2 hash is ~100 ms of every worker's cold start otherwise.
    return _hasher.hash("dummy-password-for-timing-equalisation")


def hash_password(password: str) -> str:
    """Return the argon2id hash (PHC string) of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Return True if `password` matches `password_hash`; a None hash still costs one verify."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
