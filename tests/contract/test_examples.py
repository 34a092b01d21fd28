"""Examples that don't lie.

1. Every example in the published bundle (schema `example`, media `example`/`examples`,
   parameter and header examples) validates against its schema with openapi-schema-validator's
   OAS 3.0 validators: request examples in the write context (no readOnly field), response
   examples in the read context (no writeOnly field), the rest in neither.
2. Every operation's request example is replayed against the running hub (in-process): the
   example body and parameter examples as they are, with only what cannot be known in advance
   substituted by the test's setup (ids of things it creates, a real refresh token or OAuth
   state) or made unique (an email, a provider key or an Idempotency-Key that a previous run
   may have used). The answer must be the operation's documented success status, and it is
   validated against the bundle by openapi-core (status documented, headers, body).
"""

from __future__ import annotations

import copy
import time
import uuid
import json
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from openapi_schema_validator import OAS30ReadValidator, OAS30Validator, OAS30WriteValidator, oas30_format_checker
from starlette.testclient import TestClient

from server.app import API_SPEC, ROOT_SPEC, load_spec
from tests import factories
from tests.contract import spec_tools
from tests.contract.spec_tools import deref, operations

SCHEMA_CHILDREN = ("items", "additionalProperties", "not")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


# --- 1. every example validates against its schema ----------------------------------------------


@dataclass
class Example:
    where: str
    schema: Any
    value: Any
    validator: type = OAS30Validator


def _schema_examples(doc: dict, schema: Any, where: str) -> Iterator[Example]:
    """Examples on `schema` and its subschemas (not following $refs: each is checked where defined)."""
    if not isinstance(schema, dict) or "$ref" in schema:
        return
    if "example" in schema:
        yield Example(f"{where} (example)", schema, schema["example"])
    for name, child in (schema.get("properties") or {}).items():
        yield from _schema_examples(doc, child, f"{where}/properties/{name}")
    for key in SCHEMA_CHILDREN:
        if isinstance(schema.get(key), dict):
            yield from _schema_examples(doc, schema[key], f"{where}/{key}")
    for key in SCHEMA_LISTS:
        for index, child in enumerate(schema.get(key) or []):
            yield from _schema_examples(doc, child, f"{where}/{key}/{index}")


def _value_examples(holder: dict, schema: Any, where: str, validator: type) -> Iterator[Example]:
    """`example` and `examples` of a parameter, header or media type object."""
    if "example" in holder:
        yield Example(f"{where} (example)", schema, holder["example"], validator)
    for name, example in (holder.get("examples") or {}).items():
        if "value" in example:
            yield Example(f"{where} (examples/{name})", schema, example["value"], validator)


def _parameter_examples(doc: dict, param: dict, where: str) -> Iterator[Example]:
    if "$ref" in param:
        return
    yield from _value_examples(param, param.get("schema"), where, OAS30Validator)
    yield from _schema_examples(doc, param.get("schema"), f"{where}/schema")


def _content_examples(doc: dict, content: dict, where: str, validator: type) -> Iterator[Example]:
    """Media examples in the request (write) or response (read) context; without one, the
    schema's own example is what tools show, so it must hold in that context too."""
    for media_type, media in (content or {}).items():
        at = f"{where}/content/{media_type}"
        schema = media.get("schema")
        yield from _schema_examples(doc, schema, f"{at}/schema")
        if "example" in media or "examples" in media:
            yield from _value_examples(media, schema, at, validator)
        elif isinstance(schema, dict) and "example" in deref(doc, schema):
            yield Example(f"{at}/schema (example, as the {'request' if validator is OAS30WriteValidator else 'response'})",
                          schema, deref(doc, schema)["example"], validator)


def _response_examples(doc: dict, response: dict, where: str) -> Iterator[Example]:
    if "$ref" in response:
        return
    for name, header in (response.get("headers") or {}).items():
        if "$ref" not in header:
            yield from _value_examples(header, header.get("schema"), f"{where}/headers/{name}", OAS30Validator)
            yield from _schema_examples(doc, header.get("schema"), f"{where}/headers/{name}/schema")
    yield from _content_examples(doc, response.get("content"), where, OAS30ReadValidator)


