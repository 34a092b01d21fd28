"""The benchmark's floor: a bare Starlette app doing the hub's work for each benchmarked operation.

Same database (persistence.db), same JWT verification (server.tokens.decode with the
TokenConfig the hub builds from the same settings) and the same per-request user/tenant
lookup the hub's `authenticate_bearer` does, the same scope rule, the same queries
(persistence functions), the same request validation (jsonschema against the operation's
schemas in the resolved spec), the same change record (persistence.events.record_change: the
audit entry, the event and its outbox rows, as the hub's handler writes them) and the same JSON
out (handlers.views). Nothing else: no
Connexion, no middleware stack, one threadpool hop per request for the blocking database work.

`/api/v1/auth/me-limited` is `/api/v1/auth/me` plus the hub's rate-limit checks (plan window
and endpoint class) through the hub's own `server.ratelimit.RateLimits.check`, in memory.

Serve with `uvicorn bench_floor:serving_floor --factory --app-dir scripts`; it reads the hub's
settings from the environment (DATABASE_URL, JWT_SECRET, HUB_RATE_LIMIT_SCALE, ...).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from jsonschema import Draft4Validator
from limits import RateLimitItemPerMinute
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from handlers import views
from persistence import accounts, db, events, integrations, providers, tenants, users
from persistence.audit import Actor
from persistence.db import transaction
from persistence.errors import DomainError
from server.app import API_SPEC, load_spec, role_scopes
from server.errors import ApiError
from server.ratelimit import RateLimits
from server.settings import Settings, load_settings
from server.tokens import TokenConfig, decode

PLAN_WINDOW_MINUTES = 15
INTEGRATION_FIELDS = {"name": "name", "description": "description", "icon": "icon", "settings": "settings",
                      "allowedShardTypes": "allowed_shard_types", "searchEnabled": "search_enabled",
                      "searchableEntities": "searchable_entities", "userScoped": "user_scoped"}


class Refused(Exception):
    """A request answered with an error envelope (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = operation
    return found


def _query_validator(operation: dict[str, Any]) -> tuple[Draft4Validator, set[str]]:
    params = [p for p in operation.get("parameters", []) if p["in"] == "query"]
    schema = {"type": "object", "properties": {p["name"]: p["schema"] for p in params}, "additionalProperties": False}
    integers = {p["name"] for p in params if p["schema"].get("type") == "integer"}
    return Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER), integers


