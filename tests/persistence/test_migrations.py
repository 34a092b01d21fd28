"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from persistence import db, search_index
from persistence.migrate import alembic_config
from alembic.script import ScriptDirectory


def test_migrated_database_matches_the_models(app):
    with db.engine().connect() as conn:
        # The search index's FTS5 table (SQLite) and tsvector column (PostgreSQL) are made by migration
        # 0011 outside the models; search_index.in_models names exactly those.
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": search_index.in_models})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []


def test_database_is_at_the_single_head(app, settings):
    heads = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_heads()
    with db.engine().connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == tuple(heads)
    assert len(heads) == 1
