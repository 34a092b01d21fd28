"""Request-body validation tweaks plugged into Connexion through `validator_map`."""

from __future__ import annotations

import json
import typing as t

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator
from starlette.types import Scope


class StrictJSONRequestBodyValidator(JSONRequestBodyValidator):
    """Connexion's JSON body validator, answering 400 (not 500) to a body that is not UTF-8.

    RFC 8259 section 8.1: JSON exchanged between systems must be UTF-8; Connexion's own parser
    lets the UnicodeDecodeError escape as a server error.
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


def validator_map() -> dict:
    """Return Connexion's validator map with the strict JSON body validator in place."""
    body = dict(VALIDATOR_MAP["body"])
    body["*/*json"] = StrictJSONRequestBodyValidator
    return {**VALIDATOR_MAP, "body": MediaTypeDict(body)}
