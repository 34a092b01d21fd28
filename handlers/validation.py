"""Request-body validation tweaks plugged into Connexion through `validator_map`."""

from __future__ import annotations

import json
import typing as t

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator
from jsonschema import ValidationError
from starlette.types import Scope

from handlers.errors import ApiError


class StrictJSONRequestBodyValidator(JSONRequestBodyValidator):
    """Connexion's JSON body validator, with two corrections.

    - A body that is not UTF-8 answers 400, not 500 (RFC 8259 section 8.1: JSON exchanged
      between systems must be UTF-8; Connexion's parser lets the UnicodeDecodeError escape).
    - Schema violations answer a message naming the field and the rule, with
      `details.field`, instead of jsonschema's message quoting the submitted value.
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
            return json.loads(text)
        except ValueError as exc:
            raise BadRequestProblem(detail=f"Request body is not valid JSON: {exc}") from None


    def _validate(self, body: t.Any) -> t.Optional[dict]:
        if not self._nullable and body is None:
            raise ApiError(400, "VALIDATION_ERROR", "Request body must not be empty")
        try:
            return self._validator.validate(body)
        except ValidationError as exc:
            field = ".".join(str(part) for part in exc.absolute_path) or "body"
            raise ApiError(400, "VALIDATION_ERROR", describe(exc, field), details={"field": field}) from None


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


def validator_map() -> dict:
    """Return Connexion's validator map with the strict JSON body validator in place."""
    body = dict(VALIDATOR_MAP["body"])
    body["*/*json"] = StrictJSONRequestBodyValidator
    return {**VALIDATOR_MAP, "body": MediaTypeDict(body)}
