"""Operations of tag `incoming-webhooks`: the secret, and provider notifications over real HTTP.

The hub is served by uvicorn on loopback (`ServedHub`) and its incoming-webhook worker runs on
its threads, as `integration-hub serve` runs them. Notifications come from the sandbox itself
(registered at `/_control/webhooks`, it POSTs a signed notification for every change made
through its API) or are signed here with the sandbox's own signing function, to shape the
cases the sandbox never sends (wrong secret, stale timestamp, replay, odd bodies).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlmodel import select

from connectors.sandbox import SandboxConfig, SandboxServer
from connectors.sandbox.notify import sign
from persistence import bootstrap, records, vault
from persistence.db import transaction
from persistence.models import IncomingWebhook, Integration
from server.incoming_worker import IncomingWorker
from tests import factories
from tests.assertions import assert_error, wait_for
from tests.realtime_support import ServedHub

BASE = "/api/v1/tenant/integrations"
SANDBOX_KEY = {"X-API-Key": "sandbox-api-key"}


@pytest.fixture(scope="module")
def served(app):
    hub = ServedHub(app).start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def worker(app, settings):
    """The incoming-webhook worker of this process, woken by the commits of the served hub."""
    running = IncomingWorker(settings).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def own_sandbox(settings):
    """A sandbox of this module's own: its registrations and writes disturb no other module."""
    server = SandboxServer(SandboxConfig(redirect_uris=[settings.oauth_redirect_uri])).start()
    yield server
    server.stop()


def sandbox_provider(client, super_admin, sandbox, **overrides) -> dict:
    """An API-key sandbox provider with the bundled sync definitions and webhook declaration."""
    document = bootstrap.sandbox_documents(sandbox.base_url, client_id="c", client_secret="s")[0]
    fields = factories.sandbox_provider_fields(
        sandbox.base_url, authType="api_key", oauthConfig=None, supportsWebhooks=True,
        availableEntities=document["availableEntities"], webhookVerification=document["webhookVerification"])
    return factories.create_provider(client, super_admin, **(fields | overrides))


@pytest.fixture
def provider(client, super_admin, own_sandbox) -> dict:
    return sandbox_provider(client, super_admin, own_sandbox)


def connected(client, admin, provider: dict) -> dict:
    """Enable `provider` for `admin`'s tenant and connect it with the sandbox's API key."""
    integration = factories.enable_integration(client, admin, provider["id"])
    answer = client.post(f"{BASE}/{integration['id']}/connect/api-key", json={"apiKey": "sandbox-api-key"},
                         headers=admin.headers)
    assert answer.status_code in (200, 201), answer.text
    return integration


