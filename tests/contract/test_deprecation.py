"""server/deprecation.py: Deprecation (RFC 9745), Sunset (RFC 8594) and successor Link headers
for operations the spec marks `deprecated: true`, applied generically by a pure ASGI middleware.

No operation of the contract is deprecated yet, so the middleware is exercised on a synthetic
spec, around a tiny Starlette app behind a fake Connexion routing extension."""

from __future__ import annotations

import datetime

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Match, Route
from starlette.testclient import TestClient

from server.app import API_SPEC, HTTP_METHODS, ROOT_SPEC, load_spec
from server.deprecation import DeprecationMiddleware, deprecations

SPEC = {
    "openapi": "3.0.3",
    "servers": [{"url": "/api/v1"}],
    "paths": {
        "/things/{thingId}": {
            "get": {"operationId": "get_thing", "deprecated": True, "x-deprecated-at": "2026-01-01",
                    "x-sunset": "2026-07-01", "x-replaced-by": "/widgets/{thingId}"},
            "delete": {"operationId": "delete_thing", "deprecated": True, "x-deprecated-at": "2026-01-01T12:00:00Z",
                       "x-sunset": datetime.date(2026, 7, 1)},
        },
        "/legacy": {"post": {"operationId": "legacy", "deprecated": True, "x-sunset": "2026-07-01T00:00:00+02:00",
                             "x-replaced-by": "https://partners.example.com/api/v2/modern"}},
        "/widgets/{thingId}": {"get": {"operationId": "get_widget"}},
        "/old/{a}/{b}": {"get": {"operationId": "get_old", "deprecated": True, "x-deprecated-at": "2026-01-01",
                                 "x-sunset": "2026-07-01", "x-replaced-by": "/new/{b}/{missing}"}},
    },
}
JAN_1_2026 = "@1767225600"
SUNSET = "Wed, 01 Jul 2026 00:00:00 GMT"
ROUTES = {"/api/v1/things/{thing_id}": {"GET": "get_thing", "DELETE": "delete_thing"},
          "/api/v1/legacy": {"POST": "legacy"}, "/api/v1/widgets/{thing_id}": {"GET": "get_widget"},
          "/api/v1/old/{a}/{b}": {"GET": "get_old"}}


