"""Database outages (PostgreSQL only): dropped connections, a stopped server, and recovery.

- Connections killed by the server (restart, failover, idle timeout) are replaced by the pool's
  pre-ping: the next request succeeds, even when the kill happens in the middle of a request.
- While the server is down, a request answers 503 SERVICE_UNAVAILABLE (Retry-After, error
  envelope) and writes nothing; GET /health answers 503 unhealthy with the database down.
- Once the server is back, the next request succeeds without restarting the hub.

The server is always started again (`finally`), so the rest of the run is unaffected.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry, IdempotencyRecord, Integration
from tests import factories

INTEGRATIONS = "/api/v1/tenant/integrations"
BOUNDED_SECONDS = 15  # a request during an outage must answer well within this
UNAVAILABLE = {"code": "SERVICE_UNAVAILABLE", "message": "The database is unavailable; retry shortly", "retryAfter": 5}


@pytest.fixture(autouse=True)
def postgresql_only(db_kind, pg_cluster):
    if db_kind != "postgresql":
        pytest.skip("outage tests stop and restart the database server: PostgreSQL only (run with --db postgresql)")


def terminate_backends(pg_cluster) -> int:
    """Kill every server process of `hub_test` but this one (what a failover does); return how many."""
    import psycopg

    with psycopg.connect(pg_cluster.conninfo(), autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = 'hub_test' AND pid <> pg_backend_pid()").fetchall()
    return sum(1 for (killed,) in rows if killed)


def integrations_named(tenant_id: str, name: str) -> list[Integration]:
    with transaction() as session:
        return list(session.exec(select(Integration).where(Integration.tenant_id == uuid.UUID(tenant_id),
                                                           Integration.name == name)).all())


def audited_creations(tenant_id: str) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.tenant_id == uuid.UUID(tenant_id),
                                                          AuditEntry.action == "integration.create")).all())


def assert_unavailable(response) -> None:
    """Assert the 503 of a request made while the database is down."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"error": UNAVAILABLE | {"requestId": response.headers["X-Request-ID"]}}


@pytest.fixture
def provider(client, super_admin) -> dict:
    return factories.create_provider(client, super_admin)


@pytest.fixture
def outage(pg_cluster):
    """Stop the database server for the test's `with` block, and always start it again."""

    class Outage:
        def __enter__(self):
            pg_cluster.server_stop()
            return self

        def __exit__(self, *exc):
            pg_cluster.server_start()

    try:
        yield Outage()
    finally:
        pg_cluster.server_start()  # does nothing when it is running


class TestDroppedConnections:
    def test_next_request_succeeds_after_connections_are_killed(self, client, pg_cluster, tenant_admin, provider):
        for _ in range(3):  # the pool now holds connections
            assert client.get(INTEGRATIONS, headers=tenant_admin.headers).status_code == 200

        killed = terminate_backends(pg_cluster)
        listed = client.get(INTEGRATIONS, headers=tenant_admin.headers)
        created = client.post(INTEGRATIONS, json={"integrationId": provider["id"], "name": factories.unique("After ")},
                              headers=tenant_admin.headers)
        health = client.get("/health")

        assert killed >= 1
        assert listed.status_code == 200, listed.text
        assert created.status_code == 201, created.text
        assert health.status_code == 200 and health.json()["checks"] == {"database": "up"}

    def test_every_pooled_connection_is_replaced(self, client, pg_cluster, tenant_admin):
        assert client.get(INTEGRATIONS, headers=tenant_admin.headers).status_code == 200
        for _ in range(3):
            terminate_backends(pg_cluster)

            responses = [client.get(INTEGRATIONS, headers=tenant_admin.headers) for _ in range(5)]

            assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]

    def test_connections_killed_in_the_middle_of_a_request(self, client, pg_cluster, super_admin, tenant_admin):
        """Connecting an integration reads, calls the provider, then writes: the kill lands in the call."""
        killed = []

        class KillingProvider(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                killed.append(terminate_backends(pg_cluster))
                body = json.dumps({"id": "usr_1"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), KillingProvider)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            provider = factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(
                base, authType="api_key", oauthConfig=None))
            integration = factories.enable_integration(client, tenant_admin, provider["id"])

            response = client.post(f"{INTEGRATIONS}/{integration['id']}/connect/api-key", json={"apiKey": "any-key"},
                                   headers=tenant_admin.headers)
        finally:
            server.shutdown()
            server.server_close()

        assert killed and killed[0] >= 1, killed
        assert response.status_code == 200, response.text
        after = client.get(f"{INTEGRATIONS}/{integration['id']}", headers=tenant_admin.headers)
        assert after.json()["status"] == "connected", after.text


class TestServerDown:
    def test_mutation_answers_503_and_writes_nothing(self, client, tenant_admin, provider, outage):
        body = {"integrationId": provider["id"], "name": factories.unique("During outage ")}
        with outage:
            started = time.monotonic()
            response = client.post(INTEGRATIONS, json=body, headers=tenant_admin.headers)
            elapsed = time.monotonic() - started

        assert_unavailable(response)
        assert elapsed < BOUNDED_SECONDS
        assert integrations_named(tenant_admin.tenant_id, body["name"]) == []
        assert audited_creations(tenant_admin.tenant_id) == []

    def test_reads_answer_503(self, client, tenant_admin, outage):
        with outage:
            listed = client.get(INTEGRATIONS, headers=tenant_admin.headers)
            report = client.get("/health/integrations", headers=tenant_admin.headers)

        assert_unavailable(listed)
        assert_unavailable(report)

    def test_login_answers_503(self, client, tenant_admin, outage):
        with outage:
            response = client.post("/api/v1/auth/login", json={"email": tenant_admin.email,
                                                                "password": tenant_admin.password})

        assert_unavailable(response)

    def test_health_reports_the_database_down(self, client, outage):
        with outage:
            started = time.monotonic()
            response = client.get("/health")
            elapsed = time.monotonic() - started

        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        body = response.json()
        assert (body["status"], body["checks"]) == ("unhealthy", {"database": "down"})
        assert set(body) == {"status", "checks", "timestamp"}
        assert elapsed < BOUNDED_SECONDS

    def test_next_request_after_restart_succeeds(self, client, tenant_admin, provider, outage):
        body = {"integrationId": provider["id"], "name": factories.unique("After restart ")}
        with outage:
            assert client.get("/health").status_code == 503

        health = client.get("/health")
        created = client.post(INTEGRATIONS, json=body, headers=tenant_admin.headers)

        assert health.status_code == 200 and health.json()["status"] == "healthy", health.text
        assert created.status_code == 201, created.text
        assert [str(row.id) for row in integrations_named(tenant_admin.tenant_id, body["name"])] == [created.json()["id"]]

    def test_retry_with_the_same_idempotency_key_runs_after_the_outage(self, client, tenant_admin, provider, outage):
        body = {"integrationId": provider["id"], "name": factories.unique("Retried ")}
        headers = tenant_admin.headers | {"Idempotency-Key": factories.unique("outage-")}
        with outage:
            failed = client.post(INTEGRATIONS, json=body, headers=headers)

        retried = client.post(INTEGRATIONS, json=body, headers=headers)

        assert_unavailable(failed)
        assert retried.status_code == 201, retried.text
        assert "Idempotent-Replayed" not in retried.headers
        assert len(integrations_named(tenant_admin.tenant_id, body["name"])) == 1
        with transaction() as session:
            row = session.exec(select(IdempotencyRecord).where(
                IdempotencyRecord.key == headers["Idempotency-Key"])).one()
        assert (row.state, row.response_status) == ("done", 201)
