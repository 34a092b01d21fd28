"""The hub's request pipeline: Connexion's middlewares, with the per-request work moved to start-up.

`middleware_stack` is the list the app factory gives Connexion (its `middlewares` argument):
Connexion's defaults in Connexion's order, four of them replaced by subclasses (`REPLACEMENTS`)
that decide once per operation what Connexion decides on every request (performance issue),
and response validation left out when it is off (it would only pass each request on):

- `FastSwaggerUIMiddleware`: Swagger UI and `openapi.json`, without a router walk for every
  other request.
- `IndexedRoutingMiddleware`: Connexion's routing, each request matched only against the
  routes that share its first path segment (Starlette's router tries every route in turn).
- `CompiledRequestValidationMiddleware`: request validation with the operation's parameter
  validator, URI parser and body validators built once, not per request.
- `HandlerMiddleware`, in place of `ContextMiddleware`: below.

Connexion's stack ends with `ContextMiddleware` (which binds `connexion.context`) and its
`AsyncApp`, which routes the request to the operation again and runs a decorator chain per
request: a Starlette request and a `ConnexionRequest` are built, the URI parser resolves the
parameters, the parameter decorator inspects what the handler takes, the response decorator
shapes its answer (performance issue: about a quarter of the hub's fixed per-request cost).

`HandlerMiddleware` takes `ContextMiddleware`'s place. For every operation it binds the same context, and
for the operations it can call directly (below) it calls the handler itself with the arguments
Connexion's own functions compute (`get_arguments`, the operation's URI parser) from what was
decided once per operation: the handler, its argument names, sync or async, the parser. The
answer is shaped by Connexion's own `AsyncResponseDecorator`, its media type inferred from the
operation's `produces` kept at start-up (`OperationResponseDecorator`). Every other operation,
and any request whose body is not JSON, passes on to Connexion's app unchanged.

Called directly: operations whose request body, when they have one, is JSON only (no forms, no
files, no raw bytes), whose handler takes no `**kwargs`, and which are not TRACE.

Where a sync handler runs: in the threadpool (Connexion's choice for every sync handler), except a
handler marked `@local_read` or `@local_write` while the database is SQLite, which runs on the
event loop. A thread hop is what a blocking wait needs; a SQLite read in WAL mode never waits
(readers take no lock), so for it the hop only adds cost: the handoff, and the request's database
work split between two threads on two cores (performance issue: about a third of the CPU of
`GET /auth/me` unpinned). A write can wait, for the write lock another connection holds: a
`@local_write` handler runs on the loop with SQLite told not to wait (`db.without_lock_wait`);
when it meets a held lock its transaction rolls back and it runs again in the threadpool, where
it waits as any write does.
"""

from __future__ import annotations

import asyncio
import collections.abc
import functools
import json
import types
import typing as t

from connexion.exceptions import NonConformingResponseHeaders
from connexion.context import _context, _operation, _receive, _scope
from connexion.decorators.parameter import get_arguments, inspect_function_arguments, unwrap_decorators
from connexion.decorators.parameter import sanitized as connexion_sanitized
from connexion.decorators.response import AsyncResponseDecorator
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.jsonifier import Jsonifier
from connexion.lifecycle import ConnexionResponse
from connexion.middleware import ConnexionMiddleware
from connexion.middleware.abstract import RoutedAPI, RoutedMiddleware
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.request_validation import (RequestValidationAPI, RequestValidationMiddleware,
                                                     RequestValidationOperation)
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import AbstractOperation
from connexion.utils import is_json_mimetype, is_nullable
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette._utils import get_route_path
from starlette.responses import Response as StarletteResponse
from starlette.routing import Match, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from persistence import db
from server.raw_body import read_body

CONTEXT_ARGUMENT = "context_"  # connexion.decorators.parameter.CONTEXT_NAME
LOCAL = "__hub_local__"  # on a handler: "read" (`local_read`) or "write" (`local_write`)