def all_examples(doc: dict) -> Iterator[Example]:
    """Every example of the bundle, each with the schema and the validator it must satisfy."""
    components = doc.get("components", {})
    for name, schema in components.get("schemas", {}).items():
        yield from _schema_examples(doc, schema, f"#/components/schemas/{name}")
    for name, param in components.get("parameters", {}).items():
        yield from _parameter_examples(doc, param, f"#/components/parameters/{name}")
    for name, header in components.get("headers", {}).items():
        yield from _value_examples(header, header.get("schema"), f"#/components/headers/{name}", OAS30Validator)
        yield from _schema_examples(doc, header.get("schema"), f"#/components/headers/{name}/schema")
    for name, body in components.get("requestBodies", {}).items():
        yield from _content_examples(doc, body.get("content"), f"#/components/requestBodies/{name}", OAS30WriteValidator)
    for name, response in components.get("responses", {}).items():
        yield from _response_examples(doc, response, f"#/components/responses/{name}")
    for operation in operations(doc):
        where = f"{operation.method.upper()} {operation.path}"
        for param in (operation.item.get("parameters") or []) + (operation.op.get("parameters") or []):
            yield from _parameter_examples(doc, param, f"{where} parameter {param.get('name', param.get('$ref'))}")
        body = operation.op.get("requestBody") or {}
        if "$ref" not in body:
            yield from _content_examples(doc, body.get("content"), f"{where} requestBody", OAS30WriteValidator)
        for status, response in operation.op["responses"].items():
            yield from _response_examples(doc, response, f"{where} {status}")


def example_errors(doc: dict, example: Example) -> list[str]:
    schema = deref(doc, example.schema) if example.schema is not None else {}
    validator = example.validator(schema, format_checker=oas30_format_checker)
    return [f"{example.where}: {error.message} (at {'/'.join(map(str, error.absolute_path)) or 'the root'})"
            for error in validator.iter_errors(example.value)]


@pytest.mark.parametrize("name", ["api", "root"])
def test_every_example_validates_against_its_schema(bundles, name):
    doc = bundles[name]
    examples = list(all_examples(doc))
    assert len(examples) >= (100 if name == "api" else 5), f"only {len(examples)} examples found: is the walk broken?"
    errors = [error for example in examples for error in example_errors(doc, example)]
    assert not errors, "examples that do not match their schema:\n" + "\n".join(errors)


def test_the_example_check_catches_a_lying_example(api_bundle):
    """The checker is not vacuous: a wrong type, a readOnly field in a request and a writeOnly
    field in a response are all reported."""
    doc = copy.deepcopy(api_bundle)
    schemas = doc["components"]["schemas"]
    schemas["Tenant"]["example"]["plan"] = "platinum"
    schemas["IntegrationCreate"]["example"]["id"] = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    doc["paths"]["/auth/login"]["post"]["responses"]["200"]["content"]["application/json"]["example"] = {
        **schemas["AuthTokens"]["example"], "password": "correct-horse-battery"}
    errors = [error for example in all_examples(doc) for error in example_errors(doc, example)]
    assert any("#/components/schemas/Tenant" in e and "platinum" in e for e in errors), errors
    assert any("IntegrationCreate" in e or "/tenant/integrations requestBody" in e for e in errors), errors
    assert any("POST /auth/login 200" in e for e in errors), errors


# --- 2. every request example replayed against the running hub ----------------------------------


@dataclass
class Replay:
    """How to replay one operation's example: who calls, what the setup substitutes."""

    account: factories.Account | None = None
    path: dict[str, str] = field(default_factory=dict)
    body: Callable[[Any], Any] = lambda example: example
    query: dict[str, str] = field(default_factory=dict)
    loopback: bool = False
    stream: bool = False  # an endless text/event-stream: called over TCP, only its start is read
    # Headers computed from the exact body bytes sent (a provider's signature); the body then goes as those bytes.
    signed: Callable[[bytes], dict[str, str]] | None = None


def unique_key(example: str) -> str:
    """A key that no earlier request used: the example with a random suffix."""
    return f"{example}-{factories.unique('')}"


def unique_email(example: str) -> str:
    local, _, domain = example.partition("@")
    return f"{local}+{factories.unique('')}@{domain}"


