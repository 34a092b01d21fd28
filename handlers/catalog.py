"""Operations of tag `catalog` (openapi/paths/catalog.yaml). Any signed-in user.
Seed: integration API implementation, "List Available Integrations (Catalog)"."""

from __future__ import annotations

from uuid import UUID

from handlers import views
from handlers.catalog_cursor import Listing
from persistence import providers
from persistence.db import transaction
from server.pipeline import local_read


@local_read
def list_catalog(token_info: dict, limit: int = 50, offset: int = 0, cursor: str | None = None,
                 category: str | None = None, search: str | None = None, sortBy: str = "name",
                 sortOrder: str = "asc") -> dict:
    """Return one page of the providers tenants can enable (audience tenant, status active)."""
    listing = Listing(category=category, search=search, sort_by=sortBy, sort_order=sortOrder)
    after = listing.decode(cursor, offset=offset) if cursor is not None else None
    with transaction() as session:
        result = providers.list_page(session, limit=limit, offset=offset, after=after, category=category,
                                     status="active", audience="tenant", search=search, sort_by=sortBy,
                                     sort_order=sortOrder)
        page = views.page("providers", result, views.provider)
        page["nextCursor"] = listing.next_cursor(result)
        return page


@local_read
def get_catalog_provider(category: str, id: str, token_info: dict) -> dict:
    """Return one catalog provider; a system or inactive provider answers 404."""
    with transaction() as session:
        return views.provider(providers.get_listed(session, provider_id=UUID(id), category=category))
