"""The JSON serialisation of every answer the hub shapes through Connexion (the app's `jsonifier`).

Performance issue: serialising a catalog page with the standard library took about a sixth of
the request's CPU; orjson writes the same JSON values several times faster. The text differs
only in form: compact (no space after `,` and `:`) and non-ASCII characters as UTF-8 rather than
`\\uXXXX` escapes; both are the same JSON (RFC 8259) to any parser.
"""

from __future__ import annotations

import typing as t

import orjson
from connexion.jsonifier import JSONEncoder, Jsonifier

# Datetimes go through Connexion's default (ISO 8601, `Z` added to a naive one), not orjson's own
# format, so an answer holding one reads exactly as it did.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_connexion_default = JSONEncoder().default


class FastJsonifier(Jsonifier):
    """Connexion's `Jsonifier`, serialising with orjson and falling back to Connexion's own way.

    `dumps(data)` returns the JSON text and a newline, as Connexion's does. Values orjson
    refuses (integers beyond 64 bits, dict keys that are not strings, any type neither it nor
    Connexion's default knows) and any call with extra `json.dumps` arguments are serialised by
    `json.dumps` with Connexion's encoder, which answers or raises exactly as before (TypeError
    for an unknown type).
    """

    def dumps(self, data: t.Any, **kwargs: t.Any) -> str:
        """Serialise `data` to JSON text ending in a newline."""
        if not kwargs:
            try:
                return orjson.dumps(data, default=_connexion_default, option=_OPTIONS).decode() + "\n"
            except orjson.JSONEncodeError:
                pass
        return super().dumps(data, **kwargs)