def set_secret(client, admin, integration_id: str, secret: str | None = None) -> str:
    answer = client.post(f"{BASE}/{integration_id}/webhook-secret", json={"secret": secret} if secret else None,
                         headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["secret"]


def incoming_url(served, integration_id: str) -> str:
    return f"{served.http_url}/api/v1/webhooks/incoming/{integration_id}"


def post_signed(served, integration_id: str, body: bytes | dict, *, secret: str, event_id: str | None = None,
                timestamp: int | None = None, content_type: str | None = "application/json") -> httpx.Response:
    """POST `body` signed as the sandbox signs (hex HMAC-SHA256 of `timestamp.body`)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {"X-Sandbox-Timestamp": stamp, "X-Sandbox-Event-Id": event_id or f"evt_{uuid.uuid4().hex}",
               "X-Sandbox-Signature": sign(secret, stamp, raw)}
    if content_type:
        headers["Content-Type"] = content_type
    return httpx.post(incoming_url(served, integration_id), content=raw, headers=headers, timeout=10)


def contact_event(contact_id: str, *, updated_at: str, **fields) -> dict:
    return {"id": f"evt_{uuid.uuid4().hex}", "type": "contact.updated", "entity": "contacts",
            "data": {"id": contact_id, "accountId": "acc_0001", "firstName": "Ada", "lastName": "Lovelace",
                     "email": "ada@example.com", "updatedAt": updated_at, **fields},
            "occurred_at": updated_at}


def held(integration: dict, external_id: str, entity: str = "Contact"):
    with transaction() as session:
        return records.find(session, tenant_id=uuid.UUID(integration["tenantId"]),
                            integration_id=uuid.UUID(integration["id"]), owner_key="tenant", entity=entity,
                            external_id=external_id)


def settled(event_id: str, integration: dict) -> IncomingWebhook | None:
    with transaction() as session:
        row = session.exec(select(IncomingWebhook).where(
            IncomingWebhook.integration_id == uuid.UUID(integration["id"]),
            IncomingWebhook.provider_event_id == event_id)).first()
        return row if row is not None and row.status != "queued" else None


def changed_events(client, admin, integration: dict) -> list[dict]:
    answer = client.get("/api/v1/events", params={"types": "records.changed", "limit": 100}, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return [event for event in answer.json()["events"] if event["data"]["integrationId"] == integration["id"]]


def counter(outcome: str) -> float:
    return REGISTRY.get_sample_value("hub_incoming_webhooks_total", {"outcome": outcome}) or 0.0


class TestSetSecret:
    def test_generated_secret_is_shown_once_and_stored_sealed(self, client, tenant_admin, provider, settings):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])

        answer = client.post(f"{BASE}/{integration['id']}/webhook-secret", headers=tenant_admin.headers)

        assert answer.status_code == 200, answer.text
        body = answer.json()
        url = f"{settings.hub_public_url}/api/v1/webhooks/incoming/{integration['id']}"
        assert body == {"integrationId": integration["id"], "secret": body["secret"], "scheme": "hmac_sha256",
                        "incomingWebhookUrl": url}
        assert len(body["secret"]) == 64 and int(body["secret"], 16) >= 0
        assert answer.headers["Cache-Control"] == "no-store"
        shown = client.get(f"{BASE}/{integration['id']}", headers=tenant_admin.headers).json()
        assert shown["webhookSecretSet"] is True and shown["incomingWebhookUrl"] == url
        assert body["secret"] not in json.dumps(shown)
        with transaction() as session:
            stored = session.get(Integration, uuid.UUID(integration["id"])).webhook_secret
        assert body["secret"] not in stored
        assert vault.open_sealed(stored, binding=f"integration-webhook:{integration['tenantId']}:{integration['id']}") \
            == body["secret"]

    def test_a_new_integration_has_none(self, client, tenant_admin, provider, settings):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])

        assert integration["webhookSecretSet"] is False
        assert integration["incomingWebhookUrl"] == f"{settings.hub_public_url}/api/v1/webhooks/incoming/{integration['id']}"

    def test_given_secret_replaces_the_previous_one(self, client, tenant_admin, provider):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        set_secret(client, tenant_admin, integration["id"])

        assert set_secret(client, tenant_admin, integration["id"], "whsec_provider-chosen-secret") \
            == "whsec_provider-chosen-secret"

    def test_the_secret_is_never_in_the_audit_or_the_events(self, client, tenant_admin, provider):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        secret = set_secret(client, tenant_admin, integration["id"], "a-secret-nobody-may-read-back")

        audit = client.get("/api/v1/tenant/audit-logs", params={"action": "integration.set_webhook_secret"},
                           headers=tenant_admin.headers)
        events = client.get("/api/v1/events", params={"types": "integration.updated"}, headers=tenant_admin.headers)

        assert audit.status_code == 200 and events.status_code == 200
        assert [entry["changes"] for entry in audit.json()["items"]] == [{"generated": False}]
        assert secret not in audit.text and secret not in events.text

    def test_provider_without_webhooks(self, client, super_admin, tenant_admin, own_sandbox):
        bare = sandbox_provider(client, super_admin, own_sandbox, webhookVerification=None)
        integration = factories.enable_integration(client, tenant_admin, bare["id"])

        answer = client.post(f"{BASE}/{integration['id']}/webhook-secret", headers=tenant_admin.headers)

        assert_error(answer, 400, "VALIDATION_ERROR")

    def test_standard_webhooks_secret_must_be_base64(self, client, super_admin, tenant_admin, own_sandbox):
        standard = sandbox_provider(client, super_admin, own_sandbox, webhookVerification={
            "scheme": "standard_webhooks", "routes": [{"entity": "Contact", "externalIdField": "data.id"}]})
        integration = factories.enable_integration(client, tenant_admin, standard["id"])

        refused = client.post(f"{BASE}/{integration['id']}/webhook-secret", json={"secret": "whsec_!!!not*base64!!!"},
                              headers=tenant_admin.headers)
        generated = client.post(f"{BASE}/{integration['id']}/webhook-secret", headers=tenant_admin.headers)

        assert_error(refused, 400, "VALIDATION_ERROR", details={"field": "secret"})
        assert generated.status_code == 200 and generated.json()["secret"].startswith("whsec_")
        assert generated.json()["scheme"] == "standard_webhooks"

    def test_other_tenant_and_unknown_ids_are_not_found(self, client, tenant_admin, other_tenant_admin, provider):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])

        for integration_id in (integration["id"], str(uuid.uuid4())):
            answer = client.post(f"{BASE}/{integration_id}/webhook-secret", headers=other_tenant_admin.headers)
            assert_error(answer, 404, "INTEGRATION_NOT_FOUND")
        assert client.get(f"{BASE}/{integration['id']}", headers=tenant_admin.headers).json()["webhookSecretSet"] is False

    def test_a_member_may_not(self, client, member, tenant_admin, provider):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])

        answer = client.post(f"{BASE}/{integration['id']}/webhook-secret", headers=member.headers)

        assert_error(answer, 403, "PERMISSION_DENIED")


class TestFromTheSandbox:
    def test_a_change_at_the_sandbox_arrives_as_a_record(self, client, tenant_admin, provider, own_sandbox, served,
                                                         worker):
        integration = connected(client, tenant_admin, provider)
        secret = set_secret(client, tenant_admin, integration["id"])
        registration = httpx.post(f"{own_sandbox.base_url}/_control/webhooks", timeout=5,
                                  json={"url": incoming_url(served, integration["id"]), "secret": secret})
        assert registration.status_code == 201, registration.text
        try:
            changed = httpx.patch(f"{own_sandbox.base_url}/contacts/con_0002", json={"firstName": "Grace"},
                                  headers=SANDBOX_KEY, timeout=5)
            assert changed.status_code == 200, changed.text

            record = wait_for(lambda: held(integration, "con_0002"), what="the contact to arrive")
        finally:
            httpx.delete(f"{own_sandbox.base_url}/_control/webhooks/{registration.json()['id']}", timeout=5)

        assert record.data == changed.json()
        deliveries = httpx.get(f"{own_sandbox.base_url}/_control/webhooks", timeout=5).json()["deliveries"]
        assert [d["status"] for d in deliveries if d["subscriptionId"] == registration.json()["id"]] == [202]
        events = wait_for(lambda: changed_events(client, tenant_admin, integration), what="records.changed")
        assert [(e["data"]["trigger"], e["data"]["entity"], e["data"]["added"], e["data"]["recordIds"])
                for e in events] == [("webhook", "Contact", 1, [str(record.id)])]


class TestVerification:
    @pytest.fixture
    def target(self, client, tenant_admin, provider) -> tuple[dict, str]:
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        return integration, set_secret(client, tenant_admin, integration["id"])

    def test_valid_is_accepted_and_processed(self, served, worker, target):
        integration, secret = target
        event = contact_event("con_0100", updated_at="2026-12-02T01:00:00.000000Z")

        answer = post_signed(served, integration["id"], event, secret=secret, event_id=event["id"])

        assert answer.status_code == 202, answer.text
        assert answer.json() == {"status": "queued", "eventId": event["id"]}
        assert wait_for(lambda: settled(event["id"], integration), what="the row settled").status == "done"
        assert held(integration, "con_0100").data == event["data"]

    def test_bad_signature_is_401_audited_and_counted(self, client, tenant_admin, served, target):
        integration, _ = target
        before = counter("bad_signature")

        answer = post_signed(served, integration["id"], contact_event("con_0101", updated_at="2026-12-02T01:00:00Z"),
                             secret="not-the-integration-secret")

        assert_error(answer, 401, "INVALID_SIGNATURE", message="The webhook signature is missing, wrong or too old",
                     details=None)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert counter("bad_signature") == before + 1
        audit = client.get("/api/v1/tenant/audit-logs", params={"action": "incoming_webhook.reject"},
                           headers=tenant_admin.headers).json()["items"]
        assert [(e["resourceId"], e["outcome"], e["changes"], e["requestId"]) for e in audit] == [
            (integration["id"], "failure", {"reason": "bad_signature"}, answer.headers["X-Request-ID"])]
        assert held(integration, "con_0101") is None

    def test_missing_signature_is_401(self, served, target):
        integration, _ = target
        before = counter("missing_signature")

        answer = httpx.post(incoming_url(served, integration["id"]), json={"entity": "contacts"}, timeout=10)

        assert_error(answer, 401, "INVALID_SIGNATURE", details=None)
        assert counter("missing_signature") == before + 1

    def test_stale_timestamp_is_401(self, served, target):
        integration, secret = target
        before = counter("stale_timestamp")

        answer = post_signed(served, integration["id"], contact_event("con_0102", updated_at="2026-12-02T01:00:00Z"),
                             secret=secret, timestamp=int(time.time()) - 301)

        assert_error(answer, 401, "INVALID_SIGNATURE", details=None)
        assert counter("stale_timestamp") == before + 1
        assert held(integration, "con_0102") is None

    def test_replayed_event_id_is_acknowledged_without_effect(self, client, tenant_admin, served, worker, target):
        integration, secret = target
        first = contact_event("con_0103", updated_at="2026-12-02T01:00:00.000000Z", firstName="First")
        replay = contact_event("con_0103", updated_at="2026-12-02T02:00:00.000000Z", firstName="Replayed")
        assert post_signed(served, integration["id"], first, secret=secret, event_id="evt_same").status_code == 202
        wait_for(lambda: settled("evt_same", integration), what="the first copy processed")

        answer = post_signed(served, integration["id"], replay, secret=secret, event_id="evt_same")

        assert answer.status_code == 202, answer.text
        assert answer.json() == {"status": "duplicate", "eventId": "evt_same"}
        worker.drain()
        assert held(integration, "con_0103").data["firstName"] == "First"
        assert len(changed_events(client, tenant_admin, integration)) == 1

    def test_last_write_wins_over_a_stale_copy(self, client, tenant_admin, served, worker, target):
        integration, secret = target
        newer = contact_event("con_0104", updated_at="2026-12-02T02:00:00.000000Z", firstName="Newer")
        older = contact_event("con_0104", updated_at="2026-12-02T01:00:00.000000Z", firstName="Older")
        assert post_signed(served, integration["id"], newer, secret=secret, event_id=newer["id"]).status_code == 202
        wait_for(lambda: settled(newer["id"], integration), what="the newer copy processed")

        late = post_signed(served, integration["id"], older, secret=secret, event_id=older["id"])

        assert late.status_code == 202, late.text
        assert wait_for(lambda: settled(older["id"], integration), what="the stale copy processed").status == "done"
        assert held(integration, "con_0104").data["firstName"] == "Newer"
        assert len(changed_events(client, tenant_admin, integration)) == 1

    def test_a_deleted_copy_tombstones(self, served, worker, target):
        integration, secret = target
        alive = contact_event("con_0105", updated_at="2026-12-02T01:00:00.000000Z")
        gone = contact_event("con_0105", updated_at="2026-12-02T02:00:00.000000Z", deleted=True,
                             deletedAt="2026-12-02T02:00:00.000000Z")
        for event in (alive, gone):
            assert post_signed(served, integration["id"], event, secret=secret, event_id=event["id"]).status_code == 202
            wait_for(lambda event=event: settled(event["id"], integration), what="the copy processed")

        record = held(integration, "con_0105")

        assert record.deleted_at is not None and record.last_action == "deleted"

    @pytest.mark.parametrize("content_type, body", [
        ("application/json", b"{not json"),
        ("application/json", b"\xff\xfe\x00\x01"),
        ("text/plain", b"hello"),
        ("application/x-www-form-urlencoded", b"a=1&b=%ZZ"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\ngarbage"),
        ("multipart/form-data", b"no boundary at all"),
        ("application/octet-stream", bytes(range(256))),
        (None, b"bytes without a media type"),
        ("application/json", b""),
    ])
    def test_any_body_is_verified_as_bytes_never_a_500(self, served, target, content_type, body):
        integration, secret = target
        headers = {"Content-Type": content_type} if content_type else {}

        unsigned = httpx.post(incoming_url(served, integration["id"]), content=body, headers=headers, timeout=10)
        signed = post_signed(served, integration["id"], body, secret=secret, event_id="evt_odd", content_type=content_type)

        assert_error(unsigned, 401, "INVALID_SIGNATURE", details=None)
        assert signed.status_code == 202, signed.text
        assert signed.json() == {"status": "ignored", "eventId": "evt_odd"}

    def test_a_notification_naming_no_entity_is_ignored(self, served, worker, target):
        integration, secret = target

        answer = post_signed(served, integration["id"], {"entity": "invoices", "data": {"id": "inv_1"}}, secret=secret,
                             event_id="evt_invoice")

        assert answer.status_code == 202 and answer.json() == {"status": "ignored", "eventId": "evt_invoice"}
        assert settled("evt_invoice", integration).status == "ignored"

    def test_no_event_id_is_400(self, served, target):
        integration, secret = target
        body, stamp = b'{"entity": "contacts"}', str(int(time.time()))

        answer = httpx.post(incoming_url(served, integration["id"]), content=body, timeout=10, headers={
            "Content-Type": "application/json", "X-Sandbox-Timestamp": stamp, "X-Sandbox-Signature": sign(secret, stamp, body)})

        assert_error(answer, 400, "VALIDATION_ERROR", details=None)


class TestNotFound:
    def test_unknown_integration(self, served):
        answer = post_signed(served, str(uuid.uuid4()), {"entity": "contacts"}, secret="whatever-secret")

        assert_error(answer, 404, "INTEGRATION_NOT_FOUND")

    def test_integration_without_secret(self, client, tenant_admin, provider, served):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])

        answer = post_signed(served, integration["id"], {"entity": "contacts"}, secret="whatever-secret")

        assert_error(answer, 404, "INTEGRATION_NOT_FOUND")

    def test_disabled_integration(self, client, tenant_admin, provider, served):
        integration = factories.enable_integration(client, tenant_admin, provider["id"])
        secret = set_secret(client, tenant_admin, integration["id"])
        assert client.post(f"{BASE}/{integration['id']}/deactivate", headers=tenant_admin.headers).status_code == 200

        answer = post_signed(served, integration["id"], contact_event("con_0110", updated_at="2026-12-02T01:00:00Z"),
                             secret=secret)

        assert_error(answer, 404, "INTEGRATION_NOT_FOUND")

    def test_another_tenants_integration_takes_only_its_own_secret(self, client, tenant_admin, other_tenant_admin,
                                                                     provider, served):
        mine = factories.enable_integration(client, tenant_admin, provider["id"])
        my_secret = set_secret(client, tenant_admin, mine["id"])
        theirs = factories.enable_integration(client, other_tenant_admin, provider["id"])

        without_secret = post_signed(served, theirs["id"], {"entity": "contacts"}, secret=my_secret)
        set_secret(client, other_tenant_admin, theirs["id"])
        with_secret = post_signed(served, theirs["id"], {"entity": "contacts"}, secret=my_secret)

        assert_error(without_secret, 404, "INTEGRATION_NOT_FOUND")
        assert_error(with_secret, 401, "INVALID_SIGNATURE", details=None)


class TestFetchedRecords:
    """A declaration without `recordField`: the worker reads the record with the entity's `sync.fetch`."""

    @pytest.fixture
    def fetching(self, client, super_admin, tenant_admin, own_sandbox) -> tuple[dict, str]:
        declaration = dict(bootstrap.SANDBOX_WEBHOOK_VERIFICATION)
        declaration["routes"] = [{k: v for k, v in route.items() if k != "recordField"}
                                 for route in declaration["routes"]]
        provider = sandbox_provider(client, super_admin, own_sandbox, webhookVerification=declaration)
        integration = connected(client, tenant_admin, provider)
        return integration, set_secret(client, tenant_admin, integration["id"])

    def test_the_record_is_fetched_with_the_connection(self, served, worker, own_sandbox, fetching):
        integration, secret = fetching
        current = httpx.get(f"{own_sandbox.base_url}/accounts/acc_0003", headers=SANDBOX_KEY, timeout=5).json()
        event = {"id": "evt_acc3", "entity": "accounts", "data": {"id": "acc_0003"}}

        assert post_signed(served, integration["id"], event, secret=secret, event_id="evt_acc3").status_code == 202

        assert wait_for(lambda: settled("evt_acc3", integration), what="the fetch").status == "done"
        assert held(integration, "acc_0003", entity="Account").data == current

    def test_a_record_gone_at_the_provider_is_tombstoned(self, served, worker, own_sandbox, fetching):
        integration, secret = fetching
        for event_id in ("evt_c4_a", "evt_c4_b"):
            if event_id == "evt_c4_b":
                deleted = httpx.delete(f"{own_sandbox.base_url}/contacts/con_0004", headers=SANDBOX_KEY, timeout=5)
                assert deleted.status_code == 204
            event = {"id": event_id, "entity": "contacts", "data": {"id": "con_0004"}}
            assert post_signed(served, integration["id"], event, secret=secret, event_id=event_id).status_code == 202
            wait_for(lambda event_id=event_id: settled(event_id, integration), what="the fetch")

        record = held(integration, "con_0004")

        assert record.deleted_at is not None and record.last_action == "deleted"

    def test_a_provider_fault_is_retried(self, served, worker, own_sandbox, fetching):
        integration, secret = fetching
        faults = httpx.post(f"{own_sandbox.base_url}/_control/faults", json={"failNext": 1}, timeout=5)
        assert faults.status_code == 200, faults.text
        try:
            event = {"id": "evt_acc5", "entity": "accounts", "data": {"id": "acc_0005"}}
            assert post_signed(served, integration["id"], event, secret=secret, event_id="evt_acc5").status_code == 202

            row = wait_for(lambda: settled("evt_acc5", integration), what="the retried fetch")
        finally:
            httpx.delete(f"{own_sandbox.base_url}/_control/faults", timeout=5)

        assert (row.status, row.attempts) == ("done", 2)
        assert held(integration, "acc_0005", entity="Account") is not None