class FakeConnexionRouting:
    """Stands in for Connexion's routing middleware: names the operation in the scope."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for template, methods in ROUTES.items():
                if Route(template, lambda r: None).matches(scope)[0] != Match.NONE and scope["method"] in methods:
                    scope.setdefault("extensions", {})["connexion_routing"] = {
                        "api_base_path": "/api/v1", "operation_id": methods[scope["method"]]}
        await self.app(scope, receive, send)


async def thing(request):
    if request.method == "DELETE":
        return JSONResponse({"error": {"code": "CONFLICT"}}, status_code=409)
    return JSONResponse({"id": request.path_params.get("thing_id")}, headers={"Link": '</docs>; rel="help"'})


def client() -> TestClient:
    app = Starlette(routes=[
        Route("/api/v1/things/{thing_id}", thing, methods=["GET", "DELETE"]),
        Route("/api/v1/widgets/{thing_id}", thing, methods=["GET"]),
        Route("/api/v1/old/{a}/{b}", thing, methods=["GET"]),
        Route("/api/v1/legacy", lambda r: PlainTextResponse("ok"), methods=["POST"]),
        Route("/api/v1/unrouted", lambda r: PlainTextResponse("ok")),
    ])
    return TestClient(FakeConnexionRouting(DeprecationMiddleware(app, specs=[SPEC])))


class TestDeprecations:
    def test_maps_each_deprecated_operation_to_its_headers(self):
        assert deprecations(SPEC) == {
            "get_thing": {"Deprecation": JAN_1_2026, "Sunset": SUNSET,
                          "Link": '</api/v1/widgets/{thingId}>; rel="successor-version"'},
            "delete_thing": {"Deprecation": "@1767268800", "Sunset": SUNSET},
            "legacy": {"Deprecation": "@1782856800", "Sunset": "Tue, 30 Jun 2026 22:00:00 GMT",
                       "Link": '<https://partners.example.com/api/v2/modern>; rel="successor-version"'},
            "get_old": {"Deprecation": JAN_1_2026, "Sunset": SUNSET,
                        "Link": '</api/v1/new/{b}/{missing}>; rel="successor-version"'},
        }

    def test_without_a_deprecation_date_the_sunset_is_used_and_without_both_at_0(self):
        spec = {"paths": {"/a": {"get": {"operationId": "a", "deprecated": True, "x-sunset": "2026-07-01"}},
                          "/b": {"get": {"operationId": "b", "deprecated": True}}}}
        assert deprecations(spec) == {"a": {"Deprecation": "@1782864000", "Sunset": SUNSET}, "b": {"Deprecation": "@0"}}

    def test_a_successor_path_already_under_the_base_path_is_kept(self):
        spec = {"servers": [{"url": "/api/v1"}],
                "paths": {"/a": {"get": {"operationId": "a", "deprecated": True, "x-replaced-by": "/api/v1/b"}}}}
        assert deprecations(spec)["a"]["Link"] == '</api/v1/b>; rel="successor-version"'

    def test_an_unreadable_date_names_the_operation(self):
        spec = {"paths": {"/a": {"get": {"operationId": "get_a", "deprecated": True, "x-sunset": "next summer"}}}}
        with pytest.raises(ValueError, match=r"get_a: x-sunset 'next summer' is not a date"):
            deprecations(spec)

    def test_operations_not_deprecated_are_left_out(self):
        assert "get_widget" not in deprecations(SPEC)
        assert deprecations({"paths": {"/a": {"get": {"operationId": "a", "deprecated": False}}}}) == {}


class TestDeprecationMiddleware:
    def test_deprecated_operation_answers_with_the_headers(self):
        response = client().get("/api/v1/things/t-42")
        assert response.status_code == 200 and response.json() == {"id": "t-42"}
        assert response.headers["Deprecation"] == JAN_1_2026
        assert response.headers["Sunset"] == SUNSET
        assert response.headers.get_list("Link") == ['</docs>; rel="help"', '</api/v1/widgets/t-42>; rel="successor-version"']

    def test_error_answers_of_a_deprecated_operation_carry_them_too(self):
        response = client().delete("/api/v1/things/t-42")
        assert response.status_code == 409
        assert (response.headers["Deprecation"], response.headers["Sunset"]) == ("@1767268800", SUNSET)
        assert "Link" not in response.headers

    def test_absolute_successor(self):
        response = client().post("/api/v1/legacy")
        assert response.headers["Link"] == '<https://partners.example.com/api/v2/modern>; rel="successor-version"'

    def test_a_successor_that_cannot_be_filled_in_is_left_out(self):
        response = client().get("/api/v1/old/x/y")
        assert response.headers["Deprecation"] == JAN_1_2026
        assert response.headers.get_list("Link") == ['</docs>; rel="help"']

    def test_other_and_unrouted_requests_are_untouched(self):
        for response in (client().get("/api/v1/widgets/w-1"), client().get("/api/v1/unrouted")):
            assert response.status_code == 200
            assert not {"Deprecation", "Sunset"} & set(response.headers)
            assert 'rel="successor-version"' not in response.headers.get("Link", "")

    def test_non_http_scopes_pass_through(self):
        seen = []

        async def app(scope, receive, send):
            seen.append(scope["type"])

        import asyncio

        asyncio.run(DeprecationMiddleware(app, specs=[SPEC])({"type": "lifespan"}, None, None))
        assert seen == ["lifespan"]


def test_built_from_the_real_contract_by_default():
    """Given both contracts, the middleware knows exactly the operations they deprecate."""
    middleware = DeprecationMiddleware(lambda scope, receive, send: None, specs=[load_spec(API_SPEC), load_spec(ROOT_SPEC)])
    declared = {op["operationId"] for spec in (load_spec(API_SPEC), load_spec(ROOT_SPEC))
                for item in spec["paths"].values() for m, op in item.items() if m in HTTP_METHODS and op.get("deprecated")}
    assert set(middleware.headers) == declared


@pytest.mark.parametrize("spec_file", [API_SPEC, ROOT_SPEC], ids=["api", "root"])
def test_deprecated_operations_of_the_contract_say_when_and_what_instead(spec_file):
    """House rule: `deprecated: true` comes with x-deprecated-at and x-sunset (quoted dates, the
    sunset after the deprecation) and, if any, an x-replaced-by path that exists in the spec."""
    spec = load_spec(spec_file)
    templates = {path for path in spec["paths"]}
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            op = item.get(method) or {}
            if not op.get("deprecated"):
                assert not {"x-sunset", "x-deprecated-at", "x-replaced-by"} & set(op), f"{method} {path}"
                continue
            assert isinstance(op.get("x-deprecated-at"), str) and isinstance(op.get("x-sunset"), str), \
                f"{method.upper()} {path}: quote x-deprecated-at and x-sunset (dates as text)"
            headers = deprecations({"paths": {path: {method: op}}})[op["operationId"]]
            assert int(headers["Deprecation"][1:]) < datetime.datetime.strptime(
                headers["Sunset"], "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=datetime.timezone.utc).timestamp()
            replaced_by = op.get("x-replaced-by")
            assert replaced_by is None or replaced_by.startswith("http") or replaced_by in templates, replaced_by
