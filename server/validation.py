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
import math
import re
import typing as t
from urllib.parse import parse_qsl

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
from starlette.datastructures import Headers
from starlette.types import Receive, Scope

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

# How deep a request body may nest (objects and arrays). The deepest schema of the contract
# nests 5 levels; 64 leaves room without letting a body drive recursion (the JSON parser and
# jsonschema both recurse) anywhere near Python's limit.
MAX_DEPTH = 64
# The contract's pattern for free text (openapi/components/common.yaml `Text`): anything but NUL.
TEXT_PATTERN = "^[^\\u0000]*$"
# What a body's strings and keys must not hold, and why (rule name, message):
# NUL: PostgreSQL text cannot store it; an unpaired UTF-16 surrogate (a lone "\ud800" escape)
# is not a Unicode scalar value: it cannot be encoded as UTF-8 for the database or a response.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_REFUSED_TEXT = (
    ("noNul", "must not contain NUL characters", lambda text: "\x00" in text),
    ("noLoneSurrogates", "must not contain unpaired surrogates (\\ud800-\\udfff)",
     lambda text: _LONE_SURROGATE.search(text) is not None),
)

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
    - A body without a media type answers 415 (see `wrap_receive`); what `parse_json_body`
      refuses (NUL, lone surrogates, non-finite numbers, nesting past MAX_DEPTH) answers 400.
    - An optional requestBody (`required: false`) may be left out; Connexion 3.3 refuses the
      missing body as empty unless the schema is nullable.
    """

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        """Refuse a body that comes without a media type (415), then parse and validate it as JSON.

        Connexion would guess `application/json` and hand the handler raw bytes; RFC 9110
        section 8.3 lets a recipient refuse to guess, and a client that sends JSON says so.
        """
        headers = Headers(scope=scope)
        if "content-type" not in headers and int(headers.get("content-length") or 0):
            raise ApiError(415, "VALIDATION_ERROR", "The request body has no Content-Type; send application/json")
        return await super().wrap_receive(receive, scope=scope)

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: Scope) -> t.Any:
        raw = b"".join([message async for message in stream])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestProblem(detail="Request body is not valid UTF-8") from None
        if not text:
            return None
        return parse_json_body(text)

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
            raise schema_error(exc, field) from None


PASSTHROUGH = "passthrough"


def mark_passthrough(scope: t.MutableMapping[str, t.Any]) -> None:
    """Mark the request's answer as another system's, passed through as it is (the proxy).

    Its body is the provider's, not one of the hub's schemas (a provider 404 is not the hub's
    error envelope), so response validation leaves it alone.
    """
    scope.setdefault("state", {})[PASSTHROUGH] = True


class CompiledJSONResponseBodyValidator(JSONResponseBodyValidator):
    """Connexion's JSON response validator, skipping the pure-Python run for a valid body.

    An invalid body still goes through Connexion's validation, which raises the same
    NonConformingResponseBody (same detail, same log line) as before. A passed-through answer
    (`mark_passthrough`) is not validated.
    """

    def _validate(self, body: t.Any) -> None:
        if (self._scope.get("state") or {}).get(PASSTHROUGH):
            return None
        if passes_compiled(self._schema, body, mode="response"):
            return None
        return super()._validate(body)


def _free_form_query(param: dict) -> bool:
    """True for an OpenAPI 3.0 free-form query object (`style: form`, `explode: true`, additionalProperties)."""
    schema = param.get("schema") or {}
    return (param.get("in") == "query" and schema.get("type") == "object" and param.get("style", "form") == "form"
            and param.get("explode", True) and schema.get("additionalProperties") not in (None, False))


class CachedParameterValidator(ParameterValidator):
    """Connexion's parameter validator with one jsonschema validator per parameter, not per request.

    Connexion deep-copies each present parameter's definition and builds a new `Draft4Validator`
    for it on every request; validating never changes the schema, so the validator is built once
    per parameter definition (same class, same format checker, so the same verdicts and messages).
    """

    def validate_query_parameter_list(self, request, security_params=None):
        """Return the undeclared query parameters, none when a free-form object takes them all.

        OpenAPI 3.0 serializes a `style: form, explode: true` object parameter as one query
        parameter per property, so with `additionalProperties` every name is declared (the
        proxy forwards the caller's query this way); Connexion's strict check does not know it.
        """
        free_form = [param for param in self.parameters.get("query", []) if _free_form_query(param)]
        if not free_form:
            return super().validate_query_parameter_list(request, security_params)
        schema = free_form[0]["schema"]
        items = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if len(items) > schema.get("maxProperties", len(items)):
            raise ApiError(400, "VALIDATION_ERROR", f"{free_form[0]['name']}: at most {schema['maxProperties']} query parameters",
                           details={"field": free_form[0]["name"], "rule": "maxProperties", "in": "query"})
        limit = (schema["additionalProperties"] or {}).get("maxLength") if isinstance(schema["additionalProperties"], dict) else None
        for name, value in items:
            if limit is not None and (len(value) > limit or len(name) > limit):
                raise ApiError(400, "VALIDATION_ERROR", f"{name}: must be at most {limit} characters long",
                               details={"field": name, "rule": "maxLength", "in": "query"})
            if "\x00" in name or "\x00" in value:
                raise ApiError(400, "VALIDATION_ERROR", f"{name}: must not contain NUL characters",
                               details={"field": name, "rule": "noNul", "in": "query"})
        return set()

    @staticmethod
    def validate_parameter(parameter_type: str, value: t.Any, param: dict, param_name: str | None = None) -> None:
        """Return None when `value` of parameter `param` is valid, else raise ApiError 400.

        The error names the parameter and the rule for people ("limit: must be at most 100"),
        with `details` {field, rule, in}, instead of Connexion's dump of the jsonschema error.
        """
        if is_nullable(param) and is_null(value):
            return None
        name = param.get("name", param_name)
        if value is not None and nul_path(value) is not None:
            raise ApiError(400, "VALIDATION_ERROR", f"{name}: must not contain NUL characters",
                           details={"field": name, "rule": "noNul", "in": parameter_type})
        if value is not None:
            try:
                parameter_validator(param).validate(value)
            except ValidationError as exception:
                path = ".".join(str(part) for part in exception.absolute_path)
                raise schema_error(exception, f"{name}.{path}" if path else name, **{"in": parameter_type}) from None
            return None
        if param.get("required"):
            raise ApiError(400, "VALIDATION_ERROR", f"{name}: is required",
                           details={"field": name, "rule": "required", "in": parameter_type})
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


def parse_json_body(text: str) -> t.Any:
    """Parse a request body (`text`, decoded UTF-8) as strict JSON, or raise ApiError 400.

    Refused, each with `details` {field, rule}: nesting deeper than MAX_DEPTH (`maxDepth`);
    `NaN`, `Infinity` and numbers overflowing to infinity such as `1e999` (`finiteNumber`: RFC
    8259 section 6 has no such values, Python's parser accepts them); a NUL (`noNul`) or an
    unpaired surrogate (`noLoneSurrogates`) in a string or key. Syntax errors answer Connexion's
    BadRequestProblem.
    """
    non_finite = []

    def flag_constant(name: str) -> float:
        non_finite.append(name)
        return float(name)

    def checked_float(literal: str) -> float:
        number = float(literal)
        if not math.isfinite(number):
            non_finite.append(literal)
        return number

    try:
        body = json.loads(text, parse_constant=flag_constant, parse_float=checked_float)
    except RecursionError:
        raise too_deep() from None
    except ValueError as exc:
        raise BadRequestProblem(detail=f"Request body is not valid JSON: {exc}") from None
    # Each walk is skipped when the text cannot hold what it looks for: NUL and lone surrogates
    # only arrive as \u escapes, and a body with few brackets cannot nest deep.
    if non_finite or "\\u" in text or text.count("[") + text.count("{") > MAX_DEPTH:
        refused = refused_value(body)
        if refused is not None:
            field, rule, message = refused
            if rule == "maxDepth":
                raise too_deep()
            raise ApiError(400, "VALIDATION_ERROR", f"{field}: {message}", details={"field": field, "rule": rule})
    return body


def too_deep() -> ApiError:
    """Return the 400 for a body nested deeper than MAX_DEPTH."""
    return ApiError(400, "VALIDATION_ERROR", f"Request body is nested deeper than {MAX_DEPTH} levels",
                    details={"field": "body", "rule": "maxDepth", "limit": MAX_DEPTH})


def refused_value(body: t.Any) -> tuple[str, str, str] | None:
    """Return (dotted field path, rule, message) of the first value a request body must not hold, or None.

    Walks `body` (parsed JSON) depth first without recursion, so no depth can exhaust the stack.
    Rules: `maxDepth` (deeper than MAX_DEPTH), `finiteNumber`, `noNul`, `noLoneSurrogates`.
    """
    stack: list[tuple[str, int, t.Any]] = [("", 1, body)]
    while stack:
        path, depth, value = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                return "body", "maxDepth", ""
            children = []
            for key, item in value.items():
                inner = f"{path}.{key}" if path else key
                for rule, message, found in _REFUSED_TEXT:
                    if found(key):
                        return inner, rule, message
                children.append((inner, depth + 1, item))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                return "body", "maxDepth", ""
            stack.extend(reversed([(f"{path}.{index}" if path else str(index), depth + 1, item)
                                   for index, item in enumerate(value)]))
        elif isinstance(value, str):
            for rule, message, found in _REFUSED_TEXT:
                if found(value):
                    return path or "body", rule, message
        elif isinstance(value, float) and not math.isfinite(value):
            return path or "body", "finiteNumber", "must be a finite number"
    return None


def normalize_media_type(scope: Scope) -> None:
    """Lower-case the media type of the request's Content-Type header in `scope`, parameters kept.

    RFC 9110 section 8.3.1: type and subtype are case-insensitive. Connexion matches them
    case-sensitively (`Application/JSON` would skip body validation and hand the handler bytes).
    """
    headers = scope.get("headers") or []
    for index, (name, value) in enumerate(headers):
        if name == b"content-type" or name.lower() == b"content-type":
            media, sep, params = value.partition(b";")
            lowered = media.strip().lower()
            if lowered != media or name != b"content-type":
                headers = list(headers)
                headers[index] = (b"content-type", lowered + sep + params)
                scope["headers"] = headers
            return


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


_KINDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
          "object": "an object", "array": "an array", "null": "null"}


def describe(error: ValidationError, field: str) -> str:
    """Return "<field>: <what the rule wants>" for a schema violation, never quoting the value.

    jsonschema's own messages quote the offending value (a password, megabytes of text) and
    `str(error)` dumps the schema; the envelope carries neither. E.g. "name: must be at most
    200 characters". `field` is the dotted path of the value ("body" for the whole body).
    """
    return f"{field}: {_rule_text(error)}"


def schema_error(error: ValidationError, field: str, **where: str) -> ApiError:
    """Return the 400 VALIDATION_ERROR for a schema violation at `field`.

    `details` is {field, rule (the JSON Schema keyword), expected (the rule's bound, for
    scalar bounds)} plus `where` (e.g. in="query" for a parameter). For `required` the field is
    the missing property's path.
    """
    keyword, expected = error.validator, error.validator_value
    if keyword == "required" and isinstance(error.instance, dict) and isinstance(expected, list):
        missing = next((name for name in expected if name not in error.instance), None)
        if missing is not None:
            field = missing if field == "body" else f"{field}.{missing}"
            return ApiError(400, "VALIDATION_ERROR", f"{field}: is required",
                            details={"field": field, "rule": "required", **where})
    details: dict[str, t.Any] = {"field": field, "rule": str(keyword), **where}
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and keyword != "type":
        details["expected"] = expected
    return ApiError(400, "VALIDATION_ERROR", describe(error, field), details=details)


def _rule_text(error: ValidationError) -> str:
    keyword, expected = error.validator, error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    if keyword == "required" and isinstance(error.instance, dict) and isinstance(expected, list):
        missing = [name for name in expected if name not in error.instance]
        return f"requires {', '.join(repr(name) for name in missing[:5])}"
    if keyword == "additionalProperties":
        extra = sorted(set(error.instance) - set(schema.get("properties", {}))) if isinstance(error.instance, dict) else []
        return "has unexpected properties: " + ", ".join(repr(name[:50]) for name in extra[:5])
    texts = {
        "maxLength": lambda n: f"must be at most {n} characters",
        "minLength": lambda n: "must not be empty" if n == 1 else f"must be at least {n} characters",
        "maxItems": lambda n: f"must have at most {n} items",
        "minItems": lambda n: "must not be empty" if n == 1 else f"must have at least {n} items",
        "maxProperties": lambda n: f"must have at most {n} properties",
        "minProperties": lambda n: f"must have at least {n} properties",
        "maximum": lambda n: f"must be less than {n}" if schema.get("exclusiveMaximum") else f"must be at most {n}",
        "minimum": lambda n: f"must be greater than {n}" if schema.get("exclusiveMinimum") else f"must be at least {n}",
        "multipleOf": lambda n: f"must be a multiple of {n}",
        "uniqueItems": lambda n: "must not repeat items",
        "format": lambda n: f"must be a valid {n}",
        "pattern": lambda n: ("must not contain NUL characters" if n == TEXT_PATTERN
                              else f"must match the pattern {n}" if len(str(n)) <= 120 else "does not match the expected pattern"),
        "enum": lambda n: ("must be one of: " + ", ".join(str(v) for v in n[:20]) + (", ..." if len(n) > 20 else "")),
        "type": lambda n: "must be " + " or ".join(_KINDS.get(kind, str(kind)) for kind in ([n] if isinstance(n, str) else n)),
        "anyOf": lambda n: "does not match any of the allowed shapes",
        "oneOf": lambda n: "must match exactly one of the allowed shapes",
        "allOf": lambda n: "does not match every required shape",
        "not": lambda n: "is not allowed here",
    }
    text = texts.get(keyword)
    return text(expected) if text else f"is invalid ({keyword})"


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
