"""The contract's house rules (DESIGN.md "API conventions"), checked by walking the spec."""

from __future__ import annotations

import importlib
import re

import pytest

from server.app import API_SPEC, HTTP_METHODS, ROOT_SPEC, load_spec

SPECS = {"api": load_spec(API_SPEC), "root": load_spec(ROOT_SPEC)}


def operations():
    for name, spec in SPECS.items():
        for path, item in spec["paths"].items():
            for method in HTTP_METHODS:
                if method in item:
                    yield pytest.param(spec, path, method, item[method], id=f"{name}:{method.upper()} {path}")


def request_schemas(schema, seen=None):
    """Yield every object schema reachable from a request schema."""
    seen = seen if seen is not None else set()
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen.add(id(schema))
    if schema.get("type") == "object" and "properties" in schema:
        yield schema
    for key in ("properties",):
        for child in (schema.get(key) or {}).values():
            yield from request_schemas(child, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from request_schemas(schema[key], seen)
    for key in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(key) or []:
            yield from request_schemas(child, seen)


def leaves(schema, seen=None):
    """Yield every (name, schema) property pair reachable from `schema`."""
    seen = seen if seen is not None else set()
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen.add(id(schema))
    for name, child in (schema.get("properties") or {}).items():
        yield name, child
        yield from leaves(child, seen)
    if isinstance(schema.get("items"), dict):
        yield "items", schema["items"]
        yield from leaves(schema["items"], seen)
    for key in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(key) or []:
            yield from leaves(child, seen)


@pytest.mark.parametrize("spec,path,method,op", list(operations()))
class TestOperationConventions:
    def test_operation_id_is_snake_case_and_a_handler_function(self, spec, path, method, op):
        assert re.fullmatch(r"[a-z][a-z0-9_]*", op["operationId"])
        module = importlib.import_module(f"handlers.{op['tags'][0].replace('-', '_')}")
        assert callable(getattr(module, op["operationId"], None)), f"no handler {module.__name__}.{op['operationId']}"

    def test_summary_and_one_tag(self, spec, path, method, op):
        assert op.get("summary") and len(op["tags"]) == 1

    def test_declares_its_security_requirement(self, spec, path, method, op):
        assert "security" in op, "every operation states its security, `[]` for public ones"
        if op["security"]:
            assert op.get("x-required-scopes"), "an authenticated operation must declare x-required-scopes"
            granted = set().union(*spec["components"]["securitySchemes"]["bearerAuth"]["x-role-scopes"].values())
            assert set(op["x-required-scopes"]) <= granted, "a required scope no role grants"
            assert {"401", "403"} <= set(op["responses"])
        else:
            assert "x-required-scopes" not in op

    def test_errors_use_the_one_envelope(self, spec, path, method, op):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and not (path == "/health" and status == "503"):
                schema = response["content"]["application/json"]["schema"]
                assert schema["required"] == ["error"] and "requestId" in schema["properties"]["error"]["properties"]
            assert "X-Request-ID" in response.get("headers", {}), f"{status} does not document X-Request-ID"
        assert "400" in op["responses"] and "500" in op["responses"]

    def test_request_bodies_are_closed_and_bounded(self, spec, path, method, op):
        body = op.get("requestBody")
        if not body:
            return
        assert {"413", "415"} <= set(op["responses"])
        schema = body["content"]["application/json"]["schema"]
        for obj in request_schemas(schema):
            assert obj.get("additionalProperties") is False or isinstance(obj.get("additionalProperties"), dict)
        for name, prop in leaves(schema):
            if prop.get("type") == "string" and "enum" not in prop:
                assert "maxLength" in prop, f"{name} has no maxLength"
            if prop.get("type") == "array":
                assert "maxItems" in prop, f"{name} has no maxItems"
            if prop.get("type") == "integer":
                assert "maximum" in prop or "minimum" in prop, f"{name} is unbounded"
            if re.search(r"(password|secret|api_?key|token)$", name, re.I) and prop.get("type") == "string":
                assert prop.get("writeOnly") or prop.get("readOnly"), f"{name} must be writeOnly"

    def test_parameters_are_bounded(self, spec, path, method, op):
        for param in op.get("parameters", []):
            schema = param["schema"]
            if schema.get("type") == "string" and "enum" not in schema:
                assert "maxLength" in schema, param["name"]
            if schema.get("type") == "integer":
                assert "maximum" in schema, param["name"]

    def test_has_an_example(self, spec, path, method, op):
        def has_example(media):
            return "example" in media or "examples" in media or "example" in media.get("schema", {})

        success = [r for s, r in op["responses"].items() if s.startswith("2") and "content" in r]
        bodies = [op["requestBody"]["content"]["application/json"]] if "requestBody" in op else []
        assert all(has_example(media) for r in success for media in r["content"].values()), "a 2xx body without example"
        assert all(has_example(media) for media in bodies), "a request body without example"


def test_operation_ids_are_unique():
    ids = [op.values[3]["operationId"] for op in operations()]
    assert len(ids) == len(set(ids))


def test_base_path_and_version():
    assert SPECS["api"]["openapi"] == "3.0.3" and SPECS["api"]["servers"] == [{"url": "/api/v1", "description": "This deployment."}]
    assert re.fullmatch(r"\d+\.\d+\.\d+", SPECS["api"]["info"]["version"])


@pytest.mark.parametrize("spec,path,method,op", list(operations()))
def test_idempotent_operations_document_their_refusals(spec, path, method, op):
    if any(p.get("in") == "header" and p.get("name") == "Idempotency-Key" for p in op.get("parameters", [])):
        assert {"409", "422"} <= set(op["responses"]), "Idempotency-Key answers 409 (in progress) and 422 (mismatch)"


@pytest.mark.parametrize("spec,path,method,op", list(operations()))
def test_every_operation_declares_a_known_rate_limit_class(spec, path, method, op):
    assert op.get("x-rate-limit-class") in spec.get("x-rate-limit-classes", {})
    if op.get("security"):
        assert "429" in op["responses"]
