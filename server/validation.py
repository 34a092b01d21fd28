"""JSON body validation plugged into Connexion through `validator_map`.

- The request-body validator corrects two behaviours of Connexion's (UTF-8, error messages).
- The request-body and the response validators first ask a compiled `jsonschema_rs` validator
  whether the instance is valid, and run Connexion's pure-Python `jsonschema` validation only
  when it says no. That run raises the very error it always raised, so error envelopes do not
  change; the compiled validator only makes the common, valid case fast (a 50-provider catalog
  page spent most of its time in pure-Python response validation).
"""

from __future__ import annotations

import copy
import json
import logging
import typing as t

import jsonschema_rs
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.utils import is_null, is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    JSONRequestBodyValidator,
    JSONResponseBodyValidator,
    ParameterValidator,
)
from jsonschema import Draft4Validator, ValidationError
from starlette.types import Scope

from server.errors import ApiError

logger = logging.getLogger(__name__)

Mode = t.Literal["request", "response"]

# The format checker Connexion hands its jsonschema validators. Only the formats it knows are
# checked there (with the packages installed: date-time, email, ipv4, ipv6, regex, idn-email);
# any other `format` (uuid, uri, ...) is a no-op, so the compiled schema must ignore it too.
FORMAT_CHECKER = Draft4Validator.FORMAT_CHECKER

# Draft 4 keywords whose value is a map of schemas, a list of schemas, or one schema.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_ONE = frozenset({"not", "additionalProperties", "additionalItems"})
_WRITE_ONLY = ("writeOnly", "x-writeOnly")
_NEVER_VALID = {"not": {}}  # Draft 4 has no `false` schema

# One entry per (schema, mode): Connexion hands the same schema dict to the validator it builds
# for every request of an operation. Bounded, so a caller building schemas per request cannot
# grow it without limit.
_CACHE_LIMIT = 4096
_compiled: dict[tuple[int, str], tuple[dict, t.Any]] = {}


class UncompilableSchema(ValueError):
    """The schema uses something the conversion does not reproduce exactly (an unresolved $ref)."""


class StrictJSONRequestBodyValidator(JSONRequestBodyValidator):
    """Connexion's JSON body validator, with two corrections and a compiled fast path.

    - A body that is not UTF-8 answers 400, not 500 (RFC 8259 section 8.1: JSON exchanged
      between systems must be UTF-8; Connexion's parser lets the UnicodeDecodeError escape).
    - Schema violations answer a message naming the field and the rule, with
      `details.field`, instead of jsonschema's message quoting the submitted value.
    - A body the compiled validator accepts skips the pure-Python validation.
    - An optional requestBody (`required: false`) may be left out; Connexion 3.3 refuses the
      missing body as empty unless the schema is nullable.
    - A string (or key) holding a NUL character answers 400: PostgreSQL text cannot store one
      (it would be a 500 there, and a stored value on SQLite), so both databases refuse alike.
    """

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: Scope) -> t.Any:
        raw = b"".join([message async for message in stream])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestProblem(detail="Request body is not valid UTF-8") from None
        if not text:
            return None
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise BadRequestProblem(detail=f"Request body is not valid JSON: {exc}") from None
        # JSON carries NUL only as the escape \u0000: look for it only then.
        if "u0000" in text and (path := nul_path(body)) is not None:
            raise ApiError(400, "VALIDATION_ERROR", f"'{path}' must not contain NUL characters",
                           details={"field": path})
        return body


    def _validate(self, body: t.Any) -> dict | None:
        if body is None and not self._required:
            return None  # an optional requestBody left out (Connexion 3.3 would refuse it as empty)
        if not self._nullable and body is None:
            raise ApiError(400, "VALIDATION_ERROR", "Request body must not be empty")
        if passes_compiled(self._schema, body, mode="request"):
            return None
        try:
            return self._validator.validate(body)
        except ValidationError as exc:
            field = ".".join(str(part) for part in exc.absolute_path) or "body"
            raise ApiError(400, "VALIDATION_ERROR", describe(exc, field), details={"field": field}) from None


