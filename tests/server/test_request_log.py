"""The one log line per request carries requestId, operationId and tenantId in both formats
(server/request_log.py, server/observability.py; README "Configuration": HUB_LOG_FORMAT)."""

from __future__ import annotations

import json
import logging

import pytest

from server.observability import formatter


@pytest.fixture
def request_records(caplog):
    caplog.set_level(logging.INFO, logger="hub.request")
    return lambda: [record for record in caplog.records if record.name == "hub.request"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_request_line_names_request_operation_and_tenant(client, tenant_admin, request_records, log_format):
    response = client.get("/api/v1/auth/me", headers=tenant_admin.headers)
    assert response.status_code == 200
    request_id = response.headers["X-Request-ID"]

    record = next(r for r in request_records() if getattr(r, "requestId", None) == request_id)
    line = formatter(log_format).format(record)

    if log_format == "json":
        fields = json.loads(line)
        assert (fields["requestId"], fields["operationId"], fields["tenantId"]) == (request_id, "get_me", tenant_admin.tenant_id)
    else:
        assert "\n" not in line
        assert f"GET /api/v1/auth/me 200 " in line
        assert f"requestId={request_id} operationId=get_me tenantId={tenant_admin.tenant_id}" in line


def test_an_unrouted_anonymous_request_says_so_in_text(client, request_records):
    response = client.get("/api/v1/no-such-thing")
    request_id = response.headers["X-Request-ID"]

    record = next(r for r in request_records() if getattr(r, "requestId", None) == request_id)

    assert formatter("text").format(record).endswith(f"requestId={request_id} operationId=unrouted tenantId=-")


def test_a_json_line_has_its_time_to_the_microsecond_across_seconds_and_any_field_as_text():
    import uuid

    json_formatter = formatter("json")
    tenant = uuid.uuid4()
    lines = []
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5):
        record = logging.LogRecord("hub.request", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
        record.created = created
        record.requestId, record.tenantId, record.durationMs = "r-1", tenant, 1.5
        lines.append(json.loads(json_formatter.format(record)))
    assert [line["time"] for line in lines] == [
        "2023-11-14T22:13:20.250000Z", "2023-11-14T22:13:20.750000Z", "2023-11-14T22:13:21.500000Z"]
    assert lines[0] | {"time": None} == {"time": None, "level": "info", "logger": "hub.request", "message": "GET /x",
                                         "requestId": "r-1", "durationMs": 1.5, "tenantId": str(tenant)}
