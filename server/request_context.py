"""The request id of the request being served, readable anywhere in its task or thread."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:\-]{8,100}$")


def mint_request_id() -> str:
    """Return a new request id: `req_` and 26 random base32-ish characters."""
    return "req_" + secrets.token_hex(13)


def adopt_request_id(incoming: str | None) -> str:
    """Return `incoming` when it is a well-formed id (8-100 of `A-Za-z0-9._:-`), else a new one."""
    return incoming if incoming and _WELL_FORMED.match(incoming) else mint_request_id()


def set_request_id(request_id: str) -> None:
    """Bind `request_id` to the current context (called once per request by the middleware)."""
    _request_id.set(request_id)


def current_request_id() -> str:
    """Return the current request's id; outside a request, a fresh one (never empty)."""
    return _request_id.get() or mint_request_id()
