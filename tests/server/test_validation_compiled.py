"""The compiled (jsonschema_rs) fast path of body validation (server/validation.py).

What must hold: the compiled validator never accepts what Connexion's jsonschema validation
refuses (and, on the spec's own schemas, gives the very same verdict); a refused instance still
gets Connexion's error, word for word; each schema is compiled once; the spec is never mutated.
"""

from __future__ import annotations

import copy
import json
import typing as t

import jsonschema_rs
import pytest
from connexion.exceptions import NonConformingResponseBody
from connexion.json_schema import Draft4RequestValidator, Draft4ResponseValidator
from connexion.spec import Specification
from connexion.validators import (
    FormDataValidator,
    JSONResponseBodyValidator,
    ParameterValidator,
    TextResponseBodyValidator,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator

from server import validation
from server.app import API_SPEC
from server.errors import ApiError
from server.validation import (
    CompiledJSONResponseBodyValidator,
    StrictJSONRequestBodyValidator,
    compiled_validator,
    draft4_schema,
    passes_compiled,
    validator_map,
)

MODES = ("request", "response")
REFERENCE = {"request": Draft4RequestValidator, "response": Draft4ResponseValidator}
# Values put in place of each property of each example: every JSON type, the edges of the
# bounds the spec uses, and strings for each `format` the spec uses, valid and not.
PROBES: list[t.Any] = [
    None, True, False, 0, -1, 1, 1.5, 2**40, "", "x", "x" * 5000, [], [None], ["x"], {}, {"k": "v"},
    "not-a-date", "2026-11-21T09:30:00Z", "2026-11-21t09:30:00.5z", "2026-13-01T00:00:00Z",
    "2026-11-21T09:30:60+01:00", "2026-11-21 09:30:00Z", "nobody", "a@b", "someone@example.com",
    "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f", "not-a-uuid", "https://api.example.com", "ftp://x", "/relative",
    "#00ff00", "#00FF0", "active", "deprecated", "oauth2", "crm", "ABC_DEF", "abc-123",
]


def reference_validator(schema: dict, mode: str):
    """Connexion's own validator for `schema`, as JSONRequestBodyValidator/JSONResponseBodyValidator build it."""
    return REFERENCE[mode](schema, format_checker=Draft4Validator.FORMAT_CHECKER)


def fresh_validator(schema: dict, mode: str):
    """A compiled validator for `schema`, outside the module cache."""
    return jsonschema_rs.Draft4Validator(
        draft4_schema(schema, mode=mode), formats=validation._python_formats(), validate_formats=True
    )


def subschemas(schema: t.Any) -> t.Iterator[dict]:
    """Yield `schema` and every schema nested in it (Draft 4 keywords only)."""
    if not isinstance(schema, dict):
        return
    yield schema
    for key in ("properties", "patternProperties", "definitions"):
        for sub in (schema.get(key) or {}).values():
            yield from subschemas(sub)
    for key in ("allOf", "anyOf", "oneOf", "items"):
        if isinstance(schema.get(key), list):
            for sub in schema[key]:
                yield from subschemas(sub)
    for key in ("not", "additionalProperties", "additionalItems", "items"):
        if isinstance(schema.get(key), dict):
            yield from subschemas(schema[key])


def operation_schemas(spec: dict) -> t.Iterator[tuple[str, str, dict]]:
    """Yield (label, mode, schema) for every JSON request body and response of the spec."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for media, content in (operation.get("requestBody") or {}).get("content", {}).items():
                if "json" in media and "schema" in content:
                    yield f"{method.upper()} {path} request", "request", content["schema"]
            for status, response in operation["responses"].items():
                for media, content in (response.get("content") or {}).items():
                    if "json" in media and "schema" in content:
                        yield f"{method.upper()} {path} {status}", "response", content["schema"]


def mutations(example: t.Any, schema: dict) -> t.Iterator[t.Any]:
    """Yield `example` and variants of it: each property dropped or replaced by each probe, one extra."""
    yield example
    yield None
    if isinstance(example, dict):
        for name in schema.get("properties", {}):
            yield {key: value for key, value in example.items() if key != name}
            for probe in PROBES:
                yield {**example, name: probe}
        yield {**example, "zzUnexpected": 1}
    elif isinstance(example, list):
        yield []
        yield example + example
        for probe in PROBES:
            yield [probe]
    else:
        yield from PROBES


@pytest.fixture(scope="module")
def spec() -> dict:
    """The API contract with every $ref resolved, as Connexion holds it."""
    return Specification.load(API_SPEC).spec


@pytest.fixture(scope="module")
def example_cases(spec) -> list[tuple[str, str, dict, t.Any]]:
    """(label, mode, schema, example) for every schema of the spec's bodies that has an example."""
    seen: set[tuple[int, str]] = set()
    cases = []
    for label, mode, schema in operation_schemas(spec):
        for sub in subschemas(schema):
            if "example" in sub and (id(sub), mode) not in seen:
                seen.add((id(sub), mode))
                cases.append((label, mode, sub, sub["example"]))
    return cases


class TestSameVerdictAsConnexion:
    def test_every_body_schema_of_the_spec_compiles(self, spec):
        uncompiled = [label for label, mode, schema in operation_schemas(spec) if compiled_validator(schema, mode=mode) is None]

        assert uncompiled == []

    def test_examples_and_their_mutations_get_the_same_verdict(self, example_cases):
        assert len(example_cases) > 50  # the spec gives an example on (almost) every schema
        disagreements, checked = [], 0
        for label, mode, schema, example in example_cases:
            compiled, reference = fresh_validator(schema, mode), reference_validator(schema, mode)
            for instance in mutations(example, schema):
                checked += 1
                if compiled.is_valid(instance) != reference.is_valid(instance):
                    disagreements.append((label, mode, json.dumps(instance)[:200]))

        assert checked > 10_000
        assert disagreements == []

    def test_a_valid_catalog_page_is_accepted(self, spec):
        schema = spec["paths"]["/integrations"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        provider = schema["properties"]["providers"]["items"]["example"]
        page = {"providers": [provider] * 50, "total": 50, "limit": 50, "offset": 0, "hasMore": False, "nextOffset": None}

        assert reference_validator(schema, "response").is_valid(page)
        assert passes_compiled(schema, page, mode="response") is True

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=st.data())
    def test_never_accepts_what_connexion_refuses(self, data, example_cases):
        label, mode, schema, example = data.draw(st.sampled_from(example_cases))
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
            max_leaves=10,
        )
        instance = data.draw(json_values)
        if isinstance(example, dict) and schema.get("properties"):
            name = data.draw(st.sampled_from(sorted(schema["properties"])))
            instance = {**example, name: instance}

        if passes_compiled(schema, instance, mode=mode):
            assert reference_validator(schema, mode).is_valid(instance), (label, mode, instance)