class CompiledJSONResponseBodyValidator(JSONResponseBodyValidator):
    """Connexion's JSON response validator, skipping the pure-Python run for a valid body.

    An invalid body still goes through Connexion's validation, which raises the same
    NonConformingResponseBody (same detail, same log line) as before.
    """

    def _validate(self, body: t.Any) -> None:
        if passes_compiled(self._schema, body, mode="response"):
            return None
        return super()._validate(body)


class CachedParameterValidator(ParameterValidator):
    """Connexion's parameter validator with one jsonschema validator per parameter, not per request.

    Connexion deep-copies each present parameter's definition and builds a new `Draft4Validator`
    for it on every request; validating never changes the schema, so the validator is built once
    per parameter definition (same class, same format checker, so the same verdicts and messages).
    """

    @staticmethod
    def validate_parameter(parameter_type: str, value: t.Any, param: dict, param_name: str | None = None) -> str | None:
        """Return the error message for `value` of parameter `param`, or None when it is valid."""
        if is_nullable(param) and is_null(value):
            return None
        if value is not None and nul_path(value) is not None:
            return f"{parameter_type} parameter '{param.get('name', param_name)}' must not contain NUL characters"
        if value is not None:
            try:
                parameter_validator(param).validate(value)
            except ValidationError as exception:
                return str(exception)
            return None
        if param.get("required"):
            return f"Missing {parameter_type} parameter '{param['name']}'"
        return None


_parameter_validators: dict[int, tuple[dict, Draft4Validator]] = {}


def nul_path(value: t.Any, path: str = "body") -> str | None:
    """Return the dotted path of the first string or key in `value` holding a NUL, or None.

    `value` is parsed JSON or a parameter value (str, list); the root is named `path`.
    """
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = key if path == "body" else f"{path}.{key}"
            if "\x00" in key:
                return inner
            found = nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, str(index) if path == "body" else f"{path}.{index}")
            if found is not None:
                return found
    return None


def parameter_validator(param: dict) -> Draft4Validator:
    """Return the Draft 4 validator of a parameter definition's schema, built on first use.

    Cached by the identity of the definition (held by the cache, so its id is not reused), and
    bounded like the compiled body validators.
    """
    entry = _parameter_validators.get(id(param))
    if entry is not None and entry[0] is param:
        return entry[1]
    validator = Draft4Validator(copy.deepcopy(param.get("schema", param)), format_checker=FORMAT_CHECKER)
    if len(_parameter_validators) >= _CACHE_LIMIT:
        del _parameter_validators[next(iter(_parameter_validators))]
    _parameter_validators[id(param)] = (param, validator)
    return validator


def describe(error: ValidationError, field: str) -> str:
    """Return a message for a schema violation that names the field and rule, never the value.

    jsonschema's own messages quote the offending value, which may be a password or megabytes
    long; the envelope must carry neither.
    """
    keyword, expected = error.validator, error.validator_value
    if keyword == "required":
        return error.message[:200]
    if keyword == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {}))) if isinstance(error.instance, dict) else []
        names = ", ".join(repr(name[:50]) for name in extra[:5])
        return f"'{field}' has unexpected properties: {names}"
    if keyword in ("maxLength", "minLength", "maximum", "minimum", "maxItems", "minItems", "maxProperties",
                   "minProperties", "pattern", "enum", "type", "format"):
        rendered = expected if not isinstance(expected, (list, dict)) else (expected if len(str(expected)) <= 200 else "...")
        return f"'{field}' does not satisfy {keyword} {rendered}"
    return f"'{field}' is invalid ({keyword})"


def passes_compiled(schema: dict, instance: t.Any, *, mode: Mode) -> bool:
    """Return True when the compiled validator of `schema` accepts `instance`.

    False means "not known to be valid": the instance is invalid, the schema could not be
    compiled, or jsonschema_rs could not take the instance (NaN, an integer beyond 64 bits, ...).
    The caller then runs the pure-Python validation, which decides and words the error.
    """
    validator = compiled_validator(schema, mode=mode)
    if validator is None:
        return False
    try:
        return validator.is_valid(instance)
    except Exception:  # noqa: BLE001 - an instance jsonschema_rs cannot take: let jsonschema decide
        return False


