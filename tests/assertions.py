"""Assertions shared by the API tests: the one error envelope, checked whole."""

from __future__ import annotations


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
