"""Assertions shared by the API tests: the one error envelope, checked whole."""

from __future__ import annotations

import time
from collections.abc import Callable


class _AnyText:
    """Equals any non-empty string (for messages written by Connexion or the HTTP stack)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other.strip())

    def __repr__(self) -> str:
        return "<any non-empty text>"


class _AnyDetails:
    """Equals any dict (for schema-validation details whose exact content is not the point)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict)

    def __repr__(self) -> str:
        return "<any details>"


ANY_TEXT, ANY_DETAILS = _AnyText(), _AnyDetails()


def assert_error(response, status: int, code: str, *, message=ANY_TEXT, details=ANY_DETAILS) -> None:
    """Assert the status and the whole error envelope; its requestId must equal the X-Request-ID header.

    `details=None` asserts there are none; the default accepts any or none.
    """
    assert response.status_code == status, response.text
    body = response.json()
    error = {"code": code, "message": message, "requestId": response.headers["X-Request-ID"]}
    if details is not None and (details is not ANY_DETAILS or "details" in body.get("error", {})):
        error["details"] = details
    assert body == {"error": error}


ANY = object()  # `details` may be present (any object) or absent


def assert_envelope(response, status: int, code: str, details: dict | None | object = None) -> dict:
    """Assert the whole error envelope: status, code, a message, the request id, and `details`.

    Unlike `assert_error`, `details` defaults to "none present" and the error is returned.

    `details=None` means the envelope carries no details; `details=ANY` accepts any or none.
    """
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("message"), str) and error["message"], error
    assert response.headers["x-request-id"]
    expected = {"code": code, "message": error["message"], "requestId": response.headers["x-request-id"]}
    if details is ANY:
        if "details" in error:
            assert isinstance(error["details"], dict), error
            expected["details"] = error["details"]
    elif details is not None:
        expected["details"] = details
    assert error == expected
    return error


def wait_for(condition: Callable[[], object], *, what: str, timeout: float = 15.0) -> object:
    """Poll `condition` every 20 ms until it returns something truthy; return that, or fail naming `what`.

    For work a background thread or process does (workers, served hubs): the test waits for the
    state it asserts, never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
