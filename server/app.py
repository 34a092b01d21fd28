"""The app factory: builds the Connexion app from the contract under `openapi/`."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
from functools import partial
from pathlib import Path
from typing import Any

from connexion import AsyncApp
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolution, Resolver
from connexion import json_schema as connexion_json_schema
from connexion import spec as connexion_spec
from connexion.spec import Specification

from connectors.outbound import OutboundPolicy
from persistence import db, vault
from server import connexion_patches, errors, idempotency, ratelimit, realtime, runtime
from server.jsonifier import FastJsonifier
from server.operation_policy import OperationPolicyMiddleware
from server.pipeline import middleware_stack
from server.observability import configure_logging
from server.request_log import RequestContextMiddleware
from server.security import no_store_operations
from server.settings import Settings, load_settings
from server.tokens import TokenConfig
from server.validation import validator_map

SPEC_DIR = Path(__file__).resolve().parent.parent / "openapi"
API_SPEC = SPEC_DIR / "openapi.yaml"
ROOT_SPEC = SPEC_DIR / "root.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Bump when what the spec cache stores changes shape.
SPEC_CACHE_FORMAT = "1"

logger = logging.getLogger(__name__)
_resolved_specs: dict[str, str] = {}  # spec digest -> resolved spec as JSON text (this process)


def load_spec(path: Path = API_SPEC, *, cache_dir: Path | None = None) -> dict[str, Any]:
    """Return the spec at `path` with every $ref (across files) resolved, validated by Connexion.

    Validating and resolving a document costs about a second, so the result is kept by the
    digest of every file under `openapi/` (and the Connexion version): in this process, and
    as JSON under `cache_dir` when given (the serving app uses `<HUB_VAR_DIR>/cache`). A
    changed file changes the digest, so a stale entry is never used. Each call returns a
    fresh dict (Connexion writes `servers` into the spec it serves). Raises Connexion's
    InvalidSpecification for an invalid document.
    """
    digest = spec_digest(path)
    text = _resolved_specs.get(digest)
    cached = cache_dir / f"openapi-{path.stem}-{digest[:32]}.json" if cache_dir else None
    if text is None and cached is not None:
        text = _read_cache(cached)
    spec = _parse(text)
    if spec is None:
        text = json.dumps(Specification.load(path).spec)
        if cached is not None:
            _write_cache(cached, text)
        spec = json.loads(text)
    _resolved_specs[digest] = text
    return spec


def spec_cache_dir(settings: Settings) -> Path:
    """Where the serving app keeps validated, resolved specs: `<HUB_VAR_DIR>/cache`."""
    return settings.var_dir / "cache"


def warm_spec_cache(settings: Settings) -> None:
    """Validate and resolve both contracts into the spec cache unless already there."""
    for path in (API_SPEC, ROOT_SPEC):
        load_spec(path, cache_dir=spec_cache_dir(settings))


def spec_digest(path: Path) -> str:
    """Return a SHA-256 over `path`, every YAML file of the contract and Connexion's spec loader.

    Connexion's own `spec.py` and `json_schema.py` are hashed rather than its version number
    (importlib.metadata costs ~35 ms of start-up): a change in how it validates or resolves
    invalidates the cache.
    """
    digest = hashlib.sha256(f"{SPEC_CACHE_FORMAT}|{path.resolve()}".encode())
    for module in (connexion_spec, connexion_json_schema):
        digest.update(Path(module.__file__).read_bytes())
    for file in sorted(SPEC_DIR.rglob("*.yaml")):
        digest.update(str(file.relative_to(SPEC_DIR)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def _read_cache(source: Path) -> str | None:
    try:
        return source.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def _parse(text: str | None) -> dict[str, Any] | None:
    # A damaged entry (a crash mid-write on a filesystem without atomic rename) is a miss: the
    # spec is validated again and the entry rewritten.
    try:
        spec = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


def _write_cache(target: Path, text: str) -> None:
    # A cache that can't be written (read-only deployment) only costs the next start-up time.
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_suffix(f".{hashlib.sha256(text.encode()).hexdigest()[:8]}.tmp")
        scratch.write_text(text, encoding="utf-8")
        scratch.replace(target)
    except OSError as exc:
        logger.warning("spec cache not written to %s: %s", target, exc)


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
            # A `format: path` parameter (the proxy's provider path) spans segments, as Connexion routes it.
            tails = {param.get("name") for op in item.values() if isinstance(op, dict)
                     for param in op.get("parameters", []) if isinstance(param, dict)
                     and (param.get("schema") or {}).get("format") == "path"}
            regex = re.escape(base + path)
            for name in tails:
                regex = regex.replace(re.escape("{" + name + "}"), ".+")
            pattern = re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", regex))
            table.append((pattern, tuple(sorted(methods))))
    return table


def event_types(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the event types the contract declares, in its order: `{name, description, schema, example}`.

    A type is declared by a schema of `components/schemas` carrying `x-event-type` (see
    openapi/components/events.yaml); `schema` is that schema with its references resolved.
    """
    declared = []
    for schema in spec.get("components", {}).get("schemas", {}).values():
        if "x-event-type" in schema:
            copy = json.loads(json.dumps(schema))  # Connexion may annotate the served spec's dicts
            declared.append({"name": copy["x-event-type"], "description": copy.get("description", ""),
                             "schema": copy, "example": copy["example"]})
    return declared


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
        event_types=event_types(api_spec),
        operation_scopes={**operation_scopes(api_spec), **operation_scopes(root_spec)},
        rate_limits=ratelimit.from_spec(_merged_limits(api_spec, root_spec),
                                        storage_uri=settings.redis_url or "memory://",
                                        scale=settings.rate_limit_scale),
        idempotent_operations=idempotency.declared_operations(api_spec),
        no_store_operations=no_store_operations(api_spec),
        routes=route_table(("/api/v1", api_spec), ("", root_spec)),
    )