def compiled_validator(schema: dict, *, mode: Mode) -> t.Any:
    """Return the jsonschema_rs validator for `schema` in `mode`, compiling it on first use.

    Cached by the identity of the schema dict (the cache holds a reference to it, so the id
    cannot be reused by another dict while the entry lives). Returns None, cached as well, for
    a schema that cannot be compiled exactly: its instances always take the pure-Python path.
    """
    key = (id(schema), mode)
    entry = _compiled.get(key)
    if entry is not None and entry[0] is schema:
        return entry[1]
    try:
        validator = jsonschema_rs.Draft4Validator(
            draft4_schema(schema, mode=mode), formats=_python_formats(), validate_formats=True
        )
    except Exception as exc:  # noqa: BLE001 - UncompilableSchema, or a schema jsonschema_rs refuses
        logger.warning("%s schema not compiled, validated by jsonschema only: %s", mode, exc)
        validator = None
    if len(_compiled) >= _CACHE_LIMIT:
        del _compiled[next(iter(_compiled))]
    _compiled[key] = (schema, validator)
    return validator


def draft4_schema(schema: dict, *, mode: Mode) -> dict:
    """Return a plain Draft 4 copy of an OpenAPI schema that jsonschema_rs judges like Connexion.

    Mirrors Connexion's Draft4RequestValidator / Draft4ResponseValidator with its format checker:
    - `nullable: true` (or `x-nullable: true`) lets None through that schema's own `type` and
      `enum`, and nothing else: "null" is added to its type, None to its enum; subschemas
      (allOf members, properties, items) stay as they are, exactly as in Connexion;
    - in response mode, a schema carrying `writeOnly` / `x-writeOnly` (any value) rejects every
      instance it is applied to; in request mode `readOnly` and `writeOnly` change nothing;
    - a `format` the Python checker does not know is dropped (it is a no-op there).
    The input is never modified; the root's `components` (which Connexion attaches for $ref
    resolution) is left out. Raises UncompilableSchema when a `$ref` is left in the schema.
    """
    root = {key: value for key, value in schema.items() if key != "components"}
    return _convert(root, response=(mode == "response"))


def validator_map() -> dict:
    """Return Connexion's validator map with the strict request, compiled response and cached parameter validators."""
    body = dict(VALIDATOR_MAP["body"])
    body["*/*json"] = StrictJSONRequestBodyValidator
    response = dict(VALIDATOR_MAP["response"])
    response["*/*json"] = CompiledJSONResponseBodyValidator
    return {**VALIDATOR_MAP, "parameter": CachedParameterValidator, "body": MediaTypeDict(body),
            "response": MediaTypeDict(response)}


def _convert(node: t.Any, *, response: bool) -> t.Any:
    if not isinstance(node, dict):
        return copy.deepcopy(node)  # `additionalProperties: false` and the like
    if "$ref" in node:
        raise UncompilableSchema(f"unresolved $ref {node['$ref']!r}")
    if response and any(key in node for key in _WRITE_ONLY):
        return dict(_NEVER_VALID)
    out: dict[str, t.Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _convert(sub, response=response) for name, sub in value.items()}
        elif (key in _SCHEMA_LISTS or key == "items") and isinstance(value, list):
            out[key] = [_convert(sub, response=response) for sub in value]
        elif key in _SCHEMA_ONE or key == "items":
            out[key] = _convert(value, response=response)
        elif key == "dependencies" and isinstance(value, dict):
            out[key] = {name: _convert(sub, response=response) for name, sub in value.items()}
        elif key == "format" and value not in FORMAT_CHECKER.checkers:
            continue
        else:
            out[key] = copy.deepcopy(value)
    # The very test of connexion.json_schema.allow_nullable.
    if node.get("x-nullable") is True or node.get("nullable"):
        kind = out.get("type")
        if isinstance(kind, str) and kind != "null":
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _python_formats() -> dict[str, t.Callable[[str], bool]]:
    # jsonschema_rs checks the formats Connexion's checker knows with that very checker, so
    # "not-a-date" or "a@b" get the same verdict (jsonschema_rs's own email check is stricter).
    return {name: (lambda value, name=name: FORMAT_CHECKER.conforms(value, name)) for name in FORMAT_CHECKER.checkers}
