"""The webhook sender against a real loopback receiver: what reaches the receiver, what the attempt records."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid

import pytest
import uvicorn

from connectors.outbound import OutboundPolicy
from connectors.webhook_sender import WebhookSender, send_now
from persistence.deliveries import RESPONSE_BODY_LIMIT, Job
from tests.webhook_receiver import Receiver

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOOPBACK = OutboundPolicy(allowlist=("127.0.0.1",))


@pytest.fixture
def receiver():
    started = Receiver(secrets=[SECRET]).start()
    yield started
    started.stop()


def job(url: str, event_id: str | None = None) -> Job:
    return Job(delivery_id=uuid.uuid4(), tenant_id=uuid.uuid4(), endpoint_id=uuid.uuid4(),
               event_id=event_id or f"evt_{uuid.uuid4().hex[:26]}", event_type="webhook.test", url=url,
               secrets=(SECRET,), body='{"type":"webhook.test","timestamp":"2026-12-02T00:00:00.000000Z","data":{}}',
               attempt_number=1, trigger="test")


def test_the_receiver_gets_the_signed_body_with_the_endpoints_host(receiver):
    result = send_now(job(receiver.url + "?tenant=a"), LOOPBACK, https_only=False)

    assert (result.succeeded, result.response_status, result.response_body, result.error_kind) == (True, 200, "ok", None)
    [delivery] = receiver.deliveries
    assert delivery.verified_with == [SECRET]
    assert delivery.headers["host"] == receiver.url.split("/")[2]
    assert delivery.headers["webhook-id"] == result.job.event_id
    assert delivery.headers["user-agent"] == "IntegrationHub-Webhooks/1.0"
    assert "cookie" not in delivery.headers
    assert delivery.body == {"type": "webhook.test", "timestamp": "2026-12-02T00:00:00.000000Z", "data": {}}


def test_only_the_first_8_kib_of_the_answer_is_kept(receiver):
    receiver.fail(1, 500, body=b"x" * (3 * RESPONSE_BODY_LIMIT))

    result = send_now(job(receiver.url), LOOPBACK, https_only=False)

    assert (result.response_status, result.error_kind, result.error) == (500, "http_status", "HTTP 500")
    assert result.response_body == "x" * RESPONSE_BODY_LIMIT


def test_cookies_set_by_a_receiver_are_not_sent_back(receiver):
    receiver.fail(1, 200, headers={"Set-Cookie": "session=abc; Path=/"})

    async def twice():
        async with WebhookSender(LOOPBACK, https_only=False, max_connections=2) as sender:
            return [await sender.send(job(receiver.url)) for _ in range(2)]

    assert [r.response_status for r in asyncio.run(twice())] == [200, 200]
    assert ["cookie" in d.headers for d in receiver.deliveries] == [False, False]


def test_refusals_reach_nobody(receiver):
    https_only = send_now(job(receiver.url), LOOPBACK, https_only=True)
    not_allowed = send_now(job(receiver.url), OutboundPolicy(), https_only=False)

    assert (https_only.error_kind, https_only.error) == ("ssrf_refused", "webhook endpoints must use https")
    assert not_allowed.error_kind == "ssrf_refused" and "127.0.0.1" in not_allowed.error
    assert receiver.deliveries == []


def test_a_closed_port_is_a_connect_error(receiver):
    url = receiver.url
    receiver.stop()

    result = send_now(job(url), LOOPBACK, https_only=False)

    assert (result.response_status, result.error_kind) == (None, "connect_error")


def test_a_long_answer_on_a_kept_alive_connection_leaves_the_next_attempt_whole():
    answered = []

    async def app(scope, receive, send):  # keep-alive receiver: every other answer is 30 KB
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        answered.append(len(answered) + 1)
        body = b"L" * 30_000 if len(answered) % 2 else f"short {len(answered)}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           interface="asgi3"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)

    async def four():
        async with WebhookSender(LOOPBACK, https_only=False, max_connections=1) as sender:
            return [await sender.send(job(f"http://127.0.0.1:{port}/hooks")) for _ in range(4)]

    try:
        bodies = [r.response_body for r in asyncio.run(four())]
    finally:
        server.should_exit = True
    assert bodies == ["L" * RESPONSE_BODY_LIMIT, "short 2", "L" * RESPONSE_BODY_LIMIT, "short 4"]
