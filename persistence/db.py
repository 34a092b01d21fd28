"""Engine and transaction scope. The request owns the transaction: queries never commit.

`configure(url)` is called once by the app factory with the URL from settings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

_engine: Engine | None = None
# How long a SQLite connection waits for another connection's write lock before SQLITE_BUSY.
SQLITE_BUSY_TIMEOUT_S = 30
# SQLite's primary result codes for "a lock is held": SQLITE_BUSY, SQLITE_LOCKED.
_SQLITE_LOCK_CODES = frozenset({5, 6})
_no_lock_wait: ContextVar[bool] = ContextVar("hub_no_lock_wait", default=False)


def make_engine(url: str) -> Engine:
    """Create an engine for `url` (SQLite file or `postgresql+psycopg://`).

    SQLite gets a busy timeout and foreign keys on; PostgreSQL a pre-pinged pool so a
    connection dropped by a server restart is replaced instead of failing a request.
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "checkout")
        def _busy_timeout(dbapi_conn, record, _proxy):
            # Set only when it changes: a connection keeps its busy timeout between checkouts.
            waits = not _no_lock_wait.get()
            if record.info.get("waits_for_locks", True) != waits:
                dbapi_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000 if waits else 0}")
                record.info["waits_for_locks"] = waits

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


@contextmanager
def without_lock_wait() -> Iterator[None]:
    """Within it, SQLite connections checked out by this context fail at once on a held lock.

    A statement that needs a lock another connection holds (the write lock, mostly) raises
    `sqlalchemy.exc.OperationalError` with SQLITE_BUSY (see `is_lock_busy`) instead of waiting
    up to `SQLITE_BUSY_TIMEOUT_S` seconds: for work on the event loop, which must not wait, and
    is done again in a worker thread when it meets a lock (server/pipeline.py, `local_write`).
    No effect on PostgreSQL. Only connections checked out inside the block are affected.
    """
    token = _no_lock_wait.set(True)
    try:
        yield
    finally:
        _no_lock_wait.reset(token)


def is_lock_busy(exc: BaseException) -> bool:
    """Return True when `exc` is SQLite refusing a statement because another connection holds a lock.

    `exc` is what a query raised (`sqlalchemy.exc.OperationalError` wrapping `sqlite3.OperationalError`
    with SQLITE_BUSY or SQLITE_LOCKED, extended codes included: https://sqlite.org/rescode.html).
    """
    orig = getattr(exc, "orig", None)
    return isinstance(orig, sqlite3.OperationalError) and (getattr(orig, "sqlite_errorcode", 0) & 0xFF) in _SQLITE_LOCK_CODES


def ping() -> bool:
    """Return True when the database answers `SELECT 1`, False on any database error."""
    try:
        with engine().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError:
        return False
