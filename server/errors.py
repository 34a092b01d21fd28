"""The one error envelope, and the handlers that put every error into it.

`{"error": {"code", "message", "details"?, "requestId"}}` for every 4xx/5xx, whether a handler,
a domain rule, Connexion (validation, security, routing) or Starlette raised it. No stack trace
ever leaves the server: unexpected exceptions are logged with the request id and answered as
INTERNAL_ERROR.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException

from persistence.errors import DomainError
from server.request_context import current_request_id

logger = logging.getLogger("hub.errors")

DATABASE_RETRY_AFTER = 5  # seconds a client should wait when the database is down
_CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "INVALID_TOKEN",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "VALIDATION_ERROR",
    415: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(ProblemException):
    """An error the hub answers on purpose, with its envelope `code` (e.g. TENANT_SUSPENDED).

    A ProblemException so that Connexion's security layer, which picks the most specific of
    several failed schemes by `status`, passes it through unchanged.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(status=status, title=code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after


def envelope(code: str, message: str, details: dict[str, Any] | None = None, **extra: Any) -> dict:
    """Return the error envelope body with the current request id."""
    # Cap the message: some come from libraries that quote client input.
    error: dict[str, Any] = {"code": code, "message": message if len(message) <= 500 else message[:497] + "..."}
    if details:
        error["details"] = details
    error.update(extra)
    error["requestId"] = current_request_id()
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    retry_after: int | None = None,
) -> ConnexionResponse:
    """Return a JSON response carrying the error envelope (with `retryAfter` when given)."""
    extra = {"retryAfter": retry_after} if retry_after is not None else {}
    return ConnexionResponse(
        status_code=status,
        mimetype="application/json",
        content_type="application/json",
        body=json.dumps(envelope(code, message, details, **extra)),
        headers=headers or {},
    )


async def handle_api_error(_request: ConnexionRequest, exc: ApiError) -> ConnexionResponse:
    """Answer an ApiError with its own status, code and message."""
    return error_response(exc.status, exc.code, exc.message, exc.details, dict(exc.headers or {}), exc.retry_after)


async def handle_domain_error(_request: ConnexionRequest, exc: DomainError) -> ConnexionResponse:
    """Answer a domain error (NotFound, Conflict, ...) raised below the HTTP edge."""
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def handle_problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    """Answer a problem raised by Connexion itself (validation, security, content type)."""
    status = exc.status or 500
    code = _CODE_BY_STATUS.get(status, "INTERNAL_ERROR")
    message = str(exc.detail or exc.title or "Request failed")
    if status == 401 and message.startswith("No authorization token"):
        code, message = "NO_TOKEN", "Authorization header missing or not a Bearer token"
        if request.headers.get("authorization", "").strip():
            message = "Authorization header is not a Bearer token"
    if status >= 500:
        logger.error("problem %s: %s", status, message)
        message = "An unexpected error occurred"
    return error_response(status, code, message, headers=dict(exc.headers or {}))


def http_exception_handler(allowed_methods: Callable[[str], tuple[str, ...]]) -> Callable[..., Any]:
    """Build the handler of Starlette HTTPExceptions (unknown path 404, wrong method 405, ...).

    `allowed_methods(path)` names every method the contract defines for a path: Starlette's 405
    names only the first route's methods, so the `Allow` header is taken from the contract.
    """

    async def handle_http_exception(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
        status = exc.status_code
        code = _CODE_BY_STATUS.get(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
        message = exc.detail if isinstance(exc.detail, str) and status < 500 else "Request failed"
        headers = dict(exc.headers or {})
        if status == 404:
            message = "No such resource"
        if status == 405 and (allowed := allowed_methods(request.url.path)):
            headers["Allow"] = ", ".join(allowed)
        return error_response(status, code, message, headers=headers)

    return handle_http_exception


async def handle_integrity_error(_request: ConnexionRequest, exc: IntegrityError) -> ConnexionResponse:
    """Answer a unique/foreign-key violation that a pre-check missed (a concurrent write) with 409."""
    logger.info("integrity error (request %s): %s", current_request_id(), type(exc.orig).__name__)
    return error_response(409, "CONFLICT", "The change conflicts with existing data")


async def handle_database_unavailable(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Answer 503 SERVICE_UNAVAILABLE (Retry-After 5) when the database is down or drops the connection.

    The request's transaction was rolled back, so nothing of the change was written.
    """
    logger.error("database unavailable (request %s): %s", current_request_id(), type(exc).__name__)
    return error_response(503, "SERVICE_UNAVAILABLE", "The database is unavailable; retry shortly",
                          headers={"Retry-After": str(DATABASE_RETRY_AFTER)}, retry_after=DATABASE_RETRY_AFTER)


async def handle_unexpected(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Log an unexpected exception with its stack trace and answer 500 INTERNAL_ERROR."""
    logger.error("unhandled error (request %s)", current_request_id(), exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "An unexpected error occurred")


def register(app: Any, *, allowed_methods: Callable[[str], tuple[str, ...]]) -> None:
    """Register every error handler on the Connexion app, most specific first.

    `allowed_methods(path)` gives the methods the contract defines for a path (the 405 `Allow`).
    """
    app.add_error_handler(ApiError, handle_api_error)
    app.add_error_handler(DomainError, handle_domain_error)
    app.add_error_handler(ProblemException, handle_problem)
    app.add_error_handler(HTTPException, http_exception_handler(allowed_methods))
    app.add_error_handler(IntegrityError, handle_integrity_error)
    for unavailable in (OperationalError, InterfaceError, DisconnectionError, SQLAlchemyTimeoutError):
        app.add_error_handler(unavailable, handle_database_unavailable)
    app.add_error_handler(Exception, handle_unexpected)
