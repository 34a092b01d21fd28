"""Operations of tag `webhooks` and the deliveries they lead to, end to end over loopback.

A real receiver (tests/webhook_receiver.py) verifies every delivery with the `standardwebhooks`
package. The worker runs in-process (`Worker.drain_sync`: deliver what is due now) with the
retry schedule compressed by `HUB_WEBHOOK_RETRY_SCHEDULE`, or the real one and an injected
clock: no test sleeps for a retry.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from connectors.outbound import OutboundPolicy, OutboundRefused
from connectors.webhook_sender import check_endpoint_url
from persistence.db import transaction
from persistence.models import AuditEntry, Event, WebhookDelivery, WebhookEndpoint
from server.worker import Worker
from tests import factories
from tests.assertions import assert_error
from tests.webhook_receiver import Receiver

ENDPOINTS = "/api/v1/webhooks/endpoints"
INTEGRATIONS = "/api/v1/tenant/integrations"
ENDPOINT_KEYS = {"id", "url", "description", "eventTypes", "enabled", "disabledReason", "failingSince", "createdAt",
                 "updatedAt"}
SVIX = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


def create_endpoint(client, admin, receiver: Receiver | None = None, **overrides) -> dict:
    """Add an endpoint as `admin` (to `receiver`, which learns its secret); return the answer with the secret."""
    body = {"url": receiver.url if receiver else "https://hooks.partner.example/x"} | overrides
    response = client.post(ENDPOINTS, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    if receiver is not None:
        receiver.secrets.append(created["secret"])
    return created


def worker(settings, *, schedule: str = "0,0,0", clock=None, policy=None) -> Worker:
    tuned = settings.model_copy(update={"webhook_retry_schedule": schedule})
    return Worker(tuned, concurrency=8, clock=clock or (lambda: datetime.now(timezone.utc)), policy=policy)


class Clock:
    """A settable clock for the worker (aware UTC)."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def attempts(client, admin, endpoint_id: str, **params) -> list[dict]:
    response = client.get(f"{ENDPOINTS}/{endpoint_id}/attempts", params=params, headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def tenant_events(admin, event_type: str) -> list[Event]:
    with transaction() as session:
        return list(session.exec(select(Event).where(Event.tenant_id == uuid.UUID(admin.tenant_id),
                                                     Event.type == event_type).order_by(Event.seq)).all())


def emit(client, admin, provider_id: str) -> dict:
    """Cause one `integration.created` event in `admin`'s tenant; return the integration as the API showed it."""
    return factories.enable_integration(client, admin, provider_id)


def delivery(endpoint_id: str, event_id: str) -> WebhookDelivery:
    with transaction() as session:
        return session.exec(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id),
                                                          WebhookDelivery.event_id == event_id)).one()


class TestCreateWebhookEndpoint:
    def test_secret_is_shown_once_and_stored_sealed(self, client, tenant_admin):
        created = create_endpoint(client, tenant_admin, description="Orders", eventTypes=["integration.created"])

        secret = created.pop("secret")
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
        assert set(created) == ENDPOINT_KEYS
        assert created | {"id": None, "createdAt": None, "updatedAt": None} == {
            "id": None, "url": "https://hooks.partner.example/x", "description": "Orders",
            "eventTypes": ["integration.created"], "enabled": True, "disabledReason": None, "failingSince": None,
            "createdAt": None, "updatedAt": None}
        shown = client.get(f"{ENDPOINTS}/{created['id']}", headers=tenant_admin.headers)
        assert shown.status_code == 200 and shown.json() == created
        with transaction() as session:
            row = session.get(WebhookEndpoint, uuid.UUID(created["id"]))
        assert row.secret.startswith("v1:") and secret not in row.secret and secret[6:] not in row.secret
        [event] = tenant_events(tenant_admin, "webhook_endpoint.created")
        assert event.data == created and "secret" not in str(event.data)

    @pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.1.2.3/hooks",
                                     "http://[::1]:8080/hooks", "ftp://hooks.partner.example/x"])
    def test_ssrf_guard_refuses_the_url_at_save(self, client, tenant_admin, url):
        response = client.post(ENDPOINTS, json={"url": url}, headers=tenant_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details={"field": "url"})
        assert client.get(ENDPOINTS, headers=tenant_admin.headers).json()["total"] == 0

    def test_production_wants_https(self):
        with pytest.raises(OutboundRefused, match="https"):
            check_endpoint_url("http://hooks.partner.example/x", OutboundPolicy(), https_only=True)
        check_endpoint_url("https://hooks.partner.example/x", OutboundPolicy(), https_only=True)