class World:
    """What the replays need, created through the API (each replay gets fresh, isolated things)."""

    def __init__(self, client, super_admin, sandbox) -> None:
        self.client, self.super_admin, self.sandbox = client, super_admin, sandbox

    def admin(self) -> factories.Account:
        return factories.register(self.client)

    def member(self, admin: factories.Account) -> factories.Account:
        return factories.add_user(self.client, admin, role="user")

    def provider(self, auth_type: str = "oauth2") -> dict:
        """An active tenant-catalog provider on the loopback sandbox connecting with `auth_type`."""
        fields = factories.sandbox_provider_fields(self.sandbox.base_url, authType=auth_type)
        if auth_type != "oauth2":
            fields["oauthConfig"] = None
        return factories.create_provider(self.client, self.super_admin, **fields)

    def integration(self, admin: factories.Account, auth_type: str = "oauth2", **overrides) -> dict:
        return factories.enable_integration(self.client, admin, self.provider(auth_type)["id"], **overrides)

    def connected(self, admin: factories.Account) -> dict:
        """An api_key integration of `admin`'s tenant, connected to the sandbox."""
        integration = self.integration(admin, "api_key")
        response = self.client.post(f"/api/v1/tenant/integrations/{integration['id']}/connect/api-key",
                                    json={"apiKey": "sandbox-api-key"}, headers=admin.headers)
        assert response.status_code == 200, response.text
        return integration

    def authorization_state(self, account: factories.Account, start_path: str) -> tuple[str, str]:
        """Start an OAuth flow at `start_path`, let the sandbox consent; return (state, code)."""
        response = self.client.post(start_path, json={"returnUrl": "https://app.example.com/integrations"},
                                    headers=account.headers)
        assert response.status_code == 200, response.text
        consent = factories.follow_authorization(response.json()["authorizationUrl"])
        assert consent.status_code == 302, consent.text
        query = dict(parse_qsl(urlsplit(consent.headers["location"]).query))
        return query["state"], query["code"]

    def user_connected(self, admin: factories.Account) -> tuple[factories.Account, dict]:
        """A member holding their own OAuth connection to a user-scoped integration."""
        member = self.member(admin)
        integration = self.integration(admin, "oauth2", userScoped=True)
        state, code = self.authorization_state(member, f"/api/v1/user/integrations/{integration['id']}/connect/oauth")
        done = self.client.get("/api/v1/integrations/oauth/callback", params={"state": state, "code": code},
                               follow_redirects=False)
        assert done.status_code == 302 and "status=connected" in done.headers["location"], done.headers
        return member, integration

    def data_connected(self, admin: factories.Account) -> dict:
        """An integration of the sandbox with its sync and write definitions, connected with an API key."""
        from tests.records_support import sandbox_entities

        fields = factories.sandbox_provider_fields(self.sandbox.base_url, authType="api_key", oauthConfig=None,
                                                   availableEntities=sandbox_entities(self.sandbox.base_url))
        provider = factories.create_provider(self.client, self.super_admin, **fields)
        integration = factories.enable_integration(self.client, admin, provider["id"])
        response = self.client.post(f"/api/v1/tenant/integrations/{integration['id']}/connect/api-key",
                                    json={"apiKey": "sandbox-api-key"}, headers=admin.headers)
        assert response.status_code == 200, response.text
        return integration

    def record(self, admin: factories.Account, integration: dict) -> dict:
        """A record written through to the sandbox (an account)."""
        response = self.client.post(f"/api/v1/tenant/integrations/{integration['id']}/records",
                                    json={"entity": "Account", "data": {"name": factories.unique("Replay ")}},
                                    headers=admin.headers)
        assert response.status_code == 201, response.text
        return response.json()

    def echo_connected(self, admin: factories.Account) -> dict:
        """An integration of a provider that answers 200 to every request (tests/echo_provider.py), API key."""
        from tests.echo_provider import EchoProvider

        if getattr(self, "_echo", None) is None:
            self._echo = EchoProvider().start()
        provider = factories.create_provider(self.client, self.super_admin, apiBaseUrl=self._echo.base_url,
                                             testRequest={"method": "GET", "path": "/me", "expectedStatus": 200})
        integration = factories.enable_integration(self.client, admin, provider["id"])
        response = self.client.post(f"/api/v1/tenant/integrations/{integration['id']}/connect/api-key",
                                    json={"apiKey": "echo-key"}, headers=admin.headers)
        assert response.status_code == 200, response.text
        return integration

    def incoming_integration(self, admin: factories.Account) -> dict:
        """An integration of a provider declaring the sandbox's incoming-webhook verification."""
        from persistence import bootstrap

        document = bootstrap.sandbox_documents(self.sandbox.base_url, client_id="c", client_secret="s")[0]
        fields = factories.sandbox_provider_fields(self.sandbox.base_url, authType="api_key", oauthConfig=None,
                                                   availableEntities=document["availableEntities"],
                                                   webhookVerification=document["webhookVerification"])
        return factories.enable_integration(self.client, admin, factories.create_provider(self.client, self.super_admin,
                                                                                          **fields)["id"])

    def event_id(self, admin: factories.Account) -> str:
        """The id of the newest event of `admin`'s tenant (one exists: registering made none, the setup did)."""
        from sqlmodel import select

        from persistence.db import transaction
        from persistence.models import Event

        self.integration(admin, "api_key")
        with transaction() as session:
            return session.exec(select(Event.id).where(Event.tenant_id == uuid.UUID(admin.tenant_id))
                                .order_by(Event.seq.desc()).limit(1)).one()

    def login_account(self, login_example: dict, register_example: dict) -> str:
        """Return an email the login example's password signs in with: the example's own email,
        registered here if nobody did yet; a fresh one if another test took it with another password."""
        email, password = login_example["email"], login_example["password"]
        response = self.client.post("/api/v1/auth/register", json={**register_example, "email": email, "password": password})
        assert response.status_code in (201, 409), response.text
        if response.status_code == 409 and self.client.post("/api/v1/auth/login", json=login_example).status_code != 200:
            email = unique_email(email)
            response = self.client.post("/api/v1/auth/register", json={**register_example, "email": email, "password": password})
            assert response.status_code == 201, response.text
        return email


