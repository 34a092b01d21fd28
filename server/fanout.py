"""Wake-ups for realtime delivery: which tenants have new events in the log, across processes.

Seed: the backend integration guide ("Scaling WebSocket": Redis pub/sub between instances).
A wake-up carries only a tenant id; the event log stays the source of truth (the hub reads it
after each wake-up and also polls it), so a lost wake-up costs latency, never an event.

* In this process: `persistence.events` calls `_on_commit(tenant_ids)` after every commit that
  wrote events; each event loop holding a hub (`register`) is woken thread-safely.
* Other processes, with `REDIS_URL`: the same commit hook publishes each tenant id on the Redis
  channel `hub:events`; every hub subscribes to it (`listen`).
* Other processes on PostgreSQL without Redis: `record_change` issues `pg_notify('hub_events',
  <tenant id>)` inside the writing transaction (delivered at commit); every hub LISTENs.
* SQLite without Redis: no cross-process channel; the hub's poll (`HUB_REALTIME_POLL_SECONDS`)
  finds other processes' events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable

from persistence import event_stream
from persistence import events as event_log
from server.settings import Settings

REDIS_CHANNEL = "hub:events"
_RETRY_SECONDS = (0.5, 1, 2, 5)  # reconnect back-off of the cross-process listener

logger = logging.getLogger("hub.realtime")
Wake = Callable[[set[uuid.UUID] | None], None]  # None: "anything may have changed, read every tenant"

_lock = threading.Lock()
_hubs: dict[int, tuple[asyncio.AbstractEventLoop, Wake]] = {}
_publisher = None  # redis.Redis (sync) when REDIS_URL is set


def install(settings: Settings) -> None:
    """Hook the wake-ups into commits (once per process); with `REDIS_URL`, publish them there too."""
    global _publisher
    if settings.redis_url and _publisher is None:
        import redis

        _publisher = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
    event_log.add_commit_listener(_on_commit)


def register(loop: asyncio.AbstractEventLoop, wake: Wake) -> int:
    """Wake `wake(tenant_ids)` on `loop` after each local commit of events; return a handle for `unregister`."""
    with _lock:
        handle = id(wake)
        _hubs[handle] = (loop, wake)
    return handle


def unregister(handle: int) -> None:
    """Stop waking the hub registered under `handle`."""
    with _lock:
        _hubs.pop(handle, None)


def _on_commit(tenants: set[uuid.UUID]) -> None:
    # Runs in the committing thread, right after COMMIT.
    with _lock:
        targets = list(_hubs.values())
    for loop, wake in targets:
        try:
            loop.call_soon_threadsafe(wake, set(tenants))
        except RuntimeError:  # that loop is closed: its hub is gone
            pass
    if _publisher is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # a worker thread: it may wait for Redis
        _publish(tenants)
    else:
        # A commit on the event loop (a `@local_write` handler on SQLite): Redis is a network call
        # the loop must not wait for. Only a wake-up rides on it: the events are committed, and
        # the other processes' poll finds them should it be lost.
        running.run_in_executor(None, _publish, set(tenants))


def _publish(tenants: set[uuid.UUID]) -> None:
    try:
        for tenant in tenants:
            _publisher.publish(REDIS_CHANNEL, str(tenant))
    except Exception as exc:  # noqa: BLE001 - Redis down: the other processes' poll still finds it
        logger.warning("realtime: Redis publish failed: %s", exc)


async def listen(settings: Settings, wake: Wake) -> None:
    """Deliver other processes' wake-ups to `wake` until cancelled (Redis, else PostgreSQL, else nothing).

    Reconnects with back-off after a lost connection, and wakes every tenant after each
    (re)connection, since wake-ups may have been missed meanwhile.
    """
    if settings.redis_url:
        source = _redis_notifications
    elif settings.database_url.startswith("postgresql"):
        source = _postgres_notifications
    else:
        return
    failures = 0
    while True:
        try:
            async for tenant in source(settings, connected=lambda: wake(None)):
                failures = 0
                wake({tenant})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport fault: reconnect
            logger.warning("realtime: wake-up listener lost its connection (%s); reconnecting", exc)
        await asyncio.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
        failures += 1


async def _redis_notifications(settings: Settings, *, connected: Callable[[], None]):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(REDIS_CHANNEL)
        connected()
        async for message in pubsub.listen():
            try:
                yield uuid.UUID(message["data"].decode() if isinstance(message["data"], bytes) else message["data"])
            except (ValueError, AttributeError):
                continue
    finally:
        await client.aclose()


async def _postgres_notifications(settings: Settings, *, connected: Callable[[], None]):
    async for tenant in event_stream.notifications(settings.database_url, on_listening=connected):
        yield tenant
