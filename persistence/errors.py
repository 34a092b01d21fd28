"""Domain errors raised by persistence functions; `server/errors.py` maps them to the envelope."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of the errors a query or rule can raise; `code` and `status` name the envelope."""

    code = "INTERNAL_ERROR"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    """The resource does not exist for this caller (also when it belongs to another tenant)."""

    code = "NOT_FOUND"
    status = 404

    def __init__(self, resource: str, resource_id: object, *, code: str | None = None) -> None:
        super().__init__(f"{resource.capitalize()} {resource_id} not found")
        if code:
            self.code = code


class Conflict(DomainError):
    """The change clashes with existing state (a duplicate key, the last admin...)."""

    code = "CONFLICT"
    status = 409


class PermissionDenied(DomainError):
    """The caller is authenticated but a business rule forbids the action."""

    code = "PERMISSION_DENIED"
    status = 403


class InvalidInput(DomainError):
    """The request is well-formed per the schema but breaks a rule the schema cannot express."""

    code = "VALIDATION_ERROR"
    status = 400
