"""Offset pagination shared by the list queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlmodel import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows plus what the API's list envelope needs (`total`, `limit`, `offset`)."""

    items: list[T]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        """True when rows exist past this page."""
        return self.offset + len(self.items) < self.total

    @property
    def next_offset(self) -> int | None:
        """The offset of the next page, or None on the last page."""
        return self.offset + len(self.items) if self.has_more else None


def paginate(session: Session, stmt: Any, *, limit: int, offset: int, order_by: Any) -> Page:
    """Run `stmt` (a select of one entity) for one page and count all its rows.

    `order_by` must end with a unique column so pages never overlap or skip a row.
    """
    total = session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery()))
    rows = session.exec(stmt.order_by(*order_by).limit(limit).offset(offset)).all()
    return Page(items=list(rows), total=int(total or 0), limit=limit, offset=offset)


def contains(column: Any, text: str) -> Any:
    """Return a case-insensitive `column LIKE %text%` clause with LIKE wildcards in `text` escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(column).like(f"%{escaped.lower()}%", escape="\\")


def ordering(column: Any, sort_order: str) -> Any:
    """Return `column` ascending, or descending when `sort_order` is `desc`."""
    return column.desc() if sort_order == "desc" else column.asc()
