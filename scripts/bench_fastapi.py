"""The benchmark's FastAPI app: the bench's work for each benchmarked operation, written as a FastAPI user would.

What users would pick instead of the hub (issue 16), so it does the floor's work
(scripts/bench_floor.py) the idiomatic FastAPI way:

- same database (persistence.db), same JWT verification (server.tokens.decode), same user/tenant
  lookup (accounts.check_session), same scope rule (the operation's `x-required-scopes` from the
  spec against the role's `x-role-scopes`), same queries (persistence functions), same views
  (handlers.views), the same change record on create (persistence.events.record_change: audit
  entry, event, outbox rows), same rate-limit work for `/auth/me-limited` (server.ratelimit.RateLimits);
- request validation by pydantic: the catalog's query as a `Query()` model (`extra="forbid"`, the
  spec's bounds and enums), the create body as an `IntegrationCreate` model (`extra="forbid"`, the
  spec's lengths, item counts and NUL-free patterns);
- `response_model=` pydantic models for every answer (FastAPI validates and serialises the
  returned dict through them);
- an `HTTPBearer` dependency that decodes the token (CPU only: `async def`, on the event loop),
  the caller as a `Security(caller, scopes=[...])` dependency (the database lookup: a sync `def`,
  so FastAPI runs it in its threadpool), sync `def` endpoints for the database work;
- the floor's error envelope `{"error": {"code", "message"}}` through exception handlers.

FastAPI's defaults are kept (the /docs, /redoc and /openapi.json routes, its tracing hooks):
what a user gets. Serve with `uvicorn bench_fastapi:serving_fastapi --factory --app-dir scripts`;
it reads the hub's settings from the environment (DATABASE_URL, JWT_SECRET, HUB_RATE_LIMIT_SCALE, ...).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at route
# registration, and those naming a closure's dependency (`signed_in(...)`) cannot be resolved from strings.
import uuid
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from limits import RateLimitItemPerMinute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from handlers import views
from persistence import accounts, db, events, integrations, providers, tenants, users
from persistence.audit import Actor
from persistence.db import transaction
from persistence.errors import DomainError
from server.app import API_SPEC, load_spec, role_scopes, spec_cache_dir
from server.errors import ApiError
from server.ratelimit import RateLimits
from server.settings import Settings, load_settings
from server.tokens import TokenConfig, decode

PLAN_WINDOW_MINUTES = 15
NO_NUL = r"^[^\x00]*$"  # the spec's `pattern: '^[^\u0000]*$'` on every string


class Refused(Exception):
    """A request answered with an error envelope (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Camel(BaseModel):
    """Base of the API models: snake_case in Python, camelCase on the wire (FastAPI dumps by alias)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# --- requests (the spec's list_catalog parameters and IntegrationCreate) ---

class CatalogQuery(Camel):
    """The catalog's query parameters; unknown ones are refused like the spec's query (additionalProperties false)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    limit: int = Field(50, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1_000_000)
    cursor: Annotated[str, Field(min_length=1, max_length=1024, pattern=NO_NUL)] | None = None
    category: Literal["crm", "communication", "data_source", "storage", "custom"] | None = None
    search: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] | None = None
    sort_by: Literal["name", "displayName", "provider", "createdAt", "updatedAt"] = "name"
    sort_order: Literal["asc", "desc"] = "asc"


ShortItem = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]


