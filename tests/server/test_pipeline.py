"""server/pipeline.py: the middleware list given to Connexion, and the handlers it calls directly.

The compiled pipeline must answer exactly what Connexion's own middlewares and app answer: the
same requests go to the hub and to a twin built with Connexion's defaults in their place (its
routing, request validation, Swagger UI and context middleware, every handler through its app),
and the answers compare equal (status, headers, body), successes and refusals alike.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from connexion.decorators import parameter as connexion_parameter
from connexion.middleware.response_validation import ResponseValidationMiddleware
from sqlmodel import select
from starlette.testclient import TestClient

from persistence import db
from persistence.models import AuditEntry, Event, Integration
from server import connexion_patches, pipeline
from server.app import create_app
from server.pipeline import (CompiledRequestValidationMiddleware, FastSwaggerUIMiddleware, HandlerMiddleware,
                             HandlerOperation)
from tests import factories

VOLATILE_HEADERS = {"x-request-id", "x-ratelimit-remaining", "x-ratelimit-reset", "date", "location"}
VOLATILE_FIELDS = {"updatedAt"}  # the twin's PATCH comes a moment later


def _operations(app) -> dict[str, HandlerOperation]:
    stack = app.middleware.middleware_stack
    handler = next(middleware for middleware in stack if isinstance(middleware, HandlerMiddleware))
    return {op_id: op for apis in handler.apis.values() for api in apis for op_id, op in api.operations.items()}


@pytest.fixture(scope="module")
def through_connexion(settings):
    """A twin of the hub on Connexion's own middlewares (none of server/pipeline.py's replacements)."""
    saved = dict(pipeline.REPLACEMENTS)
    pipeline.REPLACEMENTS.clear()
    try:
        twin = create_app(settings)
    finally:
        pipeline.REPLACEMENTS.update(saved)
    with TestClient(twin, raise_server_exceptions=False) as twin_client:
        assert twin_client.get("/health").status_code == 200  # builds the middleware stack
        names = {type(middleware).__name__ for middleware in twin.middleware.middleware_stack}
        assert {"ContextMiddleware", "RoutingMiddleware", "RequestValidationMiddleware", "SwaggerUIMiddleware"} <= names
        yield twin_client


def _answer(response) -> tuple[int, dict, object]:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else response.text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("requestId", None)
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in VOLATILE_FIELDS}
    return response.status_code, headers, body


def test_the_stack_is_connexions_with_the_compiled_replacements(app, client):
    client.get("/health")
    names = [type(middleware).__name__ for middleware in app.middleware.middleware_stack]
    assert names.index("IndexedRoutingMiddleware") < names.index("SecurityMiddleware") < names.index(
        "OperationPolicyMiddleware") < names.index("CompiledRequestValidationMiddleware") < names.index(
        "HandlerMiddleware")
    assert not {"ContextMiddleware", "SwaggerUIMiddleware", "RoutingMiddleware", "RequestValidationMiddleware"} & set(names)
    assert any(isinstance(m, FastSwaggerUIMiddleware) for m in app.middleware.middleware_stack)
    assert any(isinstance(m, CompiledRequestValidationMiddleware) for m in app.middleware.middleware_stack)
    # The suite's settings validate responses; production's leave the layer out.
    assert any(isinstance(m, ResponseValidationMiddleware) for m in app.middleware.middleware_stack)


def test_response_validation_is_left_out_when_off(settings):
    production = create_app(settings.model_copy(update={"validate_responses": False}))
    with TestClient(production, raise_server_exceptions=False) as production_client:
        assert production_client.get("/health").status_code == 200
        assert not any(isinstance(m, ResponseValidationMiddleware) for m in production.middleware.middleware_stack)


def test_nearly_every_operation_is_called_directly(app, client):
    client.get("/health")
    left = sorted(op_id for op_id, op in _operations(app).items() if not op.direct)
    # **kwargs handlers and the raw-body webhook receiver stay on Connexion's app.
    assert left == ["list_audit_logs", "list_tenant_audit_logs", "receive_incoming_webhook"]


def test_a_direct_call_builds_no_decorator_chain(client, tenant_admin, monkeypatch):
    calls: list[str] = []
    original = connexion_parameter.inspect_function_arguments
    monkeypatch.setattr(connexion_parameter, "inspect_function_arguments",
                        lambda function: calls.append(function.__name__) or original(function))
    connexion_patches.uninstall()  # Connexion's own chain would inspect the handler on every request
    try:
        for _ in range(3):
            assert client.get("/api/v1/auth/me", headers=tenant_admin.headers).status_code == 200
    finally:
        connexion_patches.install()
    assert calls == []


def test_direct_calls_answer_as_connexion_does(client, through_connexion, tenant_admin, super_admin):
    provider = factories.create_provider(client, super_admin)
    integration = factories.enable_integration(client, tenant_admin, provider["id"])
    unknown = str(uuid.uuid4())
    auth = tenant_admin.headers
    requests = [
        ("GET", "/api/v1/auth/me", {}),
        ("GET", "/api/v1/integrations?limit=2&sortBy=name&sortOrder=desc", {}),
        ("GET", "/api/v1/integrations?limit=0", {}),
        ("GET", "/api/v1/integrations?bogus=1", {}),
        ("GET", f"/api/v1/tenant/integrations/{integration['id']}", {}),
        ("GET", f"/api/v1/tenant/integrations/{unknown}", {}),
        ("GET", "/api/v1/tenant/integrations/not-a-uuid", {}),
        ("PATCH", f"/api/v1/tenant/integrations/{integration['id']}", {"json": {"description": "patched"}}),
        ("PATCH", f"/api/v1/tenant/integrations/{integration['id']}", {"json": {"unknownField": 1}}),
        ("PATCH", f"/api/v1/tenant/integrations/{integration['id']}",
         {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/api/v1/tenant/integrations", {"json": {"integrationId": unknown, "name": "x"}}),
        ("GET", "/api/v1/", {}),
        # Routing: a method the path does not have, a trailing slash, no such path, another API's path.
        ("DELETE", "/api/v1/integrations", {}),
        ("GET", "/api/v1/auth/me/", {}),
        ("GET", "/api/v1/nowhere", {}),
        ("GET", "/api/v1/health", {}),
        ("GET", "/metrics/extra", {}),
        # Query arrays and defaults, header parameters, media types, bodies, credentials.
        ("GET", "/api/v1/events?types=integration.created,integration.updated&limit=1", {}),
        ("GET", "/api/v1/events?limit=abc", {}),
        ("POST", "/api/v1/tenant/integrations", {"content": b"integrationId=x",
                                                "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
        ("POST", "/api/v1/tenant/integrations", {"content": b"", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/api/v1/tenant/integrations", {"json": {"integrationId": unknown, "name": "x"},
                                                "headers": {"Idempotency-Key": "k" * 300}}),
        ("GET", "/api/v1/admin/tenants", {}),
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": "Bearer not-a-token"}}),
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": ""}}),
        # Credentials: a malformed header, another scheme, case and spacing, an API token's shape, a bad cookie.
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": "Bearer"}}),
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}),
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": auth["Authorization"].replace("Bearer ", "bEaReR   ")}}),
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": "Bearer hub_abcd1234_not-a-real-secret"}}),
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": "Basic x", "Cookie": "hub_session=nope"}}),
    ]
    for method, path, extra in requests:
        headers = {**auth, **extra.pop("headers", {})}
        direct = client.request(method, path, headers=headers, **extra)
        through = through_connexion.request(method, path, headers=headers, **extra)
        assert _answer(direct) == _answer(through), (method, path)


LOCAL_READS = {"get_me", "list_catalog", "get_catalog_provider", "list_tenant_integrations", "get_tenant_integration"}


def _statements(client, method: str, path: str, headers: dict, **extra) -> tuple[int, list[tuple[int, str]]]:
    """Send one request; return its status and the (thread id, first SQL word) of every statement it ran."""
    seen: list[tuple[int, str]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((threading.get_ident(), statement.split(None, 1)[0].upper()))

    sa.event.listen(db.engine(), "before_cursor_execute", record)
    try:
        status = client.request(method, path, headers=headers, **extra).status_code
    finally:
        sa.event.remove(db.engine(), "before_cursor_execute", record)
    return status, seen


def _local_read_requests(client, tenant_admin, super_admin) -> dict[str, tuple[str, str]]:
    provider = factories.create_provider(client, super_admin)
    integration = factories.enable_integration(client, tenant_admin, provider["id"])
    return {
        "get_me": ("GET", "/api/v1/auth/me"),
        "list_catalog": ("GET", "/api/v1/integrations?limit=5"),
        "get_catalog_provider": ("GET", f"/api/v1/integrations/{provider['category']}/{provider['id']}"),
        "list_tenant_integrations": ("GET", "/api/v1/tenant/integrations"),
        "get_tenant_integration": ("GET", f"/api/v1/tenant/integrations/{integration['id']}"),
    }


def test_the_handlers_marked_local_read_only_read(app, client, tenant_admin, super_admin):
    # A marked handler runs on the event loop on SQLite: one that wrote would wait there for the
    # write lock, and every request of the process with it.
    marked = {op_id for op_id, op in _operations(app).items() if op.local_read}
    assert marked == LOCAL_READS
    for op_id, (method, path) in _local_read_requests(client, tenant_admin, super_admin).items():
        status, statements = _statements(client, method, path, tenant_admin.headers)
        assert status == 200, (op_id, status)
        assert statements and {kind for _, kind in statements} == {"SELECT"}, (op_id, statements)


def test_a_local_read_runs_on_the_event_loop_on_sqlite_only(client, tenant_admin, db_kind):
    # The bearer check queries on the event loop; a local read then runs in the same thread on
    # SQLite, and in a threadpool thread on PostgreSQL, like any other handler (the events list).
    _, me = _statements(client, "GET", "/api/v1/auth/me", tenant_admin.headers)
    _, events = _statements(client, "GET", "/api/v1/events?limit=1", tenant_admin.headers)
    assert len(me) >= 2 and len(events) >= 2
    assert len({thread for thread, _ in events}) == 2
    assert len({thread for thread, _ in me}) == (1 if db_kind == "sqlite" else 2)


LOCAL_WRITES = {"create_tenant_integration", "update_tenant_integration"}


def test_the_handlers_marked_local_write_are_the_known_ones(app):
    # A marked handler runs on the event loop on SQLite and may run twice (module docstring of
    # server/pipeline.py): each one added must be one transaction on the hub's database and nothing else.
    assert {op_id for op_id, op in _operations(app).items() if op.local_write} == LOCAL_WRITES


def test_a_local_write_runs_on_the_event_loop_on_sqlite_only(client, tenant_admin, super_admin, db_kind):
    provider = factories.create_provider(client, super_admin)
    status, created = _statements(client, "POST", "/api/v1/tenant/integrations", tenant_admin.headers,
                                  json={"integrationId": provider["id"], "name": factories.unique("Loop ")})
    assert status == 201
    assert "INSERT" in {kind for _, kind in created}
    assert len({thread for thread, _ in created}) == (1 if db_kind == "sqlite" else 2)


def test_a_local_write_meeting_the_write_lock_waits_for_it_in_a_worker_thread(client, tenant_admin, super_admin,
                                                                              db_kind):
    if db_kind != "sqlite":
        pytest.skip("SQLite's write lock: on PostgreSQL a local write runs in the threadpool")
    provider = factories.create_provider(client, super_admin)
    name = factories.unique("Locked ")
    seen: list[tuple[int, str]] = []
    answers: dict[str, int] = {}

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO integrations"):
            seen.append((threading.get_ident(), statement))

    def create() -> None:
        answers["create"] = client.post("/api/v1/tenant/integrations", headers=tenant_admin.headers,
                                        json={"integrationId": provider["id"], "name": name}).status_code

    # Another process's writer, as far as SQLite knows: its own connection holding the write lock.
    holder = sqlite3.connect(db.engine().url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    sa.event.listen(db.engine(), "before_cursor_execute", record)
    try:
        writer = threading.Thread(target=create)
        writer.start()
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        # The create waits for the lock; the event loop does not: a request on it is answered.
        assert client.get("/api/v1/auth/me", headers=tenant_admin.headers).status_code == 200
        assert writer.is_alive() and "create" not in answers
        holder.execute("ROLLBACK")
        writer.join(timeout=30)
    finally:
        sa.event.remove(db.engine(), "before_cursor_execute", record)
        holder.close()
    assert answers["create"] == 201
    # The run on the loop, refused at once, and the run in a worker thread that waited.
    assert len(seen) == 2 and seen[0][0] != seen[1][0]
    with db.transaction() as session:
        created = session.exec(select(Integration).where(Integration.name == name)).all()
        assert len(created) == 1
        integration_id = str(created[0].id)
        audited = session.exec(select(AuditEntry).where(AuditEntry.action == "integration.create",
                                                        AuditEntry.resource_id == integration_id)).all()
        emitted = session.exec(select(Event).where(Event.type == "integration.created")).all()
        assert len(audited) == 1
        assert [event.data["id"] for event in emitted].count(integration_id) == 1


def test_created_resources_are_answered_alike(client, through_connexion, tenant_admin):
    answers = []
    for http in (client, through_connexion):
        email = f"pipeline-{uuid.uuid4().hex[:8]}@example.com"
        created = http.post("/api/v1/tenant/users", headers=tenant_admin.headers,
                            json={"email": email, "name": "Pipe", "role": "user", "password": "a-long-enough-password"})
        assert created.status_code == 201, created.text
        body = created.json()
        assert created.headers["location"].endswith(body["id"]) and body["email"] == email
        answers.append((created.headers["content-type"], sorted(body), body["role"], body["name"]))
    assert answers[0] == answers[1]


def test_routes_sharing_a_first_segment_reach_their_own_operation(client, tenant_admin, sandbox_integration):
    # /tenant/integrations, /tenant/integrations/{id}, /tenant/users...: the index tries them in order.
    listed = client.get("/api/v1/tenant/integrations", headers=tenant_admin.headers)
    one = client.get(f"/api/v1/tenant/integrations/{sandbox_integration['id']}", headers=tenant_admin.headers)
    users = client.get("/api/v1/tenant/users", headers=tenant_admin.headers)
    assert listed.status_code == one.status_code == users.status_code == 200
    assert [item["id"] for item in listed.json()["integrations"]] == [sandbox_integration["id"]]
    assert one.json()["id"] == sandbox_integration["id"]
    assert tenant_admin.user_id in [user["id"] for user in users.json()["users"]]


def test_the_contract_is_still_served_and_its_trailing_slash_redirected(client):
    assert client.get("/api/v1/openapi.json").json()["info"]["title"]
    assert client.get("/openapi.json").status_code == 200
    redirected = client.get("/api/v1/openapi.json/", follow_redirects=False)
    assert redirected.status_code in (307, 308) and redirected.headers["location"].endswith("/api/v1/openapi.json")


def test_an_operation_without_parameters_still_refuses_a_query_parameter(client, tenant_admin):
    refused = client.get("/api/v1/auth/me?unexpected=1", headers=tenant_admin.headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "VALIDATION_ERROR"


PRODUCES = [[], ["application/json"], ["application/json", "text/plain"], ["application/json", "application/octet-stream"],
            ["text/plain", "text/plain; charset=utf-8"]]
ANSWERS = [None, {"a": 1}, [1], "text", b"bytes", iter(())]
HANDLER_HEADERS = [{}, {"X-Other": "1"}, {"Content-Type": ""}, {"Content-Type": "application/json"},
                   {"content-type": "text/plain"}, [(b"content-type", b"application/json"), (b"content-type", b"text/plain")]]


def _outcome(infer, data, headers):
    try:
        return infer(data, headers)
    except Exception as exc:  # noqa: BLE001: the refusal itself is what is compared
        return type(exc), str(exc)


@pytest.mark.parametrize("produces", PRODUCES)
def test_the_media_type_of_an_answer_is_inferred_as_connexion_does(produces):
    from connexion.context import _operation
    from connexion.decorators.response import BaseResponseDecorator

    class Operation:
        pass

    operation = Operation()
    operation.produces = produces
    decorator = pipeline.OperationResponseDecorator(operation=operation, jsonifier=pipeline.Jsonifier())
    token = _operation.set(operation)
    try:
        outcomes = [(_outcome(decorator._infer_content_type, data, headers),
                     _outcome(BaseResponseDecorator._infer_content_type, data, headers))
                    for data in ANSWERS for headers in HANDLER_HEADERS]
    finally:
        _operation.reset(token)
    assert [ours for ours, _ in outcomes] == [connexions for _, connexions in outcomes]
    kinds = {isinstance(ours, tuple) for ours, _ in outcomes}
    assert kinds == {True, False}  # answers and refusals alike were compared


def test_argument_names_are_sanitized_as_connexion_does():
    names = ["body", "limit", "sort[by]", "x-tenant", "1st", "a.b", "filter[]", ""]
    assert [pipeline.sanitized(name) for name in names] == [connexion_parameter.sanitized(name) for name in names]