def _recipes(world: World, doc: dict) -> dict[str, Callable[[], Replay]]:
    """Per operationId, the setup its example needs. Only ids, real tokens and unique keys are
    substituted; everything else is the example as published."""
    w, sa = world, world.super_admin
    schemas = doc["components"]["schemas"]

    def with_email(example):
        return {**example, "email": unique_email(example["email"])}

    def tenant_with_admin(example):
        return {**example, "admin": with_email(example["admin"])} if "admin" in example else example

    def integration_of(admin, **kw):
        return {"id": w.integration(admin, **kw)["id"]}

    def login():
        email = w.login_account(schemas["LoginRequest"]["example"], schemas["RegisterRequest"]["example"])
        return Replay(body=lambda example: {**example, "email": email})

    def refresh():
        admin = w.admin()
        return Replay(body=lambda example: {**example, "refreshToken": admin.refresh_token})

    def logout():
        admin = w.admin()
        return Replay(admin, body=lambda example: {**example, "refreshToken": admin.refresh_token})

    def provider_item():
        provider = w.provider("api_key")
        return Replay(sa, path={"category": provider["category"], "id": provider["id"]})

    def oauth_callback():
        admin = w.admin()
        integration = w.integration(admin, "oauth2")
        state, code = w.authorization_state(admin, f"/api/v1/tenant/integrations/{integration['id']}/connect/oauth")
        return Replay(query={"state": state, "code": code})

    def activate():
        admin = w.admin()
        integration = w.integration(admin, "api_key")
        response = w.client.post(f"/api/v1/tenant/integrations/{integration['id']}/deactivate", headers=admin.headers)
        assert response.status_code == 200, response.text
        return Replay(admin, path={"id": integration["id"]})

    def connected_item():
        admin = w.admin()
        return Replay(admin, path={"id": w.connected(admin)["id"]})

    def user_connection():
        member, integration = w.user_connected(w.admin())
        return Replay(member, path={"id": integration["id"]})

    def start_user_oauth():
        admin = w.admin()
        return Replay(w.member(admin), path=integration_of(admin, auth_type="oauth2", userScoped=True))

    def member_item():
        admin = w.admin()
        return Replay(admin, path={"userId": w.member(admin).user_id})

    def api_token_item():
        admin = w.admin()
        response = w.client.post("/api/v1/tenant/api-tokens", json={"name": "replay", "scopes": ["integrations:read"]},
                                 headers=admin.headers)
        assert response.status_code == 201, response.text
        return Replay(admin, path={"tokenId": response.json()["id"]})

    def as_admin(**kw):
        return lambda: Replay(w.admin(), **kw)

    def events_after():
        # `after` must be an event of the caller's tenant: the first of two (the example's types
        # filter keeps integration.created, so the second integration is what the page shows).
        admin = w.admin()
        w.integration(admin, "api_key")
        w.integration(admin, "api_key")
        first = w.client.get("/api/v1/events", params={"limit": 1}, headers=admin.headers)
        assert first.status_code == 200, first.text
        return Replay(admin, query={"after": first.json()["nextCursor"]})

    def webhook_endpoint(**extra_path):
        def recipe():
            admin = w.admin()
            response = w.client.post("/api/v1/webhooks/endpoints", json={"url": f"{w.sandbox.base_url}/hooks"},
                                     headers=admin.headers)
            assert response.status_code == 201, response.text
            path = {"endpointId": response.json()["id"]}
            if extra_path.get("event"):
                path["eventId"] = w.event_id(admin)
            return Replay(admin, path=path)
        return recipe

    def webhook_message():
        admin = w.admin()
        return Replay(admin, path={"eventId": w.event_id(admin)})

    def record_item(body=None):
        def recipe():
            admin = w.admin()
            integration = w.data_connected(admin)
            record = w.record(admin, integration)
            based = (lambda example: {**example, "lastModifiedAt": record["metadata"]["lastModifiedAt"]}) if body else \
                (lambda example: example)
            return Replay(admin, path={"id": integration["id"], "recordId": record["id"]}, body=based)
        return recipe

    def proxied():
        admin = w.admin()
        return Replay(admin, path={"id": w.echo_connected(admin)["id"], "path": "things"})  # one segment: openapi-core matches no slash in a path parameter
    def incoming_webhook():
        from connectors.sandbox.notify import sign

        admin = w.admin()
        integration = w.incoming_integration(admin)
        response = w.client.post(f"/api/v1/tenant/integrations/{integration['id']}/webhook-secret", headers=admin.headers)
        assert response.status_code == 200, response.text
        secret, stamp = response.json()["secret"], str(int(time.time()))
        return Replay(path={"integrationId": integration["id"]}, signed=lambda raw: {
            "X-Sandbox-Timestamp": stamp, "X-Sandbox-Event-Id": factories.unique("evt_"),
            "X-Sandbox-Signature": sign(secret, stamp, raw)})

    def with_integration(auth_type):
        def recipe():
            admin = w.admin()
            return Replay(admin, path=integration_of(admin, auth_type=auth_type))
        return recipe

    def syncable(connected: bool):
        # A provider whose entities declare sync (the bundled sandbox CRM's Account and Contact),
        # connected by API key when the operation needs a connection (queuing runs does).
        def recipe():
            from persistence import bootstrap

            admin = w.admin()
            entities = bootstrap.sandbox_documents(w.sandbox.base_url, client_id="c", client_secret="s")[0]["availableEntities"]
            fields = factories.sandbox_provider_fields(w.sandbox.base_url, authType="api_key", oauthConfig=None,
                                                       availableEntities=entities)
            integration = factories.enable_integration(w.client, admin, factories.create_provider(w.client, sa, **fields)["id"])
            if connected:
                response = w.client.post(f"/api/v1/tenant/integrations/{integration['id']}/connect/api-key",
                                         json={"apiKey": "sandbox-api-key"}, headers=admin.headers)
                assert response.status_code == 200, response.text
            return Replay(admin, path={"id": integration["id"]})
        return recipe

    def searchable_integration():
        admin = w.admin()
        return Replay(admin, path=integration_of(admin, auth_type="api_key", searchEnabled=True))

    return {
        # auth
        "register": lambda: Replay(body=with_email),
        "login": login,
        "refresh": refresh,
        "logout": logout,
        "get_me": as_admin(),
        # tenants (super admin)
        "list_tenants": lambda: Replay(sa),
        "create_tenant": lambda: Replay(sa, body=tenant_with_admin),
        "get_tenant": lambda: Replay(sa, path={"tenantId": w.admin().tenant_id}),
        "update_tenant": lambda: Replay(sa, path={"tenantId": w.admin().tenant_id}),
        # users (tenant admin)
        "list_users": as_admin(),
        "create_user": as_admin(body=with_email),
        "get_user": member_item,
        "update_user": member_item,
        "delete_user": member_item,
        # providers (super admin)
        "list_providers": lambda: Replay(sa),
        "create_provider": lambda: Replay(sa, body=lambda example: {**example, "provider": f"{example['provider']}_{factories.unique('')}"}),
        "get_provider": provider_item,
        "update_provider": provider_item,
        "update_provider_status": provider_item,
        "update_provider_audience": provider_item,
        "delete_provider": provider_item,
        "test_provider": provider_item,
        # catalog
        "list_catalog": as_admin(),
        "get_catalog_provider": lambda: Replay(w.admin(), path={"category": (p := w.provider("api_key"))["category"], "id": p["id"]}),
        "oauth_callback": oauth_callback,
        # tenant integrations
        "list_tenant_integrations": as_admin(),
        "create_tenant_integration": lambda: Replay(w.admin(), body=lambda example: {**example, "integrationId": w.provider("api_key")["id"]}),
        "get_tenant_integration": with_integration("api_key"),
        "update_tenant_integration": with_integration("api_key"),
        "delete_tenant_integration": with_integration("api_key"),
        "activate_tenant_integration": activate,
        "deactivate_tenant_integration": with_integration("api_key"),
        # connections
        "start_oauth_connection": with_integration("oauth2"),
        "connect_api_key": with_integration("api_key"),
        "connect_basic": with_integration("basic"),
        "connect_custom": with_integration("custom"),
        "get_connection": connected_item,
        "test_connection": connected_item,
        "disconnect": connected_item,
        "update_credentials": connected_item,
        # user connections
        "start_user_oauth_connection": start_user_oauth,
        "get_user_connection": user_connection,
        "disconnect_user_connection": user_connection,
        # api tokens
        "list_api_tokens": as_admin(),
        "create_api_token": as_admin(),
        "revoke_api_token": api_token_item,
        # audit logs
        "list_tenant_audit_logs": as_admin(),
        "list_audit_logs": lambda: Replay(sa),
        # events
        "list_events": events_after,
        "list_event_types": as_admin(),
        # realtime
        "stream_events": lambda: Replay(w.admin(), stream=True),
        # webhooks
        "list_webhook_endpoints": as_admin(),
        "create_webhook_endpoint": as_admin(),
        "get_webhook_endpoint": webhook_endpoint(),
        "update_webhook_endpoint": webhook_endpoint(),
        "delete_webhook_endpoint": webhook_endpoint(),
        "rotate_webhook_secret": webhook_endpoint(),
        "list_webhook_endpoint_attempts": webhook_endpoint(),
        "list_webhook_message_attempts": webhook_message,
        "resend_webhook_message": webhook_endpoint(event=True),
        "recover_webhook_messages": webhook_endpoint(),
        "send_webhook_test": webhook_endpoint(),
        # sync
        "get_sync_status": syncable(connected=False),
        "update_sync_settings": syncable(connected=False),
        "start_sync": syncable(connected=True),
        "pause_sync": syncable(connected=False),
        "resume_sync": syncable(connected=False),
        "list_sync_runs": syncable(connected=False),
        # records
        "list_records": with_integration("oauth2"),
        "create_record": lambda: Replay((admin := w.admin()), path={"id": w.data_connected(admin)["id"]}),
        "get_record": record_item(),
        "update_record": record_item(body=True),
        "delete_record": record_item(),
        # proxy
        "proxy_get": proxied,
        "proxy_post": proxied,
        "proxy_put": proxied,
        "proxy_patch": proxied,
        "proxy_delete": proxied,
        # incoming webhooks
        "receive_incoming_webhook": incoming_webhook,
        "set_incoming_webhook_secret": lambda: Replay((admin := w.admin()), path={"id": w.incoming_integration(admin)["id"]}),
        # search
        "search_integrations": as_admin(),
        "search_integration": searchable_integration,
        # widgets
        "get_widget_status": with_integration("api_key"),
        "get_widget_activity": with_integration("api_key"),
        "get_widget_data": with_integration("api_key"),
        # index (both documents)
        "get_api_index": lambda: Replay(),
        "get_root_index": lambda: Replay(),
        # root: probes
        "get_health": lambda: Replay(),
        "get_integrations_health": as_admin(),
        "get_metrics": lambda: Replay(loopback=True),
    }


