"""Everything the hub changes inside Connexion 3.3, in one place (performance issue).

Connexion is our router and validator by choice; two of its internals cost more than they
should, measured by `./scripts/bench`:

1. Per-request decorator rebuild. `AsyncOperation.fn` builds a new `StarletteDecorator` on
   every request, and the decorator's wrapper rebuilds the parameter and response decorators
   on every call, which runs `inspect.signature` on the handler each time (~150 µs a request).
   What it builds depends only on the handler function and the API's options, never on the
   request (the request-dependent parts read Connexion's context variables when they run), so
   `install()` makes it build once per operation: `AsyncOperation.fn` becomes a cached
   attribute holding a `OnceBuiltStarletteDecorator`-wrapped handler. Likewise the security
   handler asks `inspect.signature` of the `x-bearerInfoFunc` twice per request whether it
   accepts `required_scopes` / `request`: the answer is cached per (function, keyword).

2. Spec validation and `$ref` resolution at start-up and on every `openapi.json` request.
   `Specification.__init__` validates the whole document against the OpenAPI schema and then
   resolves every `$ref` (~1 s per document on the bench machine), `add_api` does it again on
   a dict we already resolved, and Swagger UI's `with_base_path` clones (re-validates) the spec
   for every `GET /openapi.json`. `ResolvedSpecification` is a specification that was
   validated and resolved once (by `Specification.load`, in `server.app.load_spec`, whose
   result is cached on disk by content digest) and is handed to `add_api` as is: the patched
   `Specification.load` returns a `Specification` instance unchanged instead of treating it as
   a file path.

`tests/handlers/test_connexion_patches.py` pins the source of every patched Connexion function:
an upgrade that changes one fails that test, which says what to re-check here.
"""

from __future__ import annotations

import copy
import functools
import typing as t

from connexion.apps.asynchronous import AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.security import AbstractSecurityHandler
from connexion.spec import OpenAPISpecification, Specification

# The Connexion functions whose behaviour this module replaces or relies on; the test pins
# their source so an upgrade that changes them is noticed.
PATCHED = {
    "connexion.apps.asynchronous.AsyncOperation.fn": lambda: _original_fn.fget,
    "connexion.decorators.main.ASGIDecorator.__call__": lambda: StarletteDecorator.__mro__[1].__dict__["__call__"],
    "connexion.decorators.main.BaseDecorator.decorate": lambda: StarletteDecorator.decorate,
    "connexion.decorators.main.BaseDecorator.uri_parser": lambda: StarletteDecorator.uri_parser.fget,
    "connexion.security.AbstractSecurityHandler._accepts_kwarg": lambda: _original_accepts_kwarg.__func__,
    "connexion.security.AbstractSecurityHandler._generic_check": lambda: AbstractSecurityHandler._generic_check,
    "connexion.spec.Specification.load": lambda: _original_load.__func__,
    "connexion.spec.Specification.__init__": lambda: Specification.__init__,
    "connexion.spec.OpenAPISpecification.base_path": lambda: OpenAPISpecification.base_path.fset,
    "connexion.spec.Specification.clone": lambda: Specification.clone,
    "connexion.spec.Specification.with_base_path": lambda: Specification.with_base_path,
}

_original_load = Specification.__dict__["load"]
_original_fn = AsyncOperation.__dict__["fn"]
_original_accepts_kwarg = AbstractSecurityHandler.__dict__["_accepts_kwarg"]


@functools.lru_cache(maxsize=1024)
def _accepts_kwarg(func: t.Callable, keyword: str) -> bool:
    # A function's signature doesn't change: inspect it once per (function, keyword).
    return _original_accepts_kwarg.__func__(func, keyword)


class OnceBuiltStarletteDecorator(StarletteDecorator):
    """Connexion's `StarletteDecorator` with the decorator chain built once, not per request.

    `decorate(function)` (sync/async adapter, parameter decorator with its
    `inspect.signature`, response decorator) happens here at construction, and the URI parser
    (built from the operation's parameter definitions) at the first request; each request only
    builds its Starlette request and calls the prepared chain. One instance serves one operation.
    """

    def __call__(self, function: t.Callable) -> t.Callable:
        """Return the request-time wrapper of `function` (a handler) over a chain built now."""
        decorated = self.decorate(function)
        parsers: list[t.Any] = []  # the operation's URI parser: stateless, made at its first request

        @functools.wraps(function)
        async def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            if not parsers:
                parsers.append(self.uri_parser)  # reads the current operation from Connexion's context
            request = self.framework.get_request(uri_parser=parsers[0], scope=scope, receive=receive)
            return await decorated(request)

        return wrapper


def _once_built_fn(self: AsyncOperation) -> t.Callable:
    built = self.__dict__.get("_hub_fn")
    if built is None:
        decorator = OnceBuiltStarletteDecorator(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)
        built = self.__dict__["_hub_fn"] = decorator(self._fn)
    return built


class ResolvedSpecification(OpenAPISpecification):
    """An OpenAPI 3 specification already validated and `$ref`-resolved: built without redoing either.

    `resolved` is the dict `Specification.load(...).spec` returned (or its JSON round trip from
    the spec cache); `raw` an untouched copy of it (made with `copy.deepcopy` when not given).
    Connexion writes into the resolved dict as it builds validators (it attaches `components`
    to schemas), so clones, and with them the served `openapi.json`, come from `raw`, as
    Connexion's own clones do. Clones skip validation too, and the copy per base path is kept,
    so serving `openapi.json` costs a JSON encoding, not a validation.
    """

    def __init__(self, resolved: dict[str, t.Any], *, raw: dict[str, t.Any] | None = None,
                 base_uri: str = "") -> None:
        raw = copy.deepcopy(resolved) if raw is None else raw
        self._set_defaults(raw)
        self._set_defaults(resolved)
        self._raw_spec = raw
        self._spec = resolved
        self._base_uri = base_uri
        self._with_base_path: dict[str, ResolvedSpecification] = {}

    def clone(self) -> "ResolvedSpecification":
        """Return an independent copy of the untouched spec (deep copies, no validation)."""
        return type(self)(copy.deepcopy(self._raw_spec), raw=copy.deepcopy(self._raw_spec), base_uri=self._base_uri)

    def with_base_path(self, base_path: str) -> "ResolvedSpecification":
        """Return a copy whose `servers` is `base_path`, built once per base path."""
        if base_path not in self._with_base_path:
            self._with_base_path[base_path] = super().with_base_path(base_path)
        return self._with_base_path[base_path]


def _load(cls: type[Specification], spec: t.Any, *, arguments: t.Any = None) -> Specification:
    if isinstance(spec, Specification):
        return spec
    return _original_load.__func__(cls, spec, arguments=arguments)


def install() -> None:
    """Apply the patches (idempotent); `server.app.create_app` calls it before building an app."""
    AsyncOperation.fn = property(_once_built_fn)
    AbstractSecurityHandler._accepts_kwarg = staticmethod(_accepts_kwarg)
    Specification.load = classmethod(_load)


def uninstall() -> None:
    """Restore Connexion's own behaviour (tests compare both)."""
    AsyncOperation.fn = _original_fn
    AbstractSecurityHandler._accepts_kwarg = _original_accepts_kwarg
    Specification.load = _original_load
