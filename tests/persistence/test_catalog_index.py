"""The catalog indexes (migration 0004) exist and the catalog's page queries range-scan them."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from persistence import db, providers
from persistence.db import transaction
from persistence.pages import After

pytestmark = pytest.mark.usefixtures("app")  # the app fixture migrates and configures the database

CATALOG = {"status": "active", "audience": "tenant"}
SORTS = [(sort_by, sort_order) for sort_by in providers.SORTABLE for sort_order in ("asc", "desc")]
NEW_YEAR = datetime(2026, 1, 1, tzinfo=timezone.utc)
CURSOR_VALUES = {"name": "M", "displayName": "M", "provider": "m", "createdAt": NEW_YEAR, "updatedAt": NEW_YEAR}


def index_of(sort_by: str) -> tuple[str, str]:
    """The name of the catalog index for `sort_by`, and the column it sorts on."""
    column = providers.SORTABLE[sort_by].key
    return f"ix_providers_catalog_{column}", column


def executed_sql(**page) -> list[tuple[str, object]]:
    """Run providers.list_page(**page) and return the statements it sent with their parameters."""
    sent: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _executemany):
        sent.append((statement, parameters))

    sa.event.listen(db.engine(), "before_cursor_execute", record)
    try:
        with transaction() as session:
            providers.list_page(session, **CATALOG, **page)
    finally:
        sa.event.remove(db.engine(), "before_cursor_execute", record)
    return sent


def sqlite_plan(statement: str, parameters: object) -> str:
    with db.engine().connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return "\n".join(row[-1] for row in rows)


class TestCatalogIndexes:
    @pytest.mark.parametrize("sort_by", list(providers.SORTABLE))
    def test_exists_after_migration_with_the_catalog_columns(self, db_kind, sort_by):
        index, column = index_of(sort_by)
        with db.engine().connect() as conn:
            if db_kind == "sqlite":
                found = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index' AND name = :name"),
                                     {"name": index}).scalars().all()
            else:
                found = conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'providers' "
                                             "AND indexname = :name"), {"name": index}).scalars().all()
            columns = {ix["name"]: ix["column_names"] for ix in sa.inspect(conn).get_indexes("providers")}

        assert found == [index]
        assert columns[index] == ["status", "audience", column, "id"]


@pytest.fixture
def sqlite_only(db_kind):
    if db_kind != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL picks plans by cost and table statistics")


@pytest.mark.usefixtures("sqlite_only")
class TestCatalogQueryPlans:
    @pytest.mark.parametrize(("sort_by", "sort_order"), SORTS)
    def test_offset_page_scans_the_index_in_order(self, sort_by, sort_order):
        index, _ = index_of(sort_by)
        statement, parameters = executed_sql(limit=50, offset=0, sort_by=sort_by, sort_order=sort_order)[0]

        plan = sqlite_plan(statement, parameters)

        assert f"USING INDEX {index} (status=? AND audience=?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort step: rows come in index order

    @pytest.mark.parametrize(("sort_by", "sort_order"), SORTS)
    def test_keyset_page_seeks_into_the_index(self, sort_by, sort_order):
        index, column = index_of(sort_by)
        after = After(value=CURSOR_VALUES[sort_by], id=uuid.uuid4(), offset=500, total=1000)
        # One statement: a keyset page does not count.
        [(statement, parameters)] = executed_sql(limit=50, after=after, sort_by=sort_by, sort_order=sort_order)

        plan = sqlite_plan(statement, parameters)

        bound = "<" if sort_order == "desc" else ">"
        assert f"USING INDEX {index} (status=? AND audience=? AND ({column},id){bound}(?,?))" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
