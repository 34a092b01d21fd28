"""The session's event contract check (tests/event_contract.py) is not vacuous: it reports an
event that breaks its schema, an undeclared type, and (full runs only) a declared type that no
test emitted, except the ones emitted by the webhooks work until its merge."""

from __future__ import annotations

import copy
from types import SimpleNamespace

from tests import event_contract
from tests.event_contract import declared_schemas, problems


def examples() -> list[dict]:
    """One valid event per declared type: the contract's own examples."""
    return [copy.deepcopy(schema["example"]) for schema in declared_schemas().values()]


def test_the_declared_examples_pass():
    assert problems(examples(), declared_schemas(), full_run=True) == []


def test_an_event_off_its_schema_is_reported():
    events = examples()
    broken = next(event for event in events if event["type"] == "integration.created")
    broken["data"]["status"] = "exploded"
    broken["data"]["secret"] = "hunter2"
    found = problems(events, declared_schemas(), full_run=False)
    assert len(found) == 2 and all(line.startswith(f"{broken['id']} (integration.created): ") for line in found)
    assert any("'exploded' is not one of" in line and "data/status" in line for line in found), found
    assert any("'secret' was unexpected" in line for line in found), found


def test_an_undeclared_type_is_reported():
    event = {**examples()[0], "type": "integration.exploded"}
    assert problems([event], declared_schemas(), full_run=False) == [
        f"{event['id']}: type 'integration.exploded' is not declared in the contract"]


def test_a_type_never_emitted_fails_a_full_run_only():
    events = [event for event in examples() if event["type"] != "user.deleted"]
    assert problems(events, declared_schemas(), full_run=True) == [
        "declared event type 'user.deleted' was never emitted by any test"]
    assert problems(events, declared_schemas(), full_run=False) == []


def test_every_declared_example_passes_a_full_run():
    assert problems(examples(), declared_schemas(), full_run=True) == []


def test_only_a_run_of_every_test_file_without_selection_is_full(request):
    every_file = [SimpleNamespace(path=path) for path in event_contract.TESTS.rglob("test_*.py")]
    unselected = not (request.config.getoption("keyword") or request.config.getoption("markexpr"))
    assert event_contract.is_full_run(SimpleNamespace(config=request.config, items=every_file), 0) is unselected
    assert event_contract.is_full_run(SimpleNamespace(config=request.config, items=every_file), 1) is False
    assert event_contract.is_full_run(SimpleNamespace(config=request.config, items=every_file[1:]), 0) is False
