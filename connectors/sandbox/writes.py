"""Write routes of the sandbox REST API: read one, create, update and soft-delete accounts and contacts.

`GET /<kind>/<id>`, `POST /<kind>` (201 + Location), `PATCH /<kind>/<id>` (200) and
`DELETE /<kind>/<id>` (204) for kind accounts | contacts. Writes need the `crm.write` scope,
bump the record's `updatedAt` and notify registered receivers (connectors.sandbox.notify). A
deleted record answers 404 here but stays visible, flagged `deleted`, to changed-since lists.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from connectors.sandbox.api import READ_SCOPE, ApiError
from connectors.sandbox.state import SandboxState

WRITE_SCOPE = "crm.write"
KINDS = ("accounts", "contacts")
# Writable fields per kind -> maximum length; the first one listed is required on create.
WRITABLE = {
    "accounts": {"name": 200, "industry": 50, "website": 500},
    "contacts": {"accountId": 50, "firstName": 100, "lastName": 100, "email": 320},
}


def register_write_routes(blueprint: Blueprint, state: SandboxState) -> None:
    """Add the single-record and write routes to the API blueprint (which authenticates them)."""

    @blueprint.get("/<any(accounts, contacts):kind>/<record_id>")
    def get_record(kind: str, record_id: str) -> Response:
        """Return one live record, or 404."""
        _require(READ_SCOPE)
        return jsonify(_existing(state.get_record(kind, record_id), kind, record_id))

    @blueprint.post("/<any(accounts, contacts):kind>")
    def create_record(kind: str) -> tuple[Response, int, dict]:
        """Create a record from the JSON body; answer 201 with it and its Location."""
        _require(WRITE_SCOPE)
        fields = _fields(state, kind, creating=True)
        record = state.create_record(kind, fields)
        return jsonify(record), 201, {"Location": f"/{kind}/{record['id']}"}

    @blueprint.patch("/<any(accounts, contacts):kind>/<record_id>")
    def update_record(kind: str, record_id: str) -> Response:
        """Change some fields of a live record; answer 200 with it."""
        _require(WRITE_SCOPE)
        fields = _fields(state, kind, creating=False)
        return jsonify(_existing(state.update_record(kind, record_id, fields), kind, record_id))

    @blueprint.delete("/<any(accounts, contacts):kind>/<record_id>")
    def delete_record(kind: str, record_id: str) -> tuple[str, int]:
        """Soft-delete a live record; answer 204."""
        _require(WRITE_SCOPE)
        _existing(state.delete_record(kind, record_id), kind, record_id)
        return "", 204


def _require(scope: str) -> None:
    if scope not in g.principal.scopes:
        raise ApiError(403, "insufficient_scope", f"This operation needs the '{scope}' scope",
                       {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})


def _existing(record: dict | None, kind: str, record_id: str) -> dict:
    if record is None:
        raise ApiError(404, "not_found", f"No {kind.removesuffix('s')} {record_id}")
    return record


def _fields(state: SandboxState, kind: str, *, creating: bool) -> dict:
    """Return the validated writable fields of the JSON body; raise a 400 ApiError naming the bad one."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object")
    allowed = WRITABLE[kind]
    for name, value in body.items():
        if name not in allowed:
            raise ApiError(400, "invalid_request", f"{name} is not a writable field; writable: {', '.join(allowed)}")
        if not isinstance(value, str) or not 0 < len(value.strip()) <= allowed[name]:
            raise ApiError(400, "invalid_request", f"{name} must be a non-empty string of at most {allowed[name]} characters")
    required = next(iter(allowed))
    if creating and required not in body:
        raise ApiError(400, "invalid_request", f"{required} is required")
    if not creating and not body:
        raise ApiError(400, "invalid_request", "Give at least one field to change")
    if "accountId" in body and state.get_record("accounts", body["accountId"]) is None:
        raise ApiError(400, "invalid_request", f"accountId {body['accountId']} is not an existing account")
    return body
