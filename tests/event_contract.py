"""The event contract check of the whole test session (issue 12, "The event log").

At the end of a session, every event the tests made the hub emit (the `events` table of the
session's database) must validate against the schema its type declares in the contract
(`x-event-type` schemas, read through `server.app.event_types`), and no undeclared type may
appear. On a FULL run it also fails when a declared type was never emitted by any test.

What counts as a full run: no `-k`/`-m` selection, nothing deselected, and every
`tests/**/test_*.py` file on disk collected. A partial run (one module, `-k events`, `--lf`...)
checks only the first half, so it never fails for types that the unselected tests emit.

`conftest.py` runs `problems` just before the last test's teardown (the session database still
exists then) and raises `EventContractBroken` after that teardown: the report shows it as an
ERROR at the teardown of the last test, with every problem listed, and the run fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from sqlmodel import Session, select

from persistence.db import make_engine
from persistence.models import Event

TESTS = Path(__file__).resolve().parent
MAX_LISTED = 30


class EventContractBroken(AssertionError):
    """Events emitted during the session break the declared event contract."""

    def __init__(self, found: list[str]) -> None:
        super().__init__("The event contract is broken (tests/event_contract.py):\n  - " + "\n  - ".join(found))


def declared_schemas() -> dict[str, dict]:
    """Map each declared event type to its resolved schema, from the contract as the app loads it."""
    from server.app import API_SPEC, event_types, load_spec

    return {item["name"]: item["schema"] for item in event_types(load_spec(API_SPEC))}


def problems(events: list[dict], declared: dict[str, dict], *, full_run: bool) -> list[str]:
    """Return what is wrong with `events` (API views of emitted events) against `declared`.

    Each event must have a declared type and validate against its schema (read context, as a
    response); on a full run every declared type must
    have been emitted at least once.
    """
    found: list[str] = []
    validators = {name: OAS30ReadValidator(schema, format_checker=oas30_format_checker)
                  for name, schema in declared.items()}
    for event in events:
        validator = validators.get(event.get("type"))
        if validator is None:
            found.append(f"{event.get('id')}: type {event.get('type')!r} is not declared in the contract")
            continue
        for error in validator.iter_errors(event):
            where = "/".join(map(str, error.absolute_path)) or "the root"
            found.append(f"{event['id']} ({event['type']}): {error.message[:300]} (at {where})")
    if full_run:
        emitted = {event.get("type") for event in events}
        never = sorted(set(declared) - emitted)
        found += [f"declared event type {name!r} was never emitted by any test" for name in never]
    if len(found) > MAX_LISTED:
        found = found[:MAX_LISTED] + [f"... and {len(found) - MAX_LISTED} more"]
    return found


def emitted_events(database_url: str) -> list[dict]:
    """Every event in the session database, shaped as the API serves it (oldest first)."""
    from handlers import views

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return [views.event(row) for row in session.exec(select(Event).order_by(Event.seq)).all()]
    finally:
        engine.dispose()


def is_full_run(session: pytest.Session, deselected: int) -> bool:
    """True when the whole suite was selected (see the module docstring)."""
    config = session.config
    if config.getoption("keyword", "") or config.getoption("markexpr", "") or deselected:
        return False
    collected = {Path(str(item.path)).resolve() for item in session.items}
    return set(TESTS.rglob("test_*.py")) <= collected


def check(session: pytest.Session, *, database_url: str | None, deselected: int) -> list[str]:
    """Run the check on the session's database (nothing to check when no test built the app)."""
    if database_url is None:
        return []
    return problems(emitted_events(database_url), declared_schemas(),
                    full_run=is_full_run(session, deselected))