class TestDraft4Schema:
    def test_nullable_adds_null_to_the_type_and_the_enum(self):
        schema = {"type": "string", "enum": ["a", "b"], "nullable": True}

        assert draft4_schema(schema, mode="request") == {"type": ["string", "null"], "enum": ["a", "b", None], "nullable": True}

    def test_x_nullable_counts_only_when_true(self):
        assert draft4_schema({"type": "string", "x-nullable": True}, mode="request")["type"] == ["string", "null"]
        assert draft4_schema({"type": "string", "x-nullable": "yes"}, mode="request")["type"] == "string"

    @pytest.mark.parametrize(
        "schema, instance",
        [
            ({"type": "object", "properties": {"at": {"type": "string", "format": "date-time", "nullable": True}}}, {"at": None}),
            ({"type": "object", "properties": {"at": {"type": "string", "nullable": True, "enum": ["x"]}}}, {"at": None}),
            ({"nullable": True, "allOf": [{"type": "string"}]}, None),  # the allOf member is not nullable
            ({"type": "array", "items": {"type": "integer", "nullable": True}}, [1, None]),
            ({"type": "array", "items": {"type": "integer"}, "nullable": True}, [1, None]),
            ({"type": "integer", "nullable": False}, None),
        ],
    )
    @pytest.mark.parametrize("mode", MODES)
    def test_nullable_verdicts_match(self, schema, instance, mode):
        assert fresh_validator(schema, mode).is_valid(instance) == reference_validator(schema, mode).is_valid(instance)

    def test_a_write_only_schema_refuses_everything_in_responses_only(self):
        schema = {"type": "object", "properties": {"password": {"type": "string", "writeOnly": True}}}

        assert draft4_schema(schema, mode="response")["properties"]["password"] == {"not": {}}
        assert draft4_schema(schema, mode="request") == schema

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("instance", [{}, {"password": "s3cret"}, {"password": 5}, {"id": "x"}])
    def test_write_only_and_read_only_verdicts_match(self, mode, instance):
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "password": {"type": "string", "writeOnly": True},
                "id": {"type": "string", "readOnly": True},
            },
        }

        assert fresh_validator(schema, mode).is_valid(instance) == reference_validator(schema, mode).is_valid(instance)

    def test_formats_the_python_checker_ignores_are_dropped(self):
        schema = {"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"},
            "url": {"type": "string", "format": "uri"},
            "at": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
        }}

        converted = draft4_schema(schema, mode="request")["properties"]

        assert "format" not in converted["id"] and "format" not in converted["url"]
        assert converted["at"]["format"] == "date-time" and converted["email"]["format"] == "email"

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(
        "fmt, value",
        [("uuid", "not-a-uuid"), ("uri", "not a uri"), ("date-time", "yesterday"), ("date-time", "2026-01-01t00:00:00z"),
         ("email", "a@b"), ("email", "nobody"), ("ipv4", "300.1.1.1"), ("regex", "(")],
    )
    def test_format_verdicts_match(self, mode, fmt, value):
        schema = {"type": "string", "format": fmt}

        assert fresh_validator(schema, mode).is_valid(value) == reference_validator(schema, mode).is_valid(value)

    def test_components_are_left_out_and_nothing_is_mutated(self, spec):
        before = copy.deepcopy(spec["paths"])
        for _, mode, schema in operation_schemas(spec):
            draft4_schema({**schema, "components": spec.get("components", {})}, mode=mode)
            assert "components" not in draft4_schema({**schema, "components": {}}, mode=mode)

        assert spec["paths"] == before

    def test_an_unresolved_ref_is_not_compiled(self):
        schema = {"type": "object", "properties": {"a": {"$ref": "#/components/schemas/A"}}}

        with pytest.raises(validation.UncompilableSchema):
            draft4_schema(schema, mode="request")
        assert compiled_validator(schema, mode="request") is None
        assert passes_compiled(schema, {"a": 1}, mode="request") is False