def _source_operation_ids() -> list[str]:
    return [op.operation_id for spec in (API_SPEC, ROOT_SPEC) for op in operations(load_spec(spec))]


OPERATION_IDS = _source_operation_ids()


@pytest.fixture(scope="module")
def world(client, super_admin, sandbox) -> World:
    return World(client, super_admin, sandbox)


@pytest.fixture(scope="module")
def served_hub(app):
    """The app over TCP, for streaming operations (the in-process client waits for the body's end)."""
    from tests.realtime_support import ServedHub

    hub = ServedHub(app).start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def validators(bundles):
    return {name: spec_tools.openapi(doc, "http://testserver") for name, doc in bundles.items()}


def test_every_operation_has_a_replay(world, api_bundle):
    assert sorted(_recipes(world, api_bundle)) == sorted(OPERATION_IDS)


def request_example(doc: dict, op: dict) -> Any:
    """The operation's request body example: the media example, else the schema's."""
    media = deref(doc, op["requestBody"])["content"]["application/json"]
    if "example" in media:
        return copy.deepcopy(media["example"])
    if media.get("examples"):
        return copy.deepcopy(next(iter(media["examples"].values()))["value"])
    schema = deref(doc, media["schema"])
    assert "example" in schema, "a request body without an example"
    return copy.deepcopy(schema["example"])


