"""First-start set-up: the first super admin and the provider catalog. Idempotent."""

from __future__ import annotations

import json
from importlib import resources

from sqlmodel import Session

from persistence import providers, users

CATALOG_FILE = "providers.json"
def catalog_entries() -> list[dict]:
    """Return the shipped catalog (`persistence/data/providers.json`) with column-named keys."""
    raw = json.loads(resources.files("persistence").joinpath("data", CATALOG_FILE).read_text(encoding="utf-8"))
    return [providers.document_columns(entry) for entry in raw]


def seed_catalog(session: Session, entries: list[dict] | None = None) -> int:
    """Insert the catalog entries whose `provider` key is not present yet; return how many were added."""
    return sum(providers.upsert_seed(session, fields=entry) for entry in (catalog_entries() if entries is None else entries))


def ensure_super_admin(session: Session, *, email: str, password: str) -> bool:
    """Create the first super admin when none exists; return True if one was created."""
    if users.super_admin_exists(session):
        return False
    users.create(session, tenant_id=None, email=email, name="Platform Admin", role="super_admin", password=password)
    return True