class TestCompiledOnce:
    def test_each_schema_is_compiled_once_per_mode(self, monkeypatch):
        compiled = []
        real = jsonschema_rs.Draft4Validator

        def counting(*args, **kwargs):
            compiled.append(args[0])
            return real(*args, **kwargs)

        monkeypatch.setattr(jsonschema_rs, "Draft4Validator", counting)
        schema, twin = {"type": "string", "maxLength": 3}, {"type": "string", "maxLength": 3}

        first = compiled_validator(schema, mode="request")
        assert compiled_validator(schema, mode="request") is first
        for _ in range(3):
            passes_compiled(schema, "abc", mode="request")
            passes_compiled(schema, "abc", mode="response")
        compiled_validator(twin, mode="request")

        assert len(compiled) == 3  # schema/request, schema/response, twin/request

    def test_an_instance_jsonschema_rs_cannot_take_falls_back(self):
        schema = {"type": "number"}

        assert passes_compiled(schema, float("nan"), mode="request") is False
        assert reference_validator(schema, "request").is_valid(float("nan"))


def request_validator(schema: dict, *, nullable: bool = False) -> StrictJSONRequestBodyValidator:
    return StrictJSONRequestBodyValidator(schema=schema, required=True, nullable=nullable, encoding="utf-8",
                                          strict_validation=True)


PROVIDER_LIKE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
        "email": {"type": "string", "format": "email", "nullable": True},
        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "enum": ["a", "b"]}},
    },
}
INVALID_BODIES = [
    {},
    {"name": "toolong"},
    {"name": "ABC"},
    {"name": "abc", "email": "nobody"},
    {"name": "abc", "tags": ["a", "c"]},
    {"name": "abc", "tags": ["a", "b", "a"]},
    {"name": "abc", "password": "hunter2"},
    {"name": 5},
    [],
]


class TestErrorsUnchanged:
    @pytest.mark.parametrize("body", INVALID_BODIES)
    def test_a_refused_request_body_gets_the_same_error_as_without_the_fast_path(self, body, monkeypatch):
        with pytest.raises(ApiError) as fast:
            request_validator(PROVIDER_LIKE)._validate(body)
        monkeypatch.setattr(validation, "compiled_validator", lambda schema, *, mode: None)
        with pytest.raises(ApiError) as slow:
            request_validator(PROVIDER_LIKE)._validate(body)

        assert (fast.value.status, fast.value.code, fast.value.message, fast.value.details) == (
            slow.value.status, slow.value.code, slow.value.message, slow.value.details)
        assert fast.value.details["field"]

    def test_an_empty_body_is_still_refused_first(self):
        with pytest.raises(ApiError) as caught:
            request_validator(PROVIDER_LIKE)._validate(None)

        assert (caught.value.status, caught.value.message) == (400, "Request body must not be empty")

    def test_a_valid_request_body_skips_the_python_validation(self, monkeypatch):
        def refuse(self):
            raise AssertionError("pure-Python validation ran for a valid body")

        monkeypatch.setattr(StrictJSONRequestBodyValidator, "_validator", property(refuse))

        assert request_validator(PROVIDER_LIKE)._validate({"name": "abc", "email": None, "tags": ["a"]}) is None

    @pytest.mark.parametrize("body", INVALID_BODIES + [{"name": "abc", "secret": "x"}])
    def test_a_refused_response_body_gets_connexions_error(self, body):
        schema = {**PROVIDER_LIKE, "properties": {**PROVIDER_LIKE["properties"], "secret": {"type": "string", "writeOnly": True}}}
        with pytest.raises(NonConformingResponseBody) as fast:
            CompiledJSONResponseBodyValidator({}, schema=schema, encoding="utf-8")._validate(body)
        with pytest.raises(NonConformingResponseBody) as slow:
            JSONResponseBodyValidator({}, schema=schema, encoding="utf-8")._validate(body)

        assert (fast.value.status, fast.value.detail) == (slow.value.status, slow.value.detail)

    def test_a_valid_response_body_skips_the_python_validation(self, monkeypatch):
        def refuse(self):
            raise AssertionError("pure-Python validation ran for a valid body")

        monkeypatch.setattr(CompiledJSONResponseBodyValidator, "validator", property(refuse))

        assert CompiledJSONResponseBodyValidator({}, schema=PROVIDER_LIKE, encoding="utf-8")._validate({"name": "abc"}) is None


