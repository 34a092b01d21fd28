"""Operations of tag `health` (/health, /health/integrations, /metrics at the root path), and the
one structured log line per request (logger `hub.request`, server/observability.py)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from server import runtime
from server.observability import REQUEST_FIELDS, JsonFormatter
from tests import factories
from tests.handlers.test_tenant_integrations import RFC3339_UTC, assert_error, assert_forbidden, item_url

HEALTH = "/health"
INTEGRATIONS_HEALTH = "/health/integrations"
METRICS = "/metrics"
HEALTH_KEYS = {"integrationId", "tenantId", "name", "provider", "status", "connectionStatus", "health",
               "responseTime", "lastCheck", "error"}
METRICS_TOKEN = "metrics-token-for-tests-" + "m" * 16


def health_report(client, account: factories.Account) -> dict:
    response = client.get(INTEGRATIONS_HEALTH, headers=account.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "checkedAt", "integrations"}
    assert RFC3339_UTC.match(body["checkedAt"]), body["checkedAt"]
    return body


def entry(report: dict, integration_id: str) -> dict:
    matches = [item for item in report["integrations"] if item["integrationId"] == integration_id]
    assert len(matches) == 1, report
    return matches[0]


def run_connection_test(client, admin: factories.Account, integration_id: str) -> dict:
    response = client.post(item_url(integration_id, "/connection/test"), headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()



def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Parse the Prometheus text format into {(sample name, sorted labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def registry_samples() -> dict[tuple[str, tuple], float]:
    """The process's metrics as /metrics would expose them (read from the registry itself)."""
    return metric_samples(generate_latest(REGISTRY).decode())


@pytest.fixture
def sandbox_api_key_provider(client, super_admin, sandbox) -> dict:
    """A tenant-catalog provider on the sandbox that connects with an API key."""
    return factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(
        sandbox.base_url, authType="api_key", oauthConfig=None))


@pytest.fixture
def enable(client, sandbox_api_key_provider):
    """Enable the sandbox provider for an account's tenant; `connect=True` also connects it."""

    def _enable(admin: factories.Account, *, connect: bool = False) -> dict:
        integration = factories.enable_integration(client, admin, sandbox_api_key_provider["id"])
        if connect:
            response = client.post(item_url(integration["id"], "/connect/api-key"), json={"apiKey": "sandbox-api-key"},
                                   headers=admin.headers)
            assert response.status_code == 200, response.text
        return integration

    return _enable


@pytest.fixture
def request_log():
    """Collect the records of logger `hub.request` (at INFO) for the duration of the test."""

    class Collector(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    logger = logging.getLogger("hub.request")
    collector, level = Collector(), logger.level
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    yield collector.records
    logger.removeHandler(collector)
    logger.setLevel(level)


class TestGetHealth:
    def test_healthy_when_the_database_answers(self, client):
        response = client.get(HEALTH)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"status", "checks", "timestamp", "webhooks"}
        assert (body["status"], body["checks"]) == ("healthy", {"database": "up"})
        assert set(body["webhooks"]) == {"workerLastHeartbeat", "workerStatus", "pendingDeliveries",
                                         "oldestPendingAgeSeconds"}
        assert RFC3339_UTC.match(body["timestamp"]), body["timestamp"]
        assert "Retry-After" not in response.headers
        assert response.headers["X-Request-ID"]

    def test_needs_no_token(self, client, tenant_admin):
        assert client.get(HEALTH, headers=tenant_admin.headers).status_code == 200
        assert client.get(HEALTH, headers={"Authorization": "Bearer not-a-token"}).status_code == 200