class TestDelivery:
    def test_end_to_end_the_receiver_gets_a_verified_integration_created(self, client, tenant_admin, sandbox_provider,
                                                                         receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        integration = emit(client, tenant_admin, sandbox_provider["id"])

        assert worker(settings).drain_sync() >= 1

        [got] = receiver.deliveries
        [event] = tenant_events(tenant_admin, "integration.created")
        assert got.verified_with == [endpoint["secret"]]
        assert got.headers["webhook-id"] == event.id and got.headers["content-type"] == "application/json"
        assert got.body == {"type": "integration.created", "timestamp": got.body["timestamp"], "data": integration}
        assert got.body["timestamp"].endswith("Z") and got.body["timestamp"].startswith(str(event.occurred_at.year))
        [attempt] = attempts(client, tenant_admin, endpoint["id"])
        assert attempt | {"id": None, "attemptedAt": None, "durationMs": None} == {
            "id": None, "endpointId": endpoint["id"], "eventId": event.id, "eventType": "integration.created",
            "attemptNumber": 1, "trigger": "scheduled", "status": "succeeded", "attemptedAt": None,
            "responseStatus": 200, "responseBody": "ok", "durationMs": None, "errorKind": None, "error": None,
            "nextAttemptAt": None}
        by_message = client.get(f"/api/v1/webhooks/messages/{event.id}/attempts", headers=tenant_admin.headers)
        assert by_message.status_code == 200 and by_message.json()["items"] == [attempt]
        assert delivery(endpoint["id"], event.id).status == "succeeded"

    def test_event_type_filter_and_disabled_endpoints(self, client, tenant_admin, sandbox_provider, settings):
        wanted, other, off = Receiver().start(), Receiver().start(), Receiver().start()
        try:
            create_endpoint(client, tenant_admin, wanted, eventTypes=["integration.created"])
            create_endpoint(client, tenant_admin, other, eventTypes=["connection.expired"])
            create_endpoint(client, tenant_admin, off, enabled=False)
            emit(client, tenant_admin, sandbox_provider["id"])
            worker(settings).drain_sync()
        finally:
            for r in (wanted, other, off):
                r.stop()
        assert [d.body["type"] for d in wanted.deliveries] == ["integration.created"]
        assert other.deliveries == [] and off.deliveries == []

    def test_retry_table_against_a_receiver_failing_three_times(self, client, tenant_admin, sandbox_provider,
                                                                 receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        receiver.fail(3, 500, body=b"nope")
        emit(client, tenant_admin, sandbox_provider["id"])

        worker(settings, schedule="0,0,0,0,0").drain_sync()

        ids = receiver.ids()
        assert len(ids) == 1 and list(ids.values()) == [4]  # the same webhook-id on every retry
        assert all(d.verified_with == [endpoint["secret"]] for d in receiver.deliveries)
        log = attempts(client, tenant_admin, endpoint["id"])
        assert [(a["attemptNumber"], a["status"], a["responseStatus"], a["errorKind"], a["responseBody"])
                for a in log] == [(4, "succeeded", 200, None, "ok"), (3, "failed", 500, "http_status", "nope"),
                                  (2, "failed", 500, "http_status", "nope"), (1, "failed", 500, "http_status", "nope")]
        assert [a["nextAttemptAt"] is not None for a in log] == [False, True, True, True]
        assert [a["attemptNumber"] for a in attempts(client, tenant_admin, endpoint["id"], status="failed")] == [3, 2, 1]
        first_page = client.get(f"{ENDPOINTS}/{endpoint['id']}/attempts", params={"limit": 3},
                                headers=tenant_admin.headers).json()
        assert first_page["hasMore"] is True and [a["attemptNumber"] for a in first_page["items"]] == [4, 3, 2]
        rest = attempts(client, tenant_admin, endpoint["id"], limit=3, cursor=first_page["nextCursor"])
        assert [a["attemptNumber"] for a in rest] == [1]

    def test_svix_schedule_with_jitter_then_exhausted(self, client, tenant_admin, sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        receiver.fail(100, 500)
        emit(client, tenant_admin, sandbox_provider["id"])
        clock = Clock()
        run = worker(settings, schedule=",".join(map(str, SVIX)), clock=clock)

        for step, delay in enumerate(SVIX[1:] + (None,), start=1):
            assert run.drain_sync() == 1
            [last, *_] = attempts(client, tenant_admin, endpoint["id"])
            assert last["attemptNumber"] == step
            if delay is None:
                assert last["nextAttemptAt"] is None
                break
            waited = (datetime.fromisoformat(last["nextAttemptAt"].replace("Z", "+00:00"))
                      - datetime.fromisoformat(last["attemptedAt"].replace("Z", "+00:00"))).total_seconds()
            assert 0.8 * delay - 0.001 <= waited <= 1.2 * delay + 0.001, (step, delay, waited)
            assert run.drain_sync() == 0  # not due before its time
            clock.now += timedelta(seconds=waited + 0.001)
        assert len(receiver.deliveries) == 8
        [event] = tenant_events(tenant_admin, "integration.created")
        assert delivery(endpoint["id"], event.id).status == "exhausted"

    def test_429_with_retry_after_waits_at_least_that(self, client, tenant_admin, sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        receiver.fail(1, 429, headers={"Retry-After": "3600"})
        emit(client, tenant_admin, sandbox_provider["id"])
        clock = Clock()
        run = worker(settings, schedule=",".join(map(str, SVIX)), clock=clock)

        run.drain_sync()
        [first] = attempts(client, tenant_admin, endpoint["id"])
        next_at = datetime.fromisoformat(first["nextAttemptAt"].replace("Z", "+00:00"))
        assert (first["responseStatus"], first["errorKind"]) == (429, "http_status")
        assert (next_at - clock.now).total_seconds() >= 3600  # not the schedule's 5 s
        clock.now += timedelta(seconds=3599)
        assert run.drain_sync() == 0
        clock.now = next_at
        assert run.drain_sync() == 1 and receiver.deliveries[-1].answered == 200

    def test_410_gone_disables_the_endpoint_at_once(self, client, tenant_admin, sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        receiver.fail(1, 410)
        emit(client, tenant_admin, sandbox_provider["id"])

        worker(settings, schedule="0,0,0,0").drain_sync()

        assert len(receiver.deliveries) == 1
        shown = client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers).json()
        assert (shown["enabled"], shown["disabledReason"]) == (False, "the endpoint answered 410 Gone")
        [disabled] = tenant_events(tenant_admin, "webhook_endpoint.disabled")
        assert disabled.data == shown and disabled.actor == {"type": "system", "id": None, "role": None}
        assert_audited(endpoint["id"], "webhook_endpoint.disable")
        [event] = tenant_events(tenant_admin, "integration.created")
        assert delivery(endpoint["id"], event.id).status == "failed"
        emit(client, tenant_admin, sandbox_provider["id"])  # a disabled endpoint gets nothing
        worker(settings).drain_sync()
        assert len(receiver.deliveries) == 1

        again = client.patch(f"{ENDPOINTS}/{endpoint['id']}", json={"enabled": True}, headers=tenant_admin.headers)
        assert again.status_code == 200
        assert (again.json()["enabled"], again.json()["disabledReason"]) == (True, None)

    def test_failing_for_five_days_disables_the_endpoint(self, client, tenant_admin, sandbox_provider, receiver,
                                                         settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        receiver.fail(100, 503)
        emit(client, tenant_admin, sandbox_provider["id"])
        clock = Clock()
        run = worker(settings, schedule="0,60,60,60,60", clock=clock)

        run.drain_sync()
        started = client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers).json()
        assert started["enabled"] is True and started["failingSince"] is not None
        clock.now += timedelta(days=4, hours=23)
        run.drain_sync()
        assert client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers).json()["enabled"] is True
        clock.now += timedelta(hours=1, seconds=1)
        run.drain_sync()

        shown = client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers).json()
        assert (shown["enabled"], shown["disabledReason"]) == (False, "every attempt failed for 5 days")
        assert [e.data for e in tenant_events(tenant_admin, "webhook_endpoint.disabled")] == [shown]
        assert_audited(endpoint["id"], "webhook_endpoint.disable")

    def test_ssrf_guard_refuses_at_send(self, client, tenant_admin, sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        emit(client, tenant_admin, sandbox_provider["id"])

        # The allowlist no longer lets loopback through (changed after the endpoint was saved).
        worker(settings, schedule="0", policy=OutboundPolicy(allowlist=())).drain_sync()

        assert receiver.deliveries == []
        [attempt] = attempts(client, tenant_admin, endpoint["id"])
        assert (attempt["status"], attempt["errorKind"], attempt["responseStatus"]) == ("failed", "ssrf_refused", None)
        assert "127.0.0.1" in attempt["error"]

    def test_connect_error_and_3xx_are_failures(self, client, tenant_admin, sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        receiver.fail(1, 302, headers={"Location": receiver.url})
        emit(client, tenant_admin, sandbox_provider["id"])
        worker(settings, schedule="0").drain_sync()
        [redirected] = attempts(client, tenant_admin, endpoint["id"])
        assert (redirected["status"], redirected["responseStatus"], redirected["errorKind"]) == ("failed", 302, "http_status")
        assert len(receiver.deliveries) == 1  # the redirect was not followed

        receiver.stop()
        emit(client, tenant_admin, sandbox_provider["id"])
        worker(settings, schedule="0").drain_sync()
        [refused, _] = attempts(client, tenant_admin, endpoint["id"])
        assert (refused["status"], refused["responseStatus"], refused["errorKind"]) == ("failed", None, "connect_error")


class TestRotateWebhookSecret:
    def test_both_secrets_verify_during_the_grace_only_the_new_one_after(self, client, tenant_admin, sandbox_provider,
                                                                          receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        rotated = client.post(f"{ENDPOINTS}/{endpoint['id']}/secret/rotate", json={"gracePeriodSeconds": 3600},
                              headers=tenant_admin.headers)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != endpoint["secret"] and new.startswith("whsec_")
        expires = datetime.fromisoformat(rotated.json()["previousSecretExpiresAt"].replace("Z", "+00:00"))
        assert timedelta(minutes=59) < expires - datetime.now(timezone.utc) <= timedelta(hours=1)
        receiver.secrets.append(new)

        emit(client, tenant_admin, sandbox_provider["id"])
        clock = Clock()
        worker(settings, clock=clock).drain_sync()
        during = receiver.deliveries[-1]
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert sorted(during.verified_with) == sorted([endpoint["secret"], new])

        clock.now = expires + timedelta(seconds=1)
        emit(client, tenant_admin, sandbox_provider["id"])
        worker(settings, clock=clock).drain_sync()
        after = receiver.deliveries[-1]
        assert len(after.headers["webhook-signature"].split(" ")) == 1 and after.verified_with == [new]

    def test_without_a_body_the_grace_is_the_default_day(self, client, tenant_admin):
        endpoint = create_endpoint(client, tenant_admin)
        response = client.post(f"{ENDPOINTS}/{endpoint['id']}/secret/rotate", headers=tenant_admin.headers)
        assert response.status_code == 200, response.text
        expires = datetime.fromisoformat(response.json()["previousSecretExpiresAt"].replace("Z", "+00:00"))
        assert timedelta(hours=23, minutes=59) < expires - datetime.now(timezone.utc) <= timedelta(hours=24)
        [event] = tenant_events(tenant_admin, "webhook_endpoint.updated")
        assert event.data["id"] == endpoint["id"] and "secret" not in str(event.data)
        assert_audited(endpoint["id"], "webhook_endpoint.rotate_secret")

    def test_grace_is_at_most_a_day(self, client, tenant_admin):
        endpoint = create_endpoint(client, tenant_admin)
        response = client.post(f"{ENDPOINTS}/{endpoint['id']}/secret/rotate", json={"gracePeriodSeconds": 86401},
                               headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR")


class TestReplay:
    def test_resend_sends_the_same_message_again(self, client, tenant_admin, sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        emit(client, tenant_admin, sandbox_provider["id"])
        worker(settings).drain_sync()
        [event] = tenant_events(tenant_admin, "integration.created")

        response = client.post(f"{ENDPOINTS}/{endpoint['id']}/messages/{event.id}/resend", headers=tenant_admin.headers)

        assert response.status_code == 202, response.text
        assert response.json() | {"nextAttemptAt": None} == {"endpointId": endpoint["id"], "eventId": event.id,
                                                              "status": "pending", "nextAttemptAt": None}
        worker(settings).drain_sync()
        assert receiver.ids() == {event.id: 2}
        assert receiver.deliveries[0].raw == receiver.deliveries[1].raw
        assert [(a["attemptNumber"], a["trigger"]) for a in attempts(client, tenant_admin, endpoint["id"])] == [
            (2, "manual"), (1, "scheduled")]

    def test_recover_requeues_the_failed_messages_of_the_window(self, client, tenant_admin, sandbox_provider, receiver,
                                                                settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        since = datetime.now(timezone.utc) - timedelta(seconds=1)
        receiver.fail(3, 500)
        for _ in range(3):
            emit(client, tenant_admin, sandbox_provider["id"])
        worker(settings, schedule="0").drain_sync()  # one try each: exhausted
        ids = [e.id for e in tenant_events(tenant_admin, "integration.created")]
        assert {delivery(endpoint["id"], i).status for i in ids} == {"exhausted"}

        response = client.post(f"{ENDPOINTS}/{endpoint['id']}/recover",
                               json={"since": since.isoformat().replace("+00:00", "Z")}, headers=tenant_admin.headers)

        assert response.status_code == 202 and response.json() == {"recovered": 3, "truncated": False}
        worker(settings, schedule="0").drain_sync()
        assert receiver.ids() == {i: 2 for i in ids}
        assert {delivery(endpoint["id"], i).status for i in ids} == {"succeeded"}
        assert_audited(endpoint["id"], "webhook_message.recover")
        empty = client.post(f"{ENDPOINTS}/{endpoint['id']}/recover",
                            json={"since": since.isoformat().replace("+00:00", "Z")}, headers=tenant_admin.headers)
        assert empty.json() == {"recovered": 0, "truncated": False}

    def test_recover_window_must_be_ordered(self, client, tenant_admin):
        endpoint = create_endpoint(client, tenant_admin)
        response = client.post(f"{ENDPOINTS}/{endpoint['id']}/recover",
                               json={"since": "2026-12-01T10:00:00Z", "until": "2026-12-01T09:00:00Z"},
                               headers=tenant_admin.headers)
        assert_error(response, 400, "VALIDATION_ERROR", message="since must be before until",
                     details={"field": "since"})


class TestSendWebhookTest:
    def test_answers_with_the_attempt_and_the_receiver_gets_webhook_test(self, client, tenant_admin, receiver):
        endpoint = create_endpoint(client, tenant_admin, receiver)
        shown = client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers).json()

        response = client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        [event] = tenant_events(tenant_admin, "webhook.test")
        assert response.json() | {"id": None, "attemptedAt": None, "durationMs": None} == {
            "id": None, "endpointId": endpoint["id"], "eventId": event.id, "eventType": "webhook.test",
            "attemptNumber": 1, "trigger": "test", "status": "succeeded", "attemptedAt": None,
            "responseStatus": 200, "responseBody": "ok", "durationMs": None, "errorKind": None, "error": None,
            "nextAttemptAt": None}
        [got] = receiver.of_type("webhook.test")
        assert got.verified_with == [endpoint["secret"]] and got.body["data"] == shown == event.data
        assert "secret" not in got.raw.decode()

    def test_a_failed_test_send_is_retried_on_schedule(self, client, tenant_admin, receiver):
        endpoint = create_endpoint(client, tenant_admin, receiver)
        receiver.fail(1, 500)
        response = client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=tenant_admin.headers)
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["errorKind"]) == ("failed", "http_status")
        assert response.json()["nextAttemptAt"] is not None


class TestDeleteWebhookEndpoint:
    def test_deleting_cancels_pending_deliveries(self, client, tenant_admin, sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        emit(client, tenant_admin, sandbox_provider["id"])
        [event] = tenant_events(tenant_admin, "integration.created")

        assert client.delete(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers).status_code == 204

        assert delivery(endpoint["id"], event.id).status == "cancelled"
        worker(settings).drain_sync()
        assert receiver.deliveries == []
        gone = client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers)
        assert_error(gone, 404, "WEBHOOK_ENDPOINT_NOT_FOUND",
                     message=f"Webhook endpoint {endpoint['id']} not found", details=None)
        [deleted] = tenant_events(tenant_admin, "webhook_endpoint.deleted")
        assert deleted.data["id"] == endpoint["id"]


class TestTenantIsolation:
    def test_another_tenants_endpoint_and_event_ids_answer_404(self, client, tenant_admin, other_tenant_admin,
                                                               sandbox_provider, receiver, settings):
        endpoint = create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        emit(client, tenant_admin, sandbox_provider["id"])
        worker(settings).drain_sync()
        [event] = tenant_events(tenant_admin, "integration.created")
        theirs = create_endpoint(client, other_tenant_admin)
        calls = [("GET", f"{ENDPOINTS}/{endpoint['id']}", None), ("PATCH", f"{ENDPOINTS}/{endpoint['id']}", {"enabled": False}),
                 ("DELETE", f"{ENDPOINTS}/{endpoint['id']}", None), ("POST", f"{ENDPOINTS}/{endpoint['id']}/secret/rotate", {}),
                 ("GET", f"{ENDPOINTS}/{endpoint['id']}/attempts", None), ("POST", f"{ENDPOINTS}/{endpoint['id']}/test", None),
                 ("POST", f"{ENDPOINTS}/{endpoint['id']}/recover", {"since": "2026-01-01T00:00:00Z"}),
                 ("POST", f"{ENDPOINTS}/{endpoint['id']}/messages/{event.id}/resend", None)]
        for method, url, body in calls:
            response = client.request(method, url, json=body, headers=other_tenant_admin.headers)
            assert_error(response, 404, "WEBHOOK_ENDPOINT_NOT_FOUND",
                         message=f"Webhook endpoint {endpoint['id']} not found", details=None)
        for url in (f"/api/v1/webhooks/messages/{event.id}/attempts",
                    f"{ENDPOINTS}/{theirs['id']}/messages/{event.id}/resend"):
            method = "GET" if url.endswith("attempts") else "POST"
            response = client.request(method, url, headers=other_tenant_admin.headers)
            assert_error(response, 404, "NOT_FOUND", message=f"Event {event.id} not found", details=None)
        assert client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=tenant_admin.headers).json()["enabled"] is True
        assert len(receiver.deliveries) == 1

    def test_a_tenants_events_never_reach_another_tenants_endpoints(self, client, tenant_admin, other_tenant_admin,
                                                                    sandbox_provider, settings):
        ours, theirs = Receiver().start(), Receiver().start()
        try:
            create_endpoint(client, tenant_admin, ours)
            their_endpoint = create_endpoint(client, other_tenant_admin, theirs)
            emit(client, tenant_admin, sandbox_provider["id"])
            worker(settings).drain_sync()
        finally:
            ours.stop()
            theirs.stop()
        assert {d.body["type"] for d in ours.deliveries} >= {"integration.created"}
        assert [(d.body["type"], d.body["data"]["id"]) for d in theirs.deliveries] == [
            ("webhook_endpoint.created", their_endpoint["id"])]


class TestObservability:
    def test_metrics_and_health_report_attempts_and_backlog(self, client, tenant_admin, sandbox_provider, receiver,
                                                            settings):
        create_endpoint(client, tenant_admin, receiver, eventTypes=["integration.created"])
        emit(client, tenant_admin, sandbox_provider["id"])
        health = client.get("/health").json()["webhooks"]
        assert health["pendingDeliveries"] >= 1 and health["oldestPendingAgeSeconds"] >= 0
        worker(settings).drain_sync()

        metrics = client.get("/metrics").text
        assert 'hub_webhook_attempts_total{outcome="succeeded"}' in metrics
        assert "hub_webhook_attempt_duration_seconds_bucket" in metrics
        assert "hub_webhook_pending_deliveries " in metrics and "hub_webhook_oldest_pending_age_seconds " in metrics


def assert_audited(resource_id: str, action: str) -> None:
    with transaction() as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.resource_id == resource_id,
                                                     AuditEntry.action == action)).all()
    assert len(rows) == 1, (action, rows)
