"""Alembic environment: runs migrations on the connection or URL handed over by `persistence.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import persistence.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from persistence.search_index import in_models

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    """Run the migrations inside one transaction on the configured connection or URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=in_models,  # the search index's engine-specific objects live outside the models
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
