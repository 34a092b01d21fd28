"""Fast row generation for the benchmark: clone one template row N times in SQLite.

One `WITH RECURSIVE ... INSERT ... SELECT` per batch copies every column of a template row
written by the hub's own persistence code (so storage formats are the hub's), replacing the
columns that must differ (`overrides`: column -> SQL expression over the sequence number `n`).
A million rows take seconds, where ORM inserts would take minutes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

BATCH = 200_000
NEW_ID = "lower(hex(randomblob(16)))"  # sa.Uuid on SQLite: 32 hex digits, no dashes


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """Return the column names of `table`, in order."""
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def clone(db_path: Path, table: str, *, template_id: str, start: int, count: int, overrides: dict[str, str]) -> None:
    """Insert `count` copies of the row `template_id` of `table`, numbered n = start .. start+count-1."""
    conn = sqlite3.connect(db_path, timeout=60)
    try:
        cols = columns(conn, table)
        exprs = ", ".join(overrides.get(col, f"t.{col}") for col in cols)
        sql = (f"WITH RECURSIVE seq(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM seq WHERE n < ?) "
               f"INSERT INTO {table} ({', '.join(cols)}) SELECT {exprs} "
               f"FROM seq, (SELECT * FROM {table} WHERE id = ?) AS t")
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            first = start + done
            conn.execute(sql, (first, first + size - 1, template_id))
            conn.commit()
            done += size
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def count(db_path: Path, sql: str, params: tuple = ()) -> int:
    """Return the single integer `sql` selects."""
    conn = sqlite3.connect(db_path, timeout=60)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()