class TestGetIntegrationsHealth:
    def test_unknown_before_any_test(self, client, tenant_admin, enable, sandbox_api_key_provider):
        integration = enable(tenant_admin)

        report = health_report(client, tenant_admin)

        assert report["status"] == "healthy"  # nothing checked, nothing unhealthy
        assert report["integrations"] == [{
            "integrationId": integration["id"], "tenantId": tenant_admin.tenant_id, "name": integration["name"],
            "provider": sandbox_api_key_provider["provider"], "status": "pending", "connectionStatus": None,
            "health": "unknown", "responseTime": None, "lastCheck": None, "error": None}]

    def test_connected_but_untested_is_unknown(self, client, tenant_admin, enable):
        integration = enable(tenant_admin, connect=True)

        item = entry(health_report(client, tenant_admin), integration["id"])

        assert (item["status"], item["connectionStatus"], item["health"], item["lastCheck"]) == (
            "connected", "active", "unknown", None)

    def test_healthy_after_a_successful_test(self, client, tenant_admin, enable):
        integration = enable(tenant_admin, connect=True)
        result = run_connection_test(client, tenant_admin, integration["id"])
        assert result["success"] is True, result

        report = health_report(client, tenant_admin)

        item = entry(report, integration["id"])
        assert set(item) == HEALTH_KEYS
        assert (item["status"], item["connectionStatus"], item["health"], item["error"]) == (
            "connected", "active", "healthy", None)
        assert item["lastCheck"] == result["testedAt"]
        assert isinstance(item["responseTime"], (int, float)) and item["responseTime"] >= 0
        assert report["status"] == "healthy"

    def test_unhealthy_after_a_failed_test(self, client, tenant_admin, enable, sandbox, monkeypatch):
        integration = enable(tenant_admin, connect=True)
        with monkeypatch.context() as patch:
            patch.setattr(sandbox.config, "api_keys", ["only-this-key-now"])
            result = run_connection_test(client, tenant_admin, integration["id"])
        assert result["success"] is False, result

        report = health_report(client, tenant_admin)

        item = entry(report, integration["id"])
        assert (item["status"], item["connectionStatus"], item["health"]) == ("error", "error", "unhealthy")
        assert item["error"] == f"GET {sandbox.base_url}/me answered 401, expected a 2xx"
        assert report["status"] == "unhealthy"

    def test_degraded_when_some_are_unhealthy(self, client, tenant_admin, enable, sandbox, monkeypatch):
        good = enable(tenant_admin, connect=True)
        bad = enable(tenant_admin, connect=True)
        untested = enable(tenant_admin)
        run_connection_test(client, tenant_admin, good["id"])
        with monkeypatch.context() as patch:
            patch.setattr(sandbox.config, "api_keys", ["only-this-key-now"])
            run_connection_test(client, tenant_admin, bad["id"])

        report = health_report(client, tenant_admin)

        assert {item["integrationId"]: item["health"] for item in report["integrations"]} == {
            good["id"]: "healthy", bad["id"]: "unhealthy", untested["id"]: "unknown"}
        assert report["status"] == "degraded"

    def test_lists_only_the_own_tenant(self, client, tenant_admin, other_tenant_admin, enable):
        mine = enable(tenant_admin)
        enable(other_tenant_admin)

        report = health_report(client, tenant_admin)

        assert [item["integrationId"] for item in report["integrations"]] == [mine["id"]]

    def test_super_admin_sees_every_tenant(self, client, super_admin, tenant_admin, other_tenant_admin, enable):
        mine = enable(tenant_admin)
        theirs = enable(other_tenant_admin)

        report = health_report(client, super_admin)

        by_id = {item["integrationId"]: item["tenantId"] for item in report["integrations"]}
        assert by_id[mine["id"]] == tenant_admin.tenant_id
        assert by_id[theirs["id"]] == other_tenant_admin.tenant_id

    def test_works_with_an_api_token(self, client, tenant_admin, enable):
        integration = enable(tenant_admin)
        created = client.post("/api/v1/tenant/api-tokens", json={"name": "monitor", "scopes": ["health:read"]},
                              headers=tenant_admin.headers)
        assert created.status_code == 201, created.text

        response = client.get(INTEGRATIONS_HEALTH, headers={"X-API-Key": created.json()["token"]})

        assert response.status_code == 200, response.text
        assert [item["integrationId"] for item in response.json()["integrations"]] == [integration["id"]]

    def test_plain_user_is_denied(self, client, member):
        response = client.get(INTEGRATIONS_HEALTH, headers=member.headers)

        assert_forbidden(response, "health:read")

    def test_without_token_is_unauthorized(self, client):
        response = client.get(INTEGRATIONS_HEALTH)

        assert_error(response, 401, "NO_TOKEN", details=None)


