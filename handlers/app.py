"""The app factory: builds the Connexion app from the contract under `openapi/`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from connexion import AsyncApp
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolution, Resolver
from connexion.spec import Specification

from handlers import errors, idempotency, ratelimit, runtime
from handlers.observability import configure_logging
from handlers.deprecation import DeprecationMiddleware
from handlers.middleware import EnvelopeCORSMiddleware, RequestContextMiddleware
from handlers.security import PermissionMiddleware
from handlers.settings import Settings, load_settings
from handlers.tokens import TokenConfig
from connectors.outbound import OutboundPolicy
from handlers.validation import validator_map
from persistence import db, vault

SPEC_DIR = Path(__file__).resolve().parent.parent / "openapi"
API_SPEC = SPEC_DIR / "openapi.yaml"
ROOT_SPEC = SPEC_DIR / "root.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def load_spec(path: Path = API_SPEC) -> dict[str, Any]:
    """Return the spec at `path` with every $ref (across files) resolved."""
    return Specification.load(path).spec


def operation_scopes(spec: dict[str, Any]) -> dict[str, list[str] | None]:
    """Map each operationId to the scopes it requires, or None for a public one (`security: []`)."""
    scopes: dict[str, list[str] | None] = {}
    for item in spec.get("paths", {}).values():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            security = operation.get("security", spec.get("security"))
            scopes[operation["operationId"]] = None if security == [] else list(operation.get("x-required-scopes", []))
    return scopes


def route_table(*served: tuple[str, dict[str, Any]]) -> list[tuple[re.Pattern, tuple[str, ...]]]:
    """Return (path pattern, methods) for every path of the served specs (base path, spec)."""
    table = []
    for base, spec in served:
        for path, item in spec.get("paths", {}).items():
            methods = [m.upper() for m in HTTP_METHODS if m in item]
            if "GET" in methods:
                methods.append("HEAD")
            pattern = re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(base + path)))
            table.append((pattern, tuple(sorted(methods))))
    return table


def role_scopes(spec: dict[str, Any]) -> dict[str, list[str]]:
    """Return the `x-role-scopes` of the bearer security scheme: role -> scopes granted."""
    return spec["components"]["securitySchemes"]["bearerAuth"]["x-role-scopes"]


class TagResolver(Resolver):
    """Resolve an operation to `handlers.<first tag>.<operationId>` (tag kebab-case -> module snake_case).

    Keeps operationIds equal to the Python function names, and makes an operation's handler
    findable from its tag alone.
    """

    def resolve(self, operation: Any) -> Resolution:
        """Return the handler function of `operation`; ResolverError if it does not exist."""
        tag = operation._operation["tags"][0].replace("-", "_")
        function = self.resolve_function_from_operation_id(f"handlers.{tag}.{operation.operation_id}")
        return Resolution(function, operation.operation_id)


def _merged_limits(*specs: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {"paths": {}, "x-plan-limits": {}, "x-rate-limit-classes": {}}
    for spec in specs:
        merged["paths"].update(spec.get("paths", {}))
        merged["x-plan-limits"].update(spec.get("x-plan-limits", {}))
        merged["x-rate-limit-classes"].update(spec.get("x-rate-limit-classes", {}))
    return merged


def build_runtime(settings: Settings, api_spec: dict[str, Any], root_spec: dict[str, Any]) -> runtime.Runtime:
    """Return what the operations read at request time, derived from settings and both contracts."""
    return runtime.Runtime(
        settings=settings,
        tokens=TokenConfig(
            secret=settings.signing_secret(),
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl=settings.access_token_ttl_seconds,
            refresh_ttl=settings.refresh_token_ttl_seconds,
        ),
        outbound=OutboundPolicy(allowlist=settings.outbound_allowed, timeout=settings.outbound_timeout_seconds),
        role_scopes=role_scopes(api_spec),
        operation_scopes={**operation_scopes(api_spec), **operation_scopes(root_spec)},
        rate_limits=ratelimit.from_spec(_merged_limits(api_spec, root_spec),
                                        storage_uri=settings.redis_url or "memory://",
                                        scale=settings.rate_limit_scale),
        idempotent_operations=idempotency.declared_operations(api_spec),
        routes=route_table(("/api/v1", api_spec), ("", root_spec)),
    )


def add_middleware(app: AsyncApp, settings: Settings, specs: list[dict[str, Any]]) -> None:
    """Install the hub's middleware around Connexion's routing, security and validation."""
    # Rate limits first, so denied requests count (and carry the headers) too.
    app.add_middleware(ratelimit.RateLimitMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION)
    app.add_middleware(PermissionMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION)
    app.add_middleware(idempotency.IdempotencyMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION)
    app.add_middleware(DeprecationMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION, specs=specs)
    # Each middleware added at BEFORE_EXCEPTION lands inside the ones added before it: the
    # request context goes first so it wraps CORS, and preflight answers carry X-Request-ID too.
    app.add_middleware(
        RequestContextMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION, max_body_bytes=settings.max_body_bytes
    )
    app.add_middleware(
        EnvelopeCORSMiddleware,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        allow_origins=settings.origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key", "X-API-Key"],
        expose_headers=["X-Request-ID"],
        max_age=600,
    )


def create_app(settings: Settings | None = None) -> AsyncApp:
    """Build the hub's ASGI app: both contracts, security, validation, errors, middleware.

    Configures the database engine from `settings.database_url` (migrations are applied by the
    CLI, not here).
    """
    settings = settings or load_settings()
    db.configure(settings.database_url)
    vault.configure(vault.Keyring.from_strings(settings.encryption_keys()))
    api_spec, root_spec = load_spec(API_SPEC), load_spec(ROOT_SPEC)
    runtime.install(build_runtime(settings, api_spec, root_spec))
    app = AsyncApp(
        __name__,
        strict_validation=True,
        validate_responses=settings.response_validation,
        validator_map=validator_map(),
        swagger_ui_options=SwaggerUIOptions(swagger_ui=settings.swagger_ui_enabled),
        resolver=TagResolver(),
    )
    app.add_api(api_spec, base_path="/api/v1", name="api")
    app.add_api(root_spec, base_path="", name="root", swagger_ui_options=SwaggerUIOptions(swagger_ui=False))
    add_middleware(app, settings, [api_spec, root_spec])
    errors.register(app)
    return app


def serving_app() -> AsyncApp:
    """The uvicorn factory: configure logging, then build the app (runs in every worker process)."""
    settings = load_settings()
    configure_logging(settings.log_format)
    return create_app(settings)