def test_validator_map_puts_the_compiled_validators_on_json_only():
    mapping = validator_map()

    assert mapping["body"]["application/json"] is StrictJSONRequestBodyValidator
    assert mapping["body"]["application/merge-patch+json"] is StrictJSONRequestBodyValidator
    assert mapping["body"]["application/x-www-form-urlencoded"] is FormDataValidator
    assert mapping["response"]["application/json"] is CompiledJSONResponseBodyValidator
    assert mapping["response"]["application/problem+json"] is CompiledJSONResponseBodyValidator
    assert mapping["response"]["text/plain"] is TextResponseBodyValidator
    assert mapping["parameter"] is validation.CachedParameterValidator


class TestCachedParameterValidator:
    LIMIT = {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}}
    REQUIRED = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "date-time"}}

    @pytest.mark.parametrize("param, value", [
        (LIMIT, 50), (LIMIT, 0), (LIMIT, 101), (LIMIT, "x"), (LIMIT, None),
        (REQUIRED, None), (REQUIRED, "2026-11-21T08:00:00Z"), (REQUIRED, "yesterday"),
        ({"name": "q", "in": "query", "nullable": True, "schema": {"type": "string"}}, "null"),
    ])
    def test_same_verdict_as_connexion_with_a_worded_message(self, param, value):
        reference = ParameterValidator.validate_parameter("query", value, param)
        if reference is None:
            assert validation.CachedParameterValidator.validate_parameter("query", value, param) is None
            return
        with pytest.raises(ApiError) as refused:
            validation.CachedParameterValidator.validate_parameter("query", value, param)
        # People's words and structured details instead of jsonschema's dump (issue 11 item 11).
        assert (refused.value.status, refused.value.code) == (400, "VALIDATION_ERROR")
        assert refused.value.message.startswith(f"{param['name']}: ")
        assert "Failed validating" not in refused.value.message and "{" not in refused.value.message
        assert refused.value.details["field"] == param["name"] and refused.value.details["in"] == "query"

    def test_one_validator_per_parameter_definition(self, monkeypatch):
        built = []
        original_init = Draft4Validator.__init__

        def counting(self, *args, **kwargs):
            built.append(1)
            original_init(self, *args, **kwargs)

        param = copy.deepcopy(self.LIMIT)
        monkeypatch.setattr(Draft4Validator, "__init__", counting)
        for value in (1, 2, 50, 3):
            validation.CachedParameterValidator.validate_parameter("query", value, param)
        assert len(built) == 1
        assert param == self.LIMIT  # the definition is not modified


def test_a_refused_query_parameter_still_answers_the_envelope(client, tenant_admin):
    response = client.get("/api/v1/integrations", params={"limit": 0}, headers=tenant_admin.headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "limit" in error["message"] or "minimum" in error["message"]


class TestNulCharacters:
    """PostgreSQL text cannot hold NUL: every database refuses it at the edge, alike (found by fuzzing)."""

    def test_a_nul_in_a_body_string_answers_400_naming_the_field(self, client):
        response = client.post("/api/v1/auth/login", json={"email": "a\u0000b@example.com", "password": "x"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert response.json()["error"]["details"] == {"field": "email", "rule": "noNul"}

    def test_a_nul_in_a_nested_key_is_found(self):
        assert validation.nul_path({"settings": {"a\u0000": 1}}) == "settings.a\u0000"
        assert validation.nul_path({"items": ["ok", "b\u0000"]}) == "items.1"
        assert validation.nul_path(["\u0000"]) == "0"
        assert validation.nul_path({"name": "fine", "n": 1, "none": None}) is None

    def test_an_escaped_backslash_u0000_text_is_not_a_nul(self, client):
        # The six characters \u0000 (an escaped backslash in JSON) are plain text.
        response = client.post("/api/v1/auth/login", content=b'{"email": "\\\\u0000@example.com", "password": "x"}',
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 401

    def test_a_nul_in_a_query_parameter_answers_400(self, client, tenant_admin):
        response = client.get("/api/v1/integrations?search=%00", headers=tenant_admin.headers)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert "NUL" in error["message"]
