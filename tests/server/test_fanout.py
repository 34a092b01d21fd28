"""The Redis wake-up of a commit (`server.fanout`): published from the committing thread, never from the event loop.

A `@local_write` handler commits on the event loop on SQLite (server/pipeline.py); its commit's
Redis publish is a network call the loop must not wait for, so it goes to a worker thread. A
commit in a worker thread publishes there, before the commit returns. A real Redis server; the
client records the thread of each publish.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis

from server import fanout
from tests.redis_server import redis_or_skip


class RecordingRedis(redis.Redis):
    """A Redis client that notes the thread of each `publish`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.publishers: list[int] = []

    def publish(self, channel, message, **kwargs):
        self.publishers.append(threading.get_ident())
        return super().publish(channel, message, **kwargs)


@pytest.fixture
def publisher(monkeypatch):
    with redis_or_skip("realtime") as server:
        client = RecordingRedis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        subscriber = redis.Redis.from_url(server.url).pubsub(ignore_subscribe_messages=True)
        subscriber.subscribe(fanout.REDIS_CHANNEL)
        monkeypatch.setattr(fanout, "_publisher", client)
        try:
            yield client, subscriber
        finally:
            subscriber.close()
            client.close()


def _received(subscriber, deadline_s: float = 10) -> list[str]:
    messages, deadline = [], time.monotonic() + deadline_s
    while not messages and time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.1)
        if message is not None:
            messages.append(message["data"].decode())
    return messages


def test_a_commit_on_the_event_loop_publishes_from_a_worker_thread(publisher):
    client, subscriber = publisher
    tenant = uuid.uuid4()

    async def commit_on_the_loop() -> int:
        fanout._on_commit({tenant})
        return threading.get_ident()

    loop_thread = asyncio.run(commit_on_the_loop())
    assert _received(subscriber) == [str(tenant)]
    assert len(client.publishers) == 1 and client.publishers[0] != loop_thread


def test_a_commit_in_a_worker_thread_publishes_there_before_returning(publisher):
    client, subscriber = publisher
    tenant = uuid.uuid4()
    fanout._on_commit({tenant})
    assert client.publishers == [threading.get_ident()]
    assert _received(subscriber) == [str(tenant)]