class Floor:
    """The floor's state: token config, role scopes, validators and the rate limiter."""

    def __init__(self, settings: Settings) -> None:
        spec = load_spec(API_SPEC)
        self.tokens = TokenConfig(secret=settings.signing_secret(), algorithm=settings.jwt_algorithm,
                                  issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                  access_ttl=settings.access_token_ttl_seconds,
                                  refresh_ttl=settings.refresh_token_ttl_seconds)
        self.role_scopes = {role: set(scopes) for role, scopes in role_scopes(spec).items()}
        ops = _operations(spec)
        self.required = {op_id: set(op.get("x-required-scopes", [])) for op_id, op in ops.items()}
        self.catalog_query = _query_validator(ops["list_catalog"])
        body = ops["create_tenant_integration"]["requestBody"]["content"]["application/json"]["schema"]
        self.create_body = Draft4Validator(body, format_checker=Draft4Validator.FORMAT_CHECKER)
        scale = settings.rate_limit_scale
        self.plan_limits = {plan: RateLimitItemPerMinute(max(1, int(n * scale)), PLAN_WINDOW_MINUTES)
                            for plan, n in spec["x-plan-limits"].items()}
        self.account_limit = RateLimitItemPerMinute(max(1, int(spec["x-rate-limit-classes"]["account"] * scale)))
        self.rate_limits = RateLimits()  # in memory, as the hub without REDIS_URL; items above already scaled

    def claims(self, request: Request) -> dict[str, Any]:
        """Verify the bearer token (CPU only, on the event loop) and return its claims."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, "NO_TOKEN", "No bearer token")
        return decode(self.tokens, token, typ="access")

    def caller(self, claims: dict[str, Any], operation_id: str) -> accounts.SignIn:
        """Look up the user and tenant (as authenticate_bearer does) and check the operation's scopes."""
        with transaction() as session:
            standing = accounts.check_session(session, user_id=uuid.UUID(claims["sub"]),
                                              family_id=uuid.UUID(claims["fam"]))
        if standing.failure:
            raise Refused(403 if standing.failure.startswith("tenant") else 401, standing.failure.upper(), "Refused")
        required = self.required[operation_id]
        if not required or not required <= self.role_scopes.get(standing.user.role, set()):
            raise Refused(403, "PERMISSION_DENIED", "Missing scope")
        return standing

    def rate_limit(self, standing: accounts.SignIn) -> dict[str, str]:
        """Hit the plan and `account` class windows of the caller's tenant as the hub does; 429 past either."""
        caller = f"tenant:{standing.user.tenant_id}"
        headers, retry_after, _ = self.rate_limits.check([
            ("plan", self.plan_limits[standing.tenant.plan], ("plan", caller)),
            ("account", self.account_limit, ("account", caller))])
        if retry_after is not None:
            raise Refused(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
        return headers


def _envelope(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def build(floor: Floor) -> Starlette:
    """Return the floor's Starlette app over `floor`'s state."""

    async def list_catalog(request: Request) -> JSONResponse:
        claims = floor.claims(request)
        validator, integers = floor.catalog_query
        query = {k: (int(v) if k in integers and v.lstrip("-").isdigit() else v) for k, v in request.query_params.items()}
        if not validator.is_valid(query):
            raise Refused(400, "VALIDATION_ERROR", "Invalid query")

        def work() -> dict:
            floor.caller(claims, "list_catalog")
            with transaction() as session:
                page = providers.list_page(session, limit=query.get("limit", 50), offset=query.get("offset", 0),
                                           category=query.get("category"), status="active", audience="tenant",
                                           search=query.get("search"), sort_by=query.get("sortBy", "name"),
                                           sort_order=query.get("sortOrder", "asc"))
                return views.page("providers", page, views.provider)

        return JSONResponse(await run_in_threadpool(work))

    def me_body(standing: accounts.SignIn) -> dict:
        with transaction() as session:
            user = users.find_by_id(session, user_id=standing.user.id)
            tenant = tenants.get(session, tenant_id=user.tenant_id) if user.tenant_id else None
            return views.me(user, tenant, sorted(floor.role_scopes.get(user.role, ())))

    async def get_me(request: Request) -> JSONResponse:
        claims = floor.claims(request)
        return JSONResponse(await run_in_threadpool(lambda: me_body(floor.caller(claims, "get_me"))))

    async def get_me_limited(request: Request) -> JSONResponse:
        claims = floor.claims(request)

        def work() -> tuple[dict, dict]:
            standing = floor.caller(claims, "get_me")
            headers = floor.rate_limit(standing)  # the counters take a lock: safe in a worker thread
            return me_body(standing), headers

        body, headers = await run_in_threadpool(work)
        return JSONResponse(body, headers=headers)

    async def create_integration(request: Request) -> JSONResponse:
        claims = floor.claims(request)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Refused(415, "VALIDATION_ERROR", "Content-Type must be application/json")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise Refused(400, "VALIDATION_ERROR", "Request body is not valid JSON") from None
        if not floor.create_body.is_valid(body):
            raise Refused(400, "VALIDATION_ERROR", "Invalid body")
        client = request.client.host if request.client else None

        def work() -> tuple[dict, str]:
            standing = floor.caller(claims, "create_tenant_integration")
            user = standing.user
            actor = Actor(user_id=user.id, role=user.role, tenant_id=user.tenant_id, ip=client)
            with transaction() as session:
                provider = providers.get_listed(session, provider_id=uuid.UUID(body["integrationId"]))
                tenant = tenants.get(session, tenant_id=user.tenant_id)
                fields = {INTEGRATION_FIELDS[k]: v for k, v in body.items() if k in INTEGRATION_FIELDS}
                row = integrations.create(session, tenant=tenant, provider=provider, fields=fields, enabled_by=user.id)
                view = views.integration(row)
                events.record_change(session, tenant_id=user.tenant_id, actor=actor, action="integration.create",
                                     resource_type="integration", resource_id=row.integration.id, changes=body,
                                     event_type="integration.created", data=view)
                return view, str(row.integration.id)

        shaped, new_id = await run_in_threadpool(work)
        return JSONResponse(shaped, status_code=201, headers={"Location": f"/api/v1/tenant/integrations/{new_id}"})

    async def refused(_request: Request, exc: Exception) -> JSONResponse:
        return _envelope(exc.status, exc.code, exc.message)

    return Starlette(
        routes=[
            Route("/api/v1/integrations", list_catalog, methods=["GET"]),
            Route("/api/v1/auth/me", get_me, methods=["GET"]),
            Route("/api/v1/auth/me-limited", get_me_limited, methods=["GET"]),
            Route("/api/v1/tenant/integrations", create_integration, methods=["POST"]),
        ],
        exception_handlers={Refused: refused, DomainError: refused, ApiError: refused},
    )


def create_floor(settings: Settings) -> Starlette:
    """Configure the database engine from `settings` and return the floor app."""
    db.configure(settings.database_url)
    return build(Floor(settings))


def serving_floor() -> Starlette:
    """The uvicorn factory: the floor on the hub's settings from the environment."""
    return create_floor(load_settings())
