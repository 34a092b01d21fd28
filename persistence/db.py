"""Engine and transaction scope. The request owns the transaction: queries never commit.

`configure(url)` is called once by the app factory with the URL from settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

_engine: Engine | None = None


def make_engine(url: str) -> Engine:
    """Create an engine for `url` (SQLite file or `postgresql+psycopg://`).

    SQLite gets a busy timeout and foreign keys on; PostgreSQL a pre-pinged pool so a
    connection dropped by a server restart is replaced instead of failing a request.
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def configure(url: str) -> Engine:
    """Set the process-wide engine used by `transaction()`; return it."""
    global _engine
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(url)
    return _engine


def engine() -> Engine:
    """Return the configured engine; raise RuntimeError if `configure` was not called."""
    if _engine is None:
        raise RuntimeError("persistence.db.configure(url) has not been called")
    return _engine


@contextmanager
def transaction() -> Iterator[Session]:
    """Yield a session in one transaction: committed on normal exit, rolled back on any error."""
    with Session(engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_sqlite() -> bool:
    """Return True when the configured engine is SQLite (False when none is configured yet)."""
    return _engine is not None and _engine.dialect.name == "sqlite"


def ping() -> bool:
    """Return True when the database answers `SELECT 1`, False on any database error."""
    try:
        with engine().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError:
        return False