def hub_middlewares(settings: Settings, specs: list[dict[str, Any]]) -> list[Any]:
    """The middleware list given to Connexion: its own, replaced where `server/pipeline.py` compiles them, and the hub's.

    - Outside Connexion's exception middleware, so error answers and preflights carry its
      headers too: the request context (request id, body cap, CORS, security headers, log line).
    - Before Swagger UI: the WebSocket `/ws` and its AsyncAPI document.
    - After routing and security, before validation: rate limits, scopes, idempotency keys,
      deprecation headers, raw webhook bodies, in one pass (`OperationPolicyMiddleware`).
    """
    context = partial(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, production=settings.is_production, cors={
            "allow_origins": settings.origins,
            "allow_methods": ["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            "allow_headers": ["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key", "X-API-Key",
                              "X-Requested-With"],
            "allow_credentials": True,  # cookie sessions, from ALLOWED_ORIGINS only
            "expose_headers": ["X-Request-ID"],
            "max_age": 600,
        })
    return middleware_stack(validate_responses=settings.response_validation, before_exception=[context],
                            before_swagger=[realtime.RealtimeRoutes],
                            before_validation=[partial(OperationPolicyMiddleware, specs=specs)])


def create_app(settings: Settings | None = None) -> AsyncApp:
    """Build the hub's ASGI app: both contracts, security, validation, errors, middleware.

    Configures the database engine from `settings.database_url` (migrations are applied by the
    CLI, not here).
    """
    settings = settings or load_settings()
    settings.prepare_var_dir()
    db.configure(settings.database_url)
    vault.configure(vault.Keyring.from_strings(settings.encryption_keys()))
    connexion_patches.install()
    cache_dir = spec_cache_dir(settings)
    api_spec, root_spec = load_spec(API_SPEC, cache_dir=cache_dir), load_spec(ROOT_SPEC, cache_dir=cache_dir)
    runtime.install(build_runtime(settings, api_spec, root_spec))
    app = AsyncApp(
        __name__,
        middlewares=hub_middlewares(settings, [api_spec, root_spec]),
        strict_validation=True,
        validate_responses=settings.response_validation,
        validator_map=validator_map(),
        swagger_ui_options=SwaggerUIOptions(swagger_ui=settings.swagger_ui_enabled),
        resolver=TagResolver(),
        jsonifier=FastJsonifier(),
    )
    # Connexion would validate and resolve the specs again; they were (load_spec).
    resolved = connexion_patches.ResolvedSpecification
    # The dicts read above serve Connexion as they are (it only adds `servers` and schema
    # `components`, which nothing above reads); `raw` is the untouched copy it serves.
    app.add_api(resolved(api_spec, raw=load_spec(API_SPEC)), base_path="/api/v1", name="api")
    app.add_api(resolved(root_spec, raw=load_spec(ROOT_SPEC)), base_path="", name="root",
                swagger_ui_options=SwaggerUIOptions(swagger_ui=False))
    errors.register(app, allowed_methods=lambda path: runtime.get().allowed_methods(path))
    return app


def serving_app() -> AsyncApp:
    """The uvicorn factory: configure logging, then build the app (runs in every worker process)."""
    settings = load_settings()
    configure_logging(settings.log_format)
    app = create_app(settings)
    # The app's ~200k long-lived objects (contract, validators, models) would otherwise be
    # scanned by every full garbage collection, ~150-300 ms on a loaded machine, which lands
    # in whatever runs then, typically a realtime fan-out (`./scripts/bench --only realtime`).
    gc.collect()
    gc.freeze()
    return app
