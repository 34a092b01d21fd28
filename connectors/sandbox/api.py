"""The sandbox's REST API: /health, /me, /accounts, /contacts.

Three ways in, like many real SaaS APIs: an OAuth2 bearer token (validated by Authlib's
ResourceProtector), an `X-API-Key` header, or HTTP Basic. Every authenticated request counts
against the per-credential rate limit. Errors are `{"error": <code>, "message": <text>}`.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator, InvalidTokenError
from flask import Blueprint, Response, g, jsonify, request

from connectors.sandbox.models import SANDBOX_USER, Token
from connectors.sandbox.paging import QueryError, parse_list_query, run_list_query
from connectors.sandbox.state import SandboxState

SEARCH_FIELDS = {"accounts": ("name",), "contacts": ("firstName", "lastName", "email")}
READ_SCOPE = "crm.read"
REALM = 'realm="sandbox"'


@dataclass(frozen=True)
class Principal:
    """Who is calling: how they authenticated, their scopes, and the key their rate limit is counted under."""

    auth_method: str  # "oauth2" | "api_key" | "basic"
    scopes: tuple[str, ...]
    rate_key: str


class ApiError(Exception):
    """An error answer of the REST API: HTTP status, error code, message and extra headers."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}

    def response(self) -> Response:
        """Return the JSON error response."""
        answer = jsonify({"error": self.error, "message": self.message})
        answer.status_code = self.status
        answer.headers.update(self.headers)
        return answer


class SandboxTokenValidator(BearerTokenValidator):
    """Look bearer tokens up in SandboxState and say why one is refused."""

    def __init__(self, state: SandboxState) -> None:
        super().__init__()
        self.state = state

    def authenticate_token(self, token_string: str) -> Token | None:
        """Return the stored token for `token_string`, or None."""
        return self.state.find_access_token(token_string)

    def validate_token(self, token: Token | None, scopes, request) -> None:
        """Raise InvalidTokenError (401) for an unknown, expired or revoked access token."""
        if token is None:
            raise InvalidTokenError("The access token is unknown")
        if token.is_revoked():
            raise InvalidTokenError("The access token was revoked")
        if token.is_expired():
            raise InvalidTokenError("The access token expired")


def api_blueprint(state: SandboxState) -> Blueprint:
    """Return the blueprint of the REST API backed by `state`."""
    blueprint = Blueprint("sandbox_api", __name__)
    protector = ResourceProtector()
    protector.register_token_validator(SandboxTokenValidator(state))

    @blueprint.before_request
    def authenticate_and_count() -> Response | None:
        """Authenticate every route but /health, then apply the rate limit of that credential."""
        if request.endpoint == "sandbox_api.health":
            return None
        injected = _inject_faults(state)
        if injected is not None:
            return injected.response()
        try:
            g.principal = _authenticate(state, protector)
            retry_after = state.check_rate_limit(g.principal.rate_key)
        except ApiError as error:
            return error.response()
        if retry_after is not None:
            limit = state.config.rate_limit_per_minute
            return ApiError(429, "rate_limit_exceeded", f"More than {limit} requests per minute; retry in {retry_after} s",
                            {"Retry-After": str(retry_after)}).response()
        return None

    @blueprint.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return error.response()

    @blueprint.get("/health")
    def health() -> Response:
        """Answer 200 without authentication."""
        return jsonify({"status": "ok"})

    @blueprint.get("/me")
    def me() -> Response:
        """Return the sandbox user and how the caller authenticated."""
        return jsonify({
            "id": SANDBOX_USER.id, "name": SANDBOX_USER.name, "email": SANDBOX_USER.email,
            "authMethod": g.principal.auth_method, "scopes": list(g.principal.scopes),
        })

    @blueprint.get("/accounts")
    def list_accounts() -> Response:
        """Return one page of accounts."""
        return _list(state, "accounts")

    @blueprint.get("/contacts")
    def list_contacts() -> Response:
        """Return one page of contacts."""
        return _list(state, "contacts")

    return blueprint


def _list(state: SandboxState, kind: str) -> Response:
    if READ_SCOPE not in g.principal.scopes:
        raise ApiError(403, "insufficient_scope", f"This operation needs the '{READ_SCOPE}' scope",
                       {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{READ_SCOPE}"'})
    try:
        query = parse_list_query(request.args)
    except QueryError as error:
        raise ApiError(400, "invalid_request", str(error)) from None
    records = state.listable(kind, include_deleted=query.updated_since is not None)
    page = run_list_query(records, query, search_fields=SEARCH_FIELDS[kind])
    return jsonify({"data": page.data, "nextCursor": page.next_cursor})


def _inject_faults(state: SandboxState) -> ApiError | None:
    """Apply the fault plan to this request: sleep the added latency, then return the 5xx/429 to answer, or None.

    An `unauthorized_every` hit expires the presented access token before it is checked, so the
    request fails exactly like a naturally expired token (401 invalid_token) and a refresh cures it.
    """
    with state.faults.counting():
        delay = state.faults.latency_seconds()
        if delay:
            time.sleep(delay)
        fault = state.faults.next_fault()
        if fault is not None and fault.status == 429:
            return ApiError(429, "rate_limit_exceeded", f"Injected rate limit; retry in {fault.retry_after} s",
                            {"Retry-After": str(fault.retry_after)})
        if fault is not None:
            return ApiError(fault.status, "server_error", "Injected server error")
        authorization = request.headers.get("Authorization", "")
        if authorization[:7].lower() == "bearer " and state.faults.expire_this_token():
            state.expire_access_token(authorization[7:].strip())
        return None


def _authenticate(state: SandboxState, protector: ResourceProtector) -> Principal:
    """Return the Principal of the request's credential or raise a 401 ApiError.

    The Authorization header wins over X-API-Key; a present but wrong credential is refused
    rather than falling through to another one.
    """
    config = state.config
    authorization = request.headers.get("Authorization", "")
    scheme = authorization.split(" ", 1)[0].lower()
    if scheme == "bearer":
        try:
            token = protector.acquire_token()
        except OAuth2Error as error:
            challenge = dict(error.get_headers()).get("WWW-Authenticate", f"Bearer {REALM}")
            message = error.get_error_description() or "Malformed bearer credentials"
            raise ApiError(401, "unauthorized", message, {"WWW-Authenticate": challenge}) from None
        return Principal("oauth2", tuple(token.get_scope().split()), f"oauth2:{token.family_id}")
    if scheme == "basic":
        auth = request.authorization
        password = config.basic_users.get(auth.username or "") if auth else None
        if password is None or not hmac.compare_digest((auth.password or "").encode(), password.encode()):
            raise ApiError(401, "unauthorized", "Invalid basic credentials", {"WWW-Authenticate": f"Basic {REALM}"})
        return Principal("basic", tuple(config.scopes), f"basic:{auth.username}")
    if authorization:
        raise ApiError(401, "unauthorized", "Unsupported authorization scheme", {"WWW-Authenticate": f"Bearer {REALM}"})
    api_key = request.headers.get("X-API-Key")
    if api_key is not None:
        if not any(hmac.compare_digest(api_key.encode(), key.encode()) for key in config.api_keys):
            raise ApiError(401, "unauthorized", "Invalid API key", {"WWW-Authenticate": f"Bearer {REALM}"})
        return Principal("api_key", tuple(config.scopes), f"api_key:{api_key}")
    raise ApiError(401, "unauthorized", "Credentials required: a bearer token, an X-API-Key header or HTTP Basic",
                   {"WWW-Authenticate": f"Bearer {REALM}"})