class TestGetMetrics:
    """The endpoint. What it exposes is also read from the registry directly, so a broken endpoint
    and broken instrumentation fail different tests."""

    def test_loopback_client_gets_the_metrics(self, client, tenant_admin):
        assert client.get(HEALTH).status_code == 200
        assert client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401

        response = client.get(METRICS)

        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.text
        for name in ("hub_http_request_duration_seconds", "hub_auth_failures_total", "hub_rate_limit_hits_total",
                     "hub_outbound_requests_total"):
            assert f"# TYPE {name} " in text, name
        assert 'operation_id="get_health"' in text
        samples = metric_samples(text)
        assert samples[("hub_http_request_duration_seconds_count", (("operation_id", "get_health"), ("status", "200")))] >= 1
        assert samples[("hub_auth_failures_total", (("code", "INVALID_TOKEN"),))] >= 1

    def test_counts_requests_by_operation(self, client, tenant_admin):
        key = ("hub_http_request_duration_seconds_count", (("operation_id", "list_tenant_integrations"), ("status", "200")))
        before = registry_samples().get(key, 0)

        for _ in range(3):
            assert client.get("/api/v1/tenant/integrations", headers=tenant_admin.headers).status_code == 200

        assert registry_samples()[key] == before + 3

    def test_counts_denials_and_rate_limit_hits(self, client, member, tenant_admin, monkeypatch):
        denied = ("hub_auth_failures_total", (("code", "PERMISSION_DENIED"),))
        hits = ("hub_rate_limit_hits_total", (("limit", "connection"),))
        before = registry_samples()
        assert client.get("/api/v1/tenant/users", headers=member.headers).status_code == 403
        monkeypatch.setattr(runtime.get().rate_limits, "scale", 1)
        url = f"/api/v1/tenant/integrations/{uuid.uuid4()}/connection"
        statuses = [client.get(url, headers=tenant_admin.headers).status_code for _ in range(51)]
        monkeypatch.setattr(runtime.get().rate_limits, "scale", 1000)

        after = registry_samples()

        assert statuses[-1] == 429
        assert after[denied] == before.get(denied, 0) + 1
        assert after[hits] == before.get(hits, 0) + 1

    def test_counts_outbound_calls(self, client, tenant_admin, enable):
        key = ("hub_outbound_requests_total", (("host", "127.0.0.1"), ("outcome", "200")))
        before = registry_samples().get(key, 0)
        integration = enable(tenant_admin, connect=True)  # the connect checks the key: one call
        run_connection_test(client, tenant_admin, integration["id"])  # one more

        after = registry_samples()

        assert after[key] == before + 2

    def test_remote_client_is_refused_without_a_metrics_token(self, app):
        remote = TestClient(app, raise_server_exceptions=False, client=("203.0.113.9", 40000))

        response = remote.get(METRICS)

        assert_error(response, 403, "PERMISSION_DENIED",
                     message="Metrics are served to loopback clients only (set HUB_METRICS_TOKEN)", details=None)

    def test_metrics_token_is_required_when_set(self, client, monkeypatch):
        monkeypatch.setattr(runtime.get().settings, "hub_metrics_token", METRICS_TOKEN)

        missing = client.get(METRICS)
        wrong = client.get(METRICS, headers={"Authorization": "Bearer not-the-metrics-token"})
        right = client.get(METRICS, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

        for response in (missing, wrong):
            assert_error(response, 401, "INVALID_TOKEN", message="The metrics token is missing or wrong", details=None)
        assert right.status_code == 200, right.text
        assert "hub_http_request_duration_seconds" in right.text

    def test_metrics_token_also_serves_remote_clients(self, app, monkeypatch):
        monkeypatch.setattr(runtime.get().settings, "hub_metrics_token", METRICS_TOKEN)
        remote = TestClient(app, raise_server_exceptions=False, client=("203.0.113.9", 40000))

        response = remote.get(METRICS, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

        assert response.status_code == 200, response.text


class TestRequestLog:
    def _records_of(self, records, response) -> list[logging.LogRecord]:
        return [r for r in records if getattr(r, "requestId", None) == response.headers["X-Request-ID"]]

    def test_one_line_per_request_with_its_fields(self, client, tenant_admin, request_log):
        response = client.get("/api/v1/tenant/integrations", params={"limit": 5}, headers=tenant_admin.headers)

        records = self._records_of(request_log, response)
        assert len(records) == 1, [r.getMessage() for r in request_log]
        record = records[0]
        assert record.levelno == logging.INFO
        assert {field: getattr(record, field) for field in REQUEST_FIELDS if field != "durationMs"} == {
            "requestId": response.headers["X-Request-ID"], "method": "GET", "path": "/api/v1/tenant/integrations",
            "operationId": "list_tenant_integrations", "status": 200, "tenantId": tenant_admin.tenant_id}
        assert isinstance(record.durationMs, float) and record.durationMs >= 0
        assert "limit=5" not in record.getMessage()  # no query strings (they can carry OAuth codes)

    def test_each_request_logs_once(self, client, tenant_admin, request_log):
        responses = [client.get(HEALTH), client.get("/api/v1/auth/me", headers=tenant_admin.headers),
                     client.get("/api/v1/tenant/users", headers={"Authorization": "Bearer nope"})]

        assert [len(self._records_of(request_log, r)) for r in responses] == [1, 1, 1]

    def test_errors_and_anonymous_calls_are_logged(self, client, member, request_log):
        denied = client.get("/api/v1/tenant/users", headers=member.headers)
        anonymous = client.get(HEALTH)
        unrouted = client.get("/api/v1/no/such/path")

        by_id = {r.requestId: r for r in request_log}
        assert (by_id[denied.headers["X-Request-ID"]].status, by_id[denied.headers["X-Request-ID"]].operationId,
                by_id[denied.headers["X-Request-ID"]].tenantId) == (403, "list_users", member.tenant_id)
        assert (by_id[anonymous.headers["X-Request-ID"]].operationId,
                by_id[anonymous.headers["X-Request-ID"]].tenantId) == ("get_health", None)
        assert (by_id[unrouted.headers["X-Request-ID"]].status, by_id[unrouted.headers["X-Request-ID"]].operationId) == (
            404, "unrouted")

    def test_adopts_the_callers_request_id(self, client, request_log):
        request_id = f"req_{uuid.uuid4().hex[:20]}"

        response = client.get(HEALTH, headers={"X-Request-ID": request_id})

        assert response.headers["X-Request-ID"] == request_id
        assert len(self._records_of(request_log, response)) == 1

    def test_json_formatter_renders_one_object(self, client, tenant_admin, request_log):
        response = client.get("/api/v1/tenant/integrations", headers=tenant_admin.headers)
        record = self._records_of(request_log, response)[0]

        line = JsonFormatter().format(record)

        assert "\n" not in line
        document = json.loads(line)
        assert set(document) >= {"time", "level", "logger", "message", *REQUEST_FIELDS}
        assert (document["level"], document["logger"]) == ("info", "hub.request")
        assert {field: document[field] for field in REQUEST_FIELDS} == {
            field: getattr(record, field) for field in REQUEST_FIELDS}
        assert RFC3339_UTC.match(document["time"]), document["time"]
