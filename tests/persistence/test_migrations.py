"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from persistence import db
from persistence.migrate import alembic_config
from alembic.script import ScriptDirectory


def test_migrated_database_matches_the_models(app):
    with db.engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []


def test_database_is_at_the_single_head(app, settings):
    heads = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_heads()
    with db.engine().connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == tuple(heads)
    assert len(heads) == 1