def success_status(op: dict) -> int:
    """The operation's documented success: its first 2xx (3xx for a redirect-only operation)."""
    statuses = sorted(int(s) for s in op["responses"] if s[0] in "23" and s.isdigit())
    assert statuses, "no documented success status"
    return statuses[0]


@pytest.mark.parametrize("operation_id", OPERATION_IDS)
def test_request_example_replays_against_the_hub(operation_id, world, bundles, validators, app, client, request):
    name, operation = next((n, o) for n, doc in bundles.items() for o in operations(doc) if o.operation_id == operation_id)
    doc = bundles[name]
    replay = _recipes(world, bundles["api"])[operation_id]()
    base = doc["servers"][0]["url"].rstrip("/")

    path = operation.path
    query: dict[str, Any] = {}
    headers: dict[str, str] = dict(replay.account.headers) if replay.account else {}
    for param in operation.parameters(doc):
        example = param.get("example", (param.get("schema") or {}).get("example"))
        if param["in"] == "path":
            assert param["name"] in replay.path, f"the setup gives no {param['name']!r}"
            path = path.replace("{" + param["name"] + "}", replay.path[param["name"]])
        elif param["in"] == "query" and example is not None:
            query[param["name"]] = json.dumps(example) if isinstance(example, bool) else example
        elif param["in"] == "header" and example is not None:
            # Idempotency keys are single-use by design: the example, made unique.
            headers[param["name"]] = unique_key(example) if param["name"] == "Idempotency-Key" else example
        elif param.get("required"):
            assert param["name"] in replay.query, f"required {param['in']} parameter {param['name']!r} has no example"
    query.update(replay.query)

    kwargs: dict[str, Any] = {"params": query, "headers": headers, "follow_redirects": False}
    if "requestBody" in operation.op and replay.signed is not None:
        kwargs["content"] = json.dumps(replay.body(request_example(doc, operation.op))).encode()
        headers.update({"Content-Type": "application/json", **replay.signed(kwargs["content"])})
    elif "requestBody" in operation.op:
        kwargs["json"] = replay.body(request_example(doc, operation.op))
    if replay.stream:
        served = request.getfixturevalue("served_hub")
        with httpx.stream(operation.method.upper(), served.http_url + base + path, params=query, headers=headers,
                          timeout=15) as response:
            assert response.status_code == success_status(operation.op)
            media = response.headers["content-type"].split(";")[0]
            assert media in operation.op["responses"][str(response.status_code)]["content"]
            first = next(response.iter_lines())
        assert first == "event: resync_required"  # the example's Last-Event-ID is no event of this tenant
        return
    caller = TestClient(app, client=("127.0.0.1", 50000), raise_server_exceptions=False) if replay.loopback else client
    response = caller.request(operation.method.upper(), base + path, **kwargs)

    documented = {s for s in operation.op["responses"]}
    assert str(response.status_code) in documented, f"undocumented status {response.status_code}: {response.text[:500]}"
    assert response.status_code == success_status(operation.op), response.text[:1000]
    spec_tools.validate_response(validators[name], response)
