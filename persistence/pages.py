"""Pagination shared by the list queries: by offset, or by keyset (strictly after a cursor)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlmodel import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows plus what the API's list envelope needs (`total`, `limit`, `offset`).

    `more` is set when the page itself knows whether rows follow (it fetched one row past the
    page); otherwise `has_more` is derived from `total`.
    """

    items: list[T]
    total: int
    limit: int
    offset: int
    more: bool | None = None

    @property
    def has_more(self) -> bool:
        """True when rows exist past this page."""
        return self.more if self.more is not None else self.offset + len(self.items) < self.total

    @property
    def next_offset(self) -> int | None:
        """The offset of the next page, or None on the last page."""
        return self.offset + len(self.items) if self.has_more else None


@dataclass(frozen=True)
class After:
    """A keyset position: the sort key `(value, id)` of the last row of the previous page.

    `offset` (where the next page starts in the walk) and `total` (the count of the page the walk
    started from) travel with it, so a keyset page reports them without counting.
    """

    value: Any
    id: uuid.UUID
    offset: int = 0
    total: int = 0


def paginate(session: Session, stmt: Any, *, limit: int, offset: int, order_by: Any) -> Page:
    """Run `stmt` (a select of one entity) for one page and the count of all its rows.

    `order_by` must end with a unique column so pages never overlap or skip a row. The count is
    skipped when the page shows where the rows end (a page that is not full and not past the end).
    """
    rows = list(session.exec(stmt.order_by(*order_by).limit(limit + 1).offset(offset)).all())
    more, rows = len(rows) > limit, rows[:limit]
    if not more and (rows or offset == 0):
        total = offset + len(rows)
    else:
        total = int(session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())) or 0)
    return Page(items=rows, total=total, limit=limit, offset=offset)


def paginate_after(session: Session, stmt: Any, *, limit: int, keys: Sequence[Any], descending: bool,
                   after: After) -> Page:
    """Return the page of `stmt` strictly after `after` in `keys` order, without counting.

    `keys` is (sort column, unique id column), both ascending or both descending, so the
    position is one row-value comparison an index on the keys (after the filters' equality
    columns) can seek to: the cost does not grow with how deep the page is.
    """
    sort_column, id_column = keys
    position = sa.tuple_(sa.literal(after.value, sort_column.type), sa.literal(after.id, id_column.type))
    stmt = stmt.where(sa.tuple_(sort_column, id_column) < position if descending
                      else sa.tuple_(sort_column, id_column) > position)
    rows = list(session.exec(stmt.order_by(*(ordering(key, "desc" if descending else "asc") for key in keys))
                             .limit(limit + 1)).all())
    return Page(items=rows[:limit], total=after.total, limit=limit, offset=after.offset, more=len(rows) > limit)


def contains(column: Any, text: str) -> Any:
    """Return a case-insensitive `column LIKE %text%` clause with LIKE wildcards in `text` escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(column).like(f"%{escaped.lower()}%", escape="\\")


def ordering(column: Any, sort_order: str) -> Any:
    """Return `column` ascending, or descending when `sort_order` is `desc`."""
    return column.desc() if sort_order == "desc" else column.asc()
