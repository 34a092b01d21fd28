"""Credential vault: AES-256-GCM encryption at rest, bound to the row that owns the secret.

Each ciphertext carries the id of the key that sealed it, so keys can rotate: new secrets are
sealed with the newest key, old ones open with any configured key until `rotate` re-seals them.
The associated data (AAD, NIST SP 800-38D) is the owner's binding, e.g.
`connection:<tenant_id>:<connection_id>`: a ciphertext copied to another row fails to open.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1"


class VaultError(Exception):
    """A secret cannot be opened: unknown key, tampered ciphertext, or bound to another row."""


def generate_key() -> str:
    """Return a new random 256-bit key, urlsafe-base64 encoded (the `HUB_ENCRYPTION_KEYS` format)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Keyring:
    """The configured keys, newest first, addressable by their 8-hex-digit id."""

    keys: tuple[bytes, ...]

    @classmethod
    def from_strings(cls, encoded: list[str]) -> "Keyring":
        """Build from urlsafe-base64 32-byte keys; ValueError on a malformed key or an empty list."""
        keys = []
        for item in encoded:
            raw = base64.urlsafe_b64decode(item.strip().encode())
            if len(raw) != 32:
                raise ValueError("each encryption key must be 32 bytes, urlsafe-base64 encoded")
            keys.append(raw)
        if not keys:
            raise ValueError("at least one encryption key is required")
        return cls(tuple(keys))

    @staticmethod
    def key_id(key: bytes) -> str:
        """Return the key's id: the first 8 hex digits of its SHA-256."""
        return hashlib.sha256(key).hexdigest()[:8]

    @property
    def newest_id(self) -> str:
        """Id of the key new secrets are sealed with."""
        return self.key_id(self.keys[0])

    def find(self, key_id: str) -> bytes:
        """Return the key with this id; VaultError if it is not configured."""
        for key in self.keys:
            if self.key_id(key) == key_id:
                return key
        raise VaultError(f"encryption key {key_id} is not configured")


_keyring: Keyring | None = None


def configure(keyring: Keyring) -> None:
    """Install the process's keyring (called once by the app factory or CLI)."""
    global _keyring
    _keyring = keyring


def keyring() -> Keyring:
    """Return the installed keyring; RuntimeError if none was configured."""
    if _keyring is None:
        raise RuntimeError("persistence.vault.configure(keyring) has not been called")
    return _keyring


def seal(value: Any, *, binding: str) -> str:
    """Encrypt a JSON-serialisable `value` bound to `binding`; return `v1:<key id>:<nonce+ciphertext>`."""
    ring = keyring()
    nonce = os.urandom(12)
    sealed = AESGCM(ring.keys[0]).encrypt(nonce, json.dumps(value).encode(), binding.encode())
    return f"{PREFIX}:{ring.newest_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def open_sealed(token: str, *, binding: str) -> Any:
    """Decrypt a value sealed with `seal` for the same `binding`; VaultError otherwise."""
    try:
        prefix, key_id, payload = token.split(":", 2)
        raw = base64.urlsafe_b64decode(payload.encode())
    except (ValueError, AttributeError):
        raise VaultError("malformed sealed secret") from None
    if prefix != PREFIX:
        raise VaultError("unknown sealed-secret format")
    try:
        plain = AESGCM(keyring().find(key_id)).decrypt(raw[:12], raw[12:], binding.encode())
    except InvalidTag:
        raise VaultError("secret does not open: tampered, or bound to another row") from None
    return json.loads(plain)


def needs_rotation(token: str) -> bool:
    """True when the secret was sealed with a key other than the newest."""
    return token.split(":", 2)[1] != keyring().newest_id