def local_read(handler: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """Mark a sync handler that only reads the hub's own database, and return it unchanged.

    Such a handler writes nothing (so it never waits for SQLite's write lock), calls nothing
    outside the process and does a bounded amount of work (one page, one row): on SQLite
    `HandlerOperation` calls it on the event loop instead of in the threadpool. On any other
    database it runs in the threadpool like every sync handler, since a query there waits on
    the network. Marking a handler that writes or calls out would stall every request of the
    process while it waits: `tests/server/test_pipeline.py` checks what the marked ones do.
    """
    return _mark_local(handler, "read")


def local_write(handler: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """Mark a sync handler that only reads and writes the hub's own database, and return it unchanged.

    Such a handler does its work in one transaction (`persistence.db.transaction`), calls nothing
    outside the process, does a bounded amount of work, and can run twice: a first run that
    met a lock committed nothing. On SQLite `HandlerOperation` calls it on the event loop without
    waiting for locks; if SQLite answers SQLITE_BUSY (another connection, thread or process is
    writing), the transaction rolls back and the handler runs again in the threadpool, where it
    waits for the lock. On any other database it runs in the threadpool like every sync handler.
    `tests/server/test_pipeline.py` checks where the marked ones run and the replay.
    """
    return _mark_local(handler, "write")


def _mark_local(handler: t.Callable[..., t.Any], kind: str) -> t.Callable[..., t.Any]:
    setattr(handler, LOCAL, kind)
    return handler
# What the Swagger UI middleware serves (SwaggerUIOptions defaults: `/openapi.json`, `/ui`, its
# config and static files under `/ui/`); any other path goes straight on.
SWAGGER_UI_MARKERS = ("/openapi.json", "/ui", "/swagger-ui-config.json")
# Per operation, how many (media type, encoding) verdicts and body validators are kept: the
# client chooses both, so what is kept is bounded; past it they are built per request again.
ACCEPTED_MEDIA_TYPES_KEPT = 16


def middleware_stack(*, validate_responses: bool, before_exception: t.Sequence[t.Any] = (),
                     before_swagger: t.Sequence[t.Any] = (), before_validation: t.Sequence[t.Any] = ()) -> list[t.Any]:
    """Connexion's default middlewares with the hub's replacements (module docstring), in Connexion's order.

    The hub's own middlewares (classes, or `functools.partial` of a class and its options) go
    where Connexion's `add_middleware` would put them at the `MiddlewarePosition` of the same
    name, in the order given (outermost first): `add_middleware` finds a position by the exact
    class, which the replacements are not.
    """
    inserted = {ExceptionMiddleware: before_exception, SwaggerUIMiddleware: before_swagger,
                RequestValidationMiddleware: before_validation}
    stack: list[t.Any] = []
    for middleware in ConnexionMiddleware.default_middlewares:
        if middleware is ResponseValidationMiddleware and not validate_responses:
            continue
        stack.extend(inserted.get(middleware, ()))
        stack.append(REPLACEMENTS.get(middleware, middleware))
    return stack


class FastSwaggerUIMiddleware(SwaggerUIMiddleware):
    """Connexion's Swagger UI middleware; a request for none of its paths skips its router."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else None
        if path is not None and not any(marker in path for marker in SWAGGER_UI_MARKERS):
            # What its router does with a path it does not serve: the next app, with the scope as it came.
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class IndexedRoutingMiddleware(RoutingMiddleware):
    """Connexion's routing middleware, each API's routes indexed by their first path segment.

    Starlette's router matches a request against every route in order until one matches fully
    (about 30 regular expressions for `POST /tenant/integrations`). A route whose first segment
    is literal can only match a path with that first segment, so each API's router is given an
    index (`IndexedRoutes`) that tries only those routes and the ones whose first segment is a
    parameter, in the router's order. When none of them matches fully, the request goes
    through the router itself, which answers a method mismatch (405), a redirect to the path
    with or without its trailing slash, or no route, exactly as before.
    """

    indexed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Index the APIs' routers on the first request (every API is added by then), then route."""
        if not self.indexed:
            for route in self.router.routes:
                if isinstance(route, Mount) and type(route.app) is Router:
                    route.app = IndexedRoutes(route.app)
            self.indexed = True
        await super().__call__(scope, receive, send)


class IndexedRoutes:
    """An ASGI app over a Starlette `Router`: its routes tried by first path segment (see above)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.routes = router.routes  # what Mount.routes reads
        wildcard = [route for route in router.routes if _first_segment_of_route(route) is None]
        self.wildcard = wildcard
        self.index: dict[str, list[t.Any]] = {}
        for route in router.routes:
            segment = _first_segment_of_route(route)
            if segment is not None and segment not in self.index:
                self.index[segment] = [other for other in router.routes
                                       if other in wildcard or _first_segment_of_route(other) == segment]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to the first route that matches it fully, else to the router."""
        if scope["type"] == "http":
            path = get_route_path(scope)
            if path.startswith("/"):
                for route in self.index.get(path.split("/", 2)[1], self.wildcard):
                    match, child_scope = route.matches(scope)
                    if match is Match.FULL:
                        # What Router.app does with a full match.
                        scope.setdefault("router", self.router)
                        scope["route"] = route
                        scope.update(child_scope)
                        await route.handle(scope, receive, send)
                        return
        await self.router(scope, receive, send)


def _first_segment_of_route(route: t.Any) -> str | None:
    # The literal first segment of a Route's path; None when it holds a parameter or is not a Route.
    if not isinstance(route, Route) or not route.path.startswith("/"):
        return None
    segment = route.path.split("/", 2)[1]
    return None if "{" in segment else segment


class CompiledRequestValidationOperation(RequestValidationOperation):
    """Connexion's request validation of one operation, with its validators built once.

    Connexion builds the URI parser, the parameter validator and the body validator on every
    request; they depend only on the operation and the request's media type and encoding, and
    keep no state between requests, so they are built at start-up (the parameter validator)
    or at the first request of each media type (the body validator).
    """

    def __init__(self, next_app: ASGIApp, **kwargs: t.Any) -> None:
        super().__init__(next_app, **kwargs)
        operation = self._operation
        uri_parser = operation._uri_parser_class(operation.parameters, operation.body_definition())
        self._parameters = self._validator_map["parameter"](
            operation.parameters, uri_parser=uri_parser, strict_validation=self.strict_validation,
            security_query_params=self.security_query_params)
        self._bodies: dict[tuple[str, str], t.Any] = {}
        self._accepted: set[str] = set()  # media types validate_mime_type let through (it matches ranges)
        # Nothing to validate: no parameters (an unexpected query parameter is refused by the
        # strict check, so only requests without a query string qualify) and no body.
        self._bare = not operation.parameters and not operation.is_request_body_defined

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Validate parameters, media type and body as Connexion does; then the next app."""
        if self._bare and not scope.get("query_string"):
            await self.next_app(scope, receive, send)
            return
        self._parameters.validate(scope)
        mime_type, encoding = self.extract_content_type(scope["headers"])
        if mime_type not in self._accepted:
            self.validate_mime_type(mime_type)  # raises for a media type the operation does not consume
            if len(self._accepted) < ACCEPTED_MEDIA_TYPES_KEPT:  # a range in `consumes` admits endless names
                self._accepted.add(mime_type)
        validator = self._bodies.get((mime_type, encoding))
        if validator is None:
            validator = self._body_validator(mime_type, encoding)
            if len(self._bodies) < ACCEPTED_MEDIA_TYPES_KEPT:  # the encoding is the client's to choose
                self._bodies[(mime_type, encoding)] = validator
        if validator is not False:
            receive, scope = await validator.wrap_receive(receive, scope=scope)
        await self.next_app(scope, receive, send)

    def _body_validator(self, mime_type: str, encoding: str) -> t.Any:
        # False: nothing to validate for this media type (no schema, or no validator for it).
        operation = self._operation
        schema = operation.body_schema(mime_type)
        validator_class = self._validator_map["body"].get(mime_type) if schema else None
        if validator_class is None:
            return False
        return validator_class(
            schema=schema, required=operation.request_body.get("required", False),
            nullable=is_nullable(operation.body_definition(mime_type)), encoding=encoding,
            strict_validation=self.strict_validation,
            uri_parser=operation.uri_parser_class(operation.parameters, operation.body_definition()))


class CompiledRequestValidationAPI(RequestValidationAPI):
    """The request validation of one served contract, each operation compiled."""

    def make_operation(self, operation: AbstractOperation) -> CompiledRequestValidationOperation:
        """Return the compiled validation of `operation`."""
        return CompiledRequestValidationOperation(self.next_app, operation=operation,
                                                  strict_validation=self.strict_validation,
                                                  validator_map=self.validator_map)


class CompiledRequestValidationMiddleware(RequestValidationMiddleware):
    """Connexion's request validation middleware over compiled operations."""

    api_cls = CompiledRequestValidationAPI


class HandlerOperation:
    """One operation: bind Connexion's context, then call the handler directly or pass the request on.

    `operation` is Connexion's operation (its handler resolved by the app's resolver);
    `next_app` Connexion's own app, which serves what this does not call directly.
    """

    def __init__(self, next_app: ASGIApp, *, operation: AbstractOperation, jsonifier: Jsonifier) -> None:
        self.next_app = next_app
        self.operation = operation
        function = operation.function
        self.function = function
        self.is_async = asyncio.iscoroutinefunction(function)
        local = getattr(function, LOCAL, None)
        self.local_read, self.local_write = local == "read", local == "write"
        self.arguments, self.has_kwargs = inspect_function_arguments(unwrap_decorators(function))
        self.uri_parser = operation.uri_parser_class(operation.parameters, operation.body_definition())
        self.response = OperationResponseDecorator(operation=operation, jsonifier=jsonifier)
        self.has_body = operation.is_request_body_defined
        self.bare = not operation.parameters and not self.has_body
        consumes = operation.consumes if self.has_body else []
        self.direct = (not self.has_kwargs and operation.method.upper() != "TRACE"
                       and all(is_json_mimetype(media) for media in consumes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = scope.get("extensions", {}).get("connexion_context", {})
        _context.set(context)
        _operation.set(self.operation)
        _receive.set(receive)
        _scope.set(scope)
        if not self.direct:
            await self.next_app(scope, receive, send)
            return
        content_type = _header(scope, b"content-type") or "application/octet-stream"
        body = None
        body_name = sanitized(self.operation.body_name(content_type))
        if body_name in self.arguments:
            if not is_json_mimetype(content_type):
                await self.next_app(scope, receive, send)  # Connexion passes such a body as bytes
                return
            body = _json_or_none(await read_body(receive))
        kwargs = self._arguments(scope, context, body, content_type)
        if self.is_async:
            answer = await self.function(**kwargs)
        elif self.local_read and db.is_sqlite():
            answer = self.function(**kwargs)
        elif self.local_write and db.is_sqlite():
            answer = await self._write_locally(kwargs)
        else:
            answer = await run_in_threadpool(self.function, **kwargs)
        if isinstance(answer, StarletteResponse):
            response = answer
        elif isinstance(answer, ConnexionResponse):
            response = StarletteFramework.connexion_to_framework_response(answer)
        else:
            response = self.response.build_framework_response(answer)
        await response(scope, receive, send)

    async def _write_locally(self, kwargs: dict[str, t.Any]) -> t.Any:
        try:
            with db.without_lock_wait():
                return self.function(**kwargs)
        except OperationalError as exc:
            if not db.is_lock_busy(exc):
                raise
        # Another connection holds SQLite's write lock: the first run rolled back; wait for the
        # lock in a worker thread, as any write does.
        return await run_in_threadpool(self.function, **kwargs)

    def _arguments(self, scope: Scope, context: dict, body: t.Any, content_type: str) -> dict[str, t.Any]:
        # What connexion.decorators.parameter.prep_kwargs computes from a ConnexionRequest; for
        # an operation without parameters or body, get_arguments has nothing to add.
        if self.bare:
            kwargs = {}
        else:
            kwargs = self._declared_arguments(scope, body, content_type)
        for key, value in context.items():
            if key in self.arguments:
                kwargs[key] = value
        if CONTEXT_ARGUMENT in self.arguments:
            kwargs[CONTEXT_ARGUMENT] = context
        return kwargs

    def _declared_arguments(self, scope: Scope, body: t.Any, content_type: str) -> dict[str, t.Any]:
        query_string = scope.get("query_string", b"")
        query = QueryParams(query_string) if query_string else {}
        kwargs = get_arguments(
            self.operation,
            path_params=self.uri_parser.resolve_path(scope.get("path_params", {})),
            query_params=self.uri_parser.resolve_query({key: query.getlist(key) for key in query}),
            body=body, files={}, arguments=self.arguments, has_kwargs=False, sanitize=sanitized,
            content_type=content_type.partition(";")[0].strip(),
        )
        return {sanitized(key): value for key, value in kwargs.items()}


class OperationResponseDecorator(AsyncResponseDecorator):
    """Connexion's response decorator, for one operation: its media types read once, not per answer.

    Connexion's `_infer_content_type` reads the operation's `produces` through the request
    context and scans the handler's headers with a typed helper on every answer; this decides
    the same from `produces` kept at start-up. Raises NonConformingResponseHeaders as Connexion does.
    """

    def __init__(self, *, operation: AbstractOperation, jsonifier: Jsonifier) -> None:
        super().__init__(framework=StarletteFramework, jsonifier=jsonifier)
        self.declared = operation.produces
        self.produces = list(set(self.declared))  # Connexion's own expression, in its order

    def _infer_content_type(self, data: t.Any, headers: t.Any) -> str | None:
        content_type = _content_type(headers)
        produces = self.produces
        if data is not None and not produces:
            produces = ["application/json"]
        if content_type:
            if content_type not in produces:
                raise NonConformingResponseHeaders(
                    f"Returned content type ({content_type}) is not defined in operation spec ({self.declared}).")
            return content_type
        if len(produces) == 1:
            return produces[0]
        if not produces:  # an empty answer
            return content_type
        if isinstance(data, str):
            wanted = "text/plain"
        elif isinstance(data, (bytes, types.GeneratorType, collections.abc.Iterator)):
            wanted = "application/octet-stream"
        else:
            wanted = None
        for produced in produces:  # the last match, as Connexion's loop leaves it
            if wanted and wanted in produced:
                content_type = produced
        if content_type is None:
            raise NonConformingResponseHeaders(
                "Multiple response content types are defined in the operation spec, but "
                "the handler response did not specify which one to return.")
        return content_type


def _content_type(headers: t.Any) -> str | None:
    # connexion.utils.extract_content_type (the first Content-Type of a dict or of (name, value)
    # pairs) without the `typing` expression it builds on every call, a third of its cost.
    for key, value in headers.items() if isinstance(headers, dict) else headers:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        if name.lower() == "content-type":
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


@functools.lru_cache(maxsize=1024)
def sanitized(name: str) -> str:
    """Connexion's `sanitized` (an argument's Python name: three regular expressions), remembered per name."""
    return connexion_sanitized(name)


class HandlerAPI(RoutedAPI[HandlerOperation]):
    """The operations of one served contract, each a `HandlerOperation`."""

    def __init__(self, *args: t.Any, jsonifier: Jsonifier | None = None, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.jsonifier = jsonifier or Jsonifier()
        self.add_paths()

    def make_operation(self, operation: AbstractOperation) -> HandlerOperation:
        """Return the compiled operation."""
        return HandlerOperation(self.next_app, operation=operation, jsonifier=self.jsonifier)


class HandlerMiddleware(RoutedMiddleware[HandlerAPI]):
    """Connexion's `ContextMiddleware`, also calling the handlers it can call directly (module docstring)."""

    api_cls = HandlerAPI


# Connexion's middleware -> the hub's compiled one in its place.
REPLACEMENTS: dict[type, type] = {
    SwaggerUIMiddleware: FastSwaggerUIMiddleware, RoutingMiddleware: IndexedRoutingMiddleware,
    RequestValidationMiddleware: CompiledRequestValidationMiddleware, ContextMiddleware: HandlerMiddleware,
}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def _json_or_none(body: bytes) -> t.Any:
    # ConnexionRequest.json(): Starlette's Request.json(), None when the bytes are not JSON.
    try:
        return json.loads(body)
    except ValueError:
        return None