class IntegrationCreate(Camel):
    """IntegrationCreate of the spec (openapi/components/integrations.yaml)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    integration_id: uuid.UUID
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    description: Annotated[str, Field(max_length=1000, pattern=NO_NUL)] | None = None
    icon: Annotated[str, Field(max_length=200, pattern=NO_NUL)] | None = None
    settings: Annotated[dict[str, Any], Field(max_length=50)] | None = None
    allowed_shard_types: Annotated[list[ShortItem], Field(max_length=50)] | None = None
    search_enabled: bool | None = None
    searchable_entities: Annotated[list[ShortItem], Field(max_length=100)] | None = None
    user_scoped: bool | None = None


# --- responses (the spec's ProviderList, Me, Integration; nested provider documents as dicts) ---

class Provider(Camel):
    """IntegrationProvider: its top-level fields typed, the nested documents as JSON objects."""

    id: uuid.UUID
    name: str
    display_name: str
    description: str | None
    category: str
    provider: str
    status: str
    audience: str
    capabilities: list[str]
    supported_sync_directions: list[str]
    supports_realtime: bool
    supports_webhooks: bool
    supports_notifications: bool
    supports_search: bool
    searchable_entities: list[str]
    search_capabilities: dict[str, Any] | None
    requires_user_scoping: bool
    auth_type: str
    oauth_config: dict[str, Any] | None
    available_entities: list[dict[str, Any]]
    entity_mappings: list[dict[str, Any]]
    icon: str
    color: str
    version: str
    is_premium: bool
    required_plan: str | None
    api_base_url: str | None
    test_request: dict[str, Any] | None
    api_key_header: str | None
    webhook_verification: dict[str, Any] | None
    created_at: str
    updated_at: str


class ProviderList(Camel):
    """ProviderList: one page of the catalog."""

    providers: list[Provider]
    total: int
    limit: int
    offset: int
    has_more: bool
    next_offset: int | None


class TenantSummary(Camel):
    """TenantSummary."""

    id: uuid.UUID
    name: str
    plan: Literal["free", "starter", "professional", "enterprise"]
    status: Literal["active", "suspended", "offboarded"]


class Me(Camel):
    """Me: the caller, its tenant and its permissions."""

    id: uuid.UUID
    email: str
    name: str
    role: Literal["super_admin", "tenant_admin", "user"]
    tenant_id: uuid.UUID | None
    tenant: TenantSummary | None
    permissions: list[str]
    created_at: str
    last_login: str | None


class Integration(Camel):
    """Integration (IntegrationDocument of the seed)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    integration_id: uuid.UUID
    provider_name: str
    provider_category: str
    name: str
    description: str | None
    icon: str | None
    settings: dict[str, Any]
    allowed_shard_types: list[str]
    search_enabled: bool
    searchable_entities: list[str]
    user_scoped: bool
    status: Literal["pending", "connected", "error", "disabled"]
    connection_status: str | None
    enabled_at: str | None
    enabled_by: uuid.UUID | None
    last_connected_at: str | None
    last_error: str | None
    incoming_webhook_url: str
    webhook_secret_set: bool
    created_at: str
    updated_at: str


def _required_scopes(spec: dict[str, Any]) -> dict[str, list[str]]:
    found = {}
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = sorted(operation.get("x-required-scopes", []))
    return found


class State:
    """What the app needs from the spec and settings: token config, scopes, rate limits (as the floor's `Floor`)."""

    def __init__(self, settings: Settings) -> None:
        # The scope and limit tables come from the spec, read from the resolved copy the hub caches
        # (a FastAPI app has no spec to validate at start-up; its cold start should not pay for one).
        spec = load_spec(API_SPEC, cache_dir=spec_cache_dir(settings))
        self.tokens = TokenConfig(secret=settings.signing_secret(), algorithm=settings.jwt_algorithm,
                                  issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                  access_ttl=settings.access_token_ttl_seconds,
                                  refresh_ttl=settings.refresh_token_ttl_seconds)
        self.role_scopes = {role: set(scopes) for role, scopes in role_scopes(spec).items()}
        self.required = _required_scopes(spec)
        scale = settings.rate_limit_scale
        self.plan_limits = {plan: RateLimitItemPerMinute(max(1, int(n * scale)), PLAN_WINDOW_MINUTES)
                            for plan, n in spec["x-plan-limits"].items()}
        self.account_limit = RateLimitItemPerMinute(max(1, int(spec["x-rate-limit-classes"]["account"] * scale)))
        self.rate_limits = RateLimits()  # in memory, as the hub without REDIS_URL


