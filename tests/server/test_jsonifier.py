"""server/jsonifier.py: answers serialised by orjson read as the same JSON Connexion's own jsonifier writes."""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal

import pytest
from connexion.jsonifier import Jsonifier

from server.jsonifier import FastJsonifier

AWARE = datetime.datetime(2026, 12, 2, 13, 4, 5, 678901, tzinfo=datetime.timezone.utc)
VALUES = [
    {"data": [{"id": "acc_1", "name": "Zoë Ünïcode ☃", "n": 3, "x": 1.5, "ok": True, "none": None}], "hasMore": False},
    [],
    "plain",
    {"when": AWARE, "naive": AWARE.replace(tzinfo=None), "day": AWARE.date()},
    {"id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "amount": Decimal("12.5")},
    {"big": 2**70, "small": -(2**70)},  # beyond orjson's 64 bits: Connexion's way
    {1: "a key that is not a string"},  # refused by orjson: Connexion's way
    {"lone": "ab\ud800c"},  # a lone surrogate, as stored data might hold: Connexion's way
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_same_json_as_connexions_jsonifier(value):
    fast, connexion = FastJsonifier().dumps(value), Jsonifier().dumps(value)

    assert fast.endswith("\n")
    assert json.loads(fast) == json.loads(connexion)


def test_orjson_writes_the_common_case_compactly():
    assert FastJsonifier().dumps({"a": [1, "é"], "b": AWARE}) == '{"a":[1,"é"],"b":"2026-12-02T13:04:05.678901+00:00"}\n'


def test_a_type_nobody_knows_raises_type_error_as_before():
    with pytest.raises(TypeError):
        FastJsonifier().dumps({"x": object()})


def test_arguments_for_json_dumps_are_honoured():
    assert FastJsonifier().dumps({"b": 1, "a": 2}, sort_keys=True, indent=None) == '{"a": 2, "b": 1}\n'