def build(state: State) -> FastAPI:
    """Return the FastAPI app over `state`."""
    bearer = HTTPBearer(auto_error=False)

    async def claims(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> dict:
        """Verify the bearer token (CPU only, so on the event loop) and return its claims."""
        if credentials is None:
            raise Refused(401, "NO_TOKEN", "No bearer token")
        return decode(state.tokens, credentials.credentials, typ="access")

    def caller(security_scopes: SecurityScopes, token: Annotated[dict, Depends(claims)]) -> accounts.SignIn:
        """Look up the user and tenant (as authenticate_bearer does) and check the route's scopes."""
        with transaction() as session:
            standing = accounts.check_session(session, user_id=uuid.UUID(token["sub"]),
                                              family_id=uuid.UUID(token["fam"]))
        if standing.failure:
            raise Refused(403 if standing.failure.startswith("tenant") else 401, standing.failure.upper(), "Refused")
        required = set(security_scopes.scopes)
        if not required or not required <= state.role_scopes.get(standing.user.role, set()):
            raise Refused(403, "PERMISSION_DENIED", "Missing scope")
        return standing

    def signed_in(operation_id: str) -> Any:
        return Security(caller, scopes=state.required[operation_id])

    def me_body(standing: accounts.SignIn) -> dict:
        with transaction() as session:
            user = users.find_by_id(session, user_id=standing.user.id)
            tenant = tenants.get(session, tenant_id=user.tenant_id) if user.tenant_id else None
            return views.me(user, tenant, sorted(state.role_scopes.get(user.role, ())))

    app = FastAPI(title="Integration Hub (FastAPI bench app)")

    @app.get("/api/v1/integrations", response_model=ProviderList)
    def list_catalog(query: Annotated[CatalogQuery, Query()],
                     standing: Annotated[accounts.SignIn, signed_in("list_catalog")]) -> Any:
        with transaction() as session:
            page = providers.list_page(session, limit=query.limit, offset=query.offset, category=query.category,
                                       status="active", audience="tenant", search=query.search,
                                       sort_by=query.sort_by, sort_order=query.sort_order)
            return views.page("providers", page, views.provider)

    @app.get("/api/v1/auth/me", response_model=Me)
    def get_me(standing: Annotated[accounts.SignIn, signed_in("get_me")]) -> Any:
        return me_body(standing)

    @app.get("/api/v1/auth/me-limited", response_model=Me)
    def get_me_limited(response: Response, standing: Annotated[accounts.SignIn, signed_in("get_me")]) -> Any:
        caller_key = f"tenant:{standing.user.tenant_id}"
        headers, retry_after, _ = state.rate_limits.check([
            ("plan", state.plan_limits[standing.tenant.plan], ("plan", caller_key)),
            ("account", state.account_limit, ("account", caller_key))])
        if retry_after is not None:
            raise Refused(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
        response.headers.update(headers)
        return me_body(standing)

    @app.post("/api/v1/tenant/integrations", response_model=Integration, status_code=201)
    def create_integration(payload: IntegrationCreate, request: Request, response: Response,
                           standing: Annotated[accounts.SignIn, signed_in("create_tenant_integration")]) -> Any:
        body = payload.model_dump(mode="json", by_alias=True, exclude_unset=True)  # what the client sent
        user = standing.user
        actor = Actor(user_id=user.id, role=user.role, tenant_id=user.tenant_id,
                      ip=request.client.host if request.client else None)
        with transaction() as session:
            provider = providers.get_listed(session, provider_id=payload.integration_id)
            tenant = tenants.get(session, tenant_id=user.tenant_id)
            fields = payload.model_dump(exclude_unset=True, exclude={"integration_id"})
            row = integrations.create(session, tenant=tenant, provider=provider, fields=fields, enabled_by=user.id)
            view = views.integration(row)
            events.record_change(session, tenant_id=user.tenant_id, actor=actor, action="integration.create",
                                 resource_type="integration", resource_id=row.integration.id, changes=body,
                                 event_type="integration.created", data=view)
            response.headers["Location"] = f"/api/v1/tenant/integrations/{row.integration.id}"
            return view

    async def refused(_request: Request, exc: Refused | DomainError | ApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # The floor's messages: FastAPI answers 422 with pydantic's errors; the hub's contract says 400.
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            message = "Request body is not valid JSON"
        else:
            message = "Invalid body" if first.get("loc", ("query",))[0] == "body" else "Invalid query"
        return JSONResponse({"error": {"code": "VALIDATION_ERROR", "message": message}}, status_code=400)

    for error in (Refused, DomainError, ApiError):
        app.add_exception_handler(error, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    return app


def create_fastapi(settings: Settings) -> FastAPI:
    """Configure the database engine from `settings` and return the FastAPI app."""
    db.configure(settings.database_url)
    return build(State(settings))


def serving_fastapi() -> FastAPI:
    """The uvicorn factory: the FastAPI app on the hub's settings from the environment."""
    return create_fastapi(load_settings())
