"""Realtime delivery of the tenant event log: the WebSocket `/ws` and the SSE stream's machinery.

Seed: the backend integration guide ("WebSocket Implementation", "Testing WebSocket with
wscat", "Scaling WebSocket"); the protocol is described for clients in `openapi/asyncapi.yaml`.

One `EventHub` per event loop (per serving process) reads the event log forward, one cursor per
tenant with listeners, whenever `server.fanout` wakes it (a local commit, Redis, PostgreSQL
NOTIFY) and every `HUB_REALTIME_POLL_SECONDS` regardless, and offers each event to the tenant's
listeners (a WebSocket or an SSE stream). Each listener has its own cursor (`seq`), so an event
reaches it once, in the tenant's commit order, whether it came from a replay (`since`,
`Last-Event-ID`) or live. Its queue is bounded: one that falls `HUB_REALTIME_QUEUE_SIZE` events
behind is closed (1013) and resumes from its last event id.

Who may see what: a listener only gets its own tenant's events, and only of resources its
token may read over HTTP: the `x-required-scopes` of the resource's read operation in the
contract (`READ_OPERATIONS`), checked against the token's scopes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from persistence import event_stream
from persistence.db import transaction
from server import asyncapi, fanout, runtime, security
from server.errors import ApiError

# WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

# The channels a socket may subscribe to, and the event resources (first segment of the event
# type, `integration` of `integration.created`) each carries. `integration:<id>` carries that
# integration's own events and its connection's; `*` every event the token may read.
CHANNEL_RESOURCES: dict[str, tuple[str, ...]] = {
    "integrations": ("integration",),
    "connections": ("connection",),
    "users": ("user",),
    "webhooks": ("webhook_endpoint", "webhook"),
    "sync": ("sync", "records"),
}
INTEGRATION_CHANNEL = re.compile(r"^integration:([A-Za-z0-9-]{1,64})$")
# Event resource -> the operation (operationId) whose `x-required-scopes` a token needs to read
# that resource over HTTP: the same scopes gate it here. A resource whose operation is not in
# the contract (yet) is delivered to nobody.
READ_OPERATIONS: dict[str, str] = {
    "integration": "get_tenant_integration",
    "connection": "get_connection",
    "user": "get_user",
    "api_token": "list_api_tokens",
    "tenant": "get_me",
    "webhook_endpoint": "get_webhook_endpoint",
    "webhook": "get_webhook_endpoint",
    "sync": "list_sync_runs",
    "records": "list_records",
}
MAX_MESSAGE_BYTES = 16 * 1024  # a client message larger than this is refused (VALIDATION_ERROR)
MAX_CHANNELS = 50
ASYNCAPI_PATH = "/api/v1/asyncapi.yaml"
REPLAY_PAGE = 500

logger = logging.getLogger("hub.realtime")


def timestamp(value: datetime) -> str:
    """RFC 3339 UTC with `Z`, as the API writes timestamps."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event of the log as realtime delivers it (read once, shared by every listener)."""

    seq: int
    id: str
    type: str
    resource: str
    action: str
    data: dict
    text: str  # the WebSocket message `{"id","type","action","data","timestamp"}` as JSON

    @classmethod
    def from_row(cls, row: Any) -> "LogEvent":
        """Build it from an `Event` row."""
        resource, _, action = row.type.partition(".")
        message = {"id": row.id, "type": resource, "action": action, "data": row.data,
                   "timestamp": timestamp(row.occurred_at)}
        return cls(seq=row.seq, id=row.id, type=row.type, resource=resource, action=action, data=row.data,
                   text=json.dumps(message, separators=(",", ":")))

    def integration_id(self) -> str | None:
        """The integration this event concerns (for `integration:<id>`), if any."""
        if self.resource == "integration":
            return self.data.get("id")
        return self.data.get("integrationId")


def required_scopes(resource: str) -> list[str] | None:
    """The scopes needed to read `resource` over HTTP, or None when the contract has no read operation for it."""
    operation = READ_OPERATIONS.get(resource)
    required = runtime.get().operation_scopes.get(operation) if operation else None
    return list(required) if required else None


def may_read(resource: str, scopes: frozenset[str]) -> bool:
    """True when a token holding `scopes` may read `resource` over HTTP."""
    required = required_scopes(resource)
    return required is not None and set(required) <= scopes


def channel_resources(channel: str) -> tuple[str, ...] | None:
    """The resources a channel carries (`*` -> every known one), or None for an unknown channel."""
    if channel == "*":
        return tuple(READ_OPERATIONS)
    if INTEGRATION_CHANNEL.match(channel):
        return ("integration", "connection")
    return CHANNEL_RESOURCES.get(channel)


OVERFLOW = object()  # queue sentinel: the listener fell behind


@dataclass(eq=False, slots=True)
class Listener:
    """One consumer of a tenant's events (a socket or an SSE stream) with its own cursor and queue.

    `channels` (WebSocket) and `types` (SSE, None = all) select events; `scopes` limit them to
    readable resources. `cursor` is the `seq` of the last event considered. The queue holds
    `LogEvent`s and control messages (dicts); at most `limit` events may wait in it.

    The queue is a plain deque: `on_item` (a socket's "start sending" callback) is called after
    each item is queued; without one, `next()` waits on an event made on first use. An idle
    socket thus holds no queue machinery and no sender task (memory per socket; README
    "Realtime").
    """

    tenant_id: uuid.UUID
    scopes: frozenset[str]
    limit: int
    channels: set[str] = field(default_factory=set)
    types: frozenset[str] | None = None
    cursor: int = 0
    pending: int = 0
    overflowed: bool = False
    closed: bool = False
    on_item: Any = None
    items: deque = field(default_factory=deque)
    unfinished: int = 0  # items queued and not yet `done()` (replay waits for 0)
    _resources: frozenset[str] = field(init=False, default=frozenset())  # what `channels` carry (`*`: all)
    _ready: asyncio.Event | None = field(init=False, default=None)
    _drained: asyncio.Event | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._index_channels()

    def subscribe(self, channels: list[str]) -> None:
        """Add `channels` (already validated by `_channel_problem`)."""
        self.channels.update(channels)
        self._index_channels()

    def unsubscribe(self, channels: list[str]) -> None:
        """Remove `channels`."""
        self.channels.difference_update(channels)
        self._index_channels()

    def _index_channels(self) -> None:
        self._resources = frozenset(r for c in self.channels if not c.startswith("integration:")
                                    for r in (channel_resources(c) or ()))

    def wants(self, event: LogEvent, required: frozenset[str] | None = None) -> bool:
        """True when this listener selects `event` and may read its resource.

        `required`: the scopes reading `event.resource` needs (`required_scopes`), when the
        caller already has them (one look-up per event, not per listener).
        """
        if self.types is not None and event.type not in self.types:
            return False
        if not self.types and not self._on_channels(event):
            return False
        if required is None:
            return may_read(event.resource, self.scopes)
        return required <= self.scopes

    def _on_channels(self, event: LogEvent) -> bool:
        if event.resource in self._resources:
            return True
        integration = event.integration_id()
        return integration is not None and f"integration:{integration}" in self.channels

    def offer(self, event: LogEvent, *, bounded: bool = True, required: frozenset[str] | None = None) -> bool:
        """Queue `event` if it is new to this listener and selected; False when the listener overflowed."""
        if event.seq <= self.cursor or self.overflowed:
            return not self.overflowed
        self.cursor = event.seq
        if not self.wants(event, required):
            return True
        if bounded and self.pending >= self.limit:
            self.overflowed = True
            self._put(OVERFLOW)
            return False
        self.pending += 1
        self._put(event)
        return True

    def control(self, message: dict) -> None:
        """Queue a protocol message (reply, error, ping) ahead of nothing: in order with the events."""
        self._put(message)

    def _put(self, item: Any) -> None:
        self.items.append(item)
        self.unfinished += 1
        if self.on_item is not None:
            self.on_item()
        elif self._ready is not None:
            self._ready.set()

    def take(self) -> Any:
        """Return the next queued item without waiting (IndexError when empty); call `done()` once it is sent."""
        item = self.items.popleft()
        if isinstance(item, LogEvent):
            self.pending -= 1
        return item

    async def next(self) -> Any:
        """Return the next queued item (LogEvent, dict or OVERFLOW), waiting for one; call `done()` once sent."""
        while not self.items:
            if self._ready is None:
                self._ready = asyncio.Event()
            self._ready.clear()
            await self._ready.wait()
        return self.take()

    def done(self) -> None:
        """Mark the item returned by `next()` / `take()` as handled (replay waits for the queue to drain)."""
        self.unfinished = max(self.unfinished - 1, 0)
        if self.unfinished <= 0 and self._drained is not None:
            self._drained.set()

    async def join(self) -> None:
        """Wait until every queued item is `done()` (or the listener is closed)."""
        while self.unfinished > 0 and not self.closed:
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()

    def close(self) -> None:
        """Mark it closed and empty its queue (so a replay waiting for it to drain returns)."""
        self.closed = True
        self.items.clear()
        self.unfinished = 0
        if self._drained is not None:
            self._drained.set()
        if self._ready is not None:
            self._ready.set()


class EventHub:
    """This event loop's reader of the event log, feeding every local listener (one per process).

    `EventHub.current()` returns the running loop's hub, creating it (and its pump and
    cross-process listener tasks) on first use.
    """

    _by_loop: dict[asyncio.AbstractEventLoop, "EventHub"] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = runtime.get().settings
        self.poll_seconds = settings.realtime_poll_seconds
        self.listeners: dict[uuid.UUID, set[Listener]] = defaultdict(set)
        self.heads: dict[uuid.UUID, int] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._woken: set[uuid.UUID] = set()
        self._wake_all = False
        self._wakeup = asyncio.Event()
        self._overflow_handlers: dict[int, Any] = {}
        fanout.install(settings)
        self._handle = fanout.register(loop, self.wake)
        self._tasks = [loop.create_task(self._pump(), name="realtime-pump"),
                       loop.create_task(fanout.listen(settings, self.wake), name="realtime-wakeups")]

    @classmethod
    def current(cls) -> "EventHub":
        """Return the hub of the running event loop, starting it on first use."""
        loop = asyncio.get_running_loop()
        hub = cls._by_loop.get(loop)
        if hub is None:
            for stale in [other for other in cls._by_loop if other.is_closed()]:
                fanout.unregister(cls._by_loop.pop(stale)._handle)
            hub = cls._by_loop[loop] = cls(loop)
        return hub

    def wake(self, tenants: set[uuid.UUID] | None) -> None:
        """Ask the pump to read the log of `tenants` (None: of every tenant with listeners)."""
        if tenants is None:
            self._wake_all = True
        else:
            self._woken |= tenants
        self._wakeup.set()

    async def _pump(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                self._wake_all = True  # the poll: a lost wake-up costs this much latency at most
            self._wakeup.clear()
            tenants = set(self.listeners) if self._wake_all else self._woken & set(self.listeners)
            self._woken, self._wake_all = set(), False
            if not tenants:
                continue
            try:
                await self._catch_up(tenants)
            except Exception:  # noqa: BLE001 - a database fault: the next wake-up or poll retries
                logger.exception("realtime: reading the event log failed")

    async def _catch_up(self, tenants: set[uuid.UUID]) -> None:
        cursors = {tenant: self.heads[tenant] for tenant in tenants if tenant in self.heads}
        rows = await run_in_threadpool(_read_after_many, cursors)
        by_tenant: dict[uuid.UUID, list[LogEvent]] = defaultdict(list)
        for tenant, event in rows:
            by_tenant[tenant].append(event)
        for tenant, events in by_tenant.items():
            async with self._locks[tenant]:
                if tenant not in self.heads:
                    continue
                for event in events:
                    if event.seq > self.heads[tenant]:
                        self.heads[tenant] = event.seq
                        self._dispatch(tenant, event)
            if len(events) >= _BATCH:
                self.wake({tenant})  # more may be waiting

    def _dispatch(self, tenant: uuid.UUID, event: LogEvent) -> None:
        required = required_scopes(event.resource)
        if required is None:  # nobody may read it: only the cursors move
            for listener in self.listeners.get(tenant, ()):
                listener.cursor = max(listener.cursor, event.seq)
            return
        required = frozenset(required)
        for listener in list(self.listeners.get(tenant, ())):
            if not listener.offer(event, required=required):
                self.detach(listener)

    async def attach(self, listener: Listener, since: int | None) -> None:
        """Start delivering to `listener`: first what follows `since` (a `seq`) in the log, then live.

        Without `since`, live from now. Replayed events go through the listener's queue page
        by page (waiting for it to drain), then the listener joins the live set under the
        tenant's lock after reading the tail, so nothing is missed or repeated at the seam.
        """
        tenant = listener.tenant_id
        self.detach(listener)
        if since is not None:
            listener.cursor = since
            size = min(REPLAY_PAGE, listener.limit)
            while not listener.closed:
                page = await run_in_threadpool(_read_after, tenant, listener.cursor, size)
                for event in page:
                    listener.offer(event, bounded=False)
                await listener.join()  # back-pressure: the next page once this one is sent
                if len(page) < size:
                    break
        async with self._locks[tenant]:
            if listener.closed:
                return
            if since is None:
                listener.cursor = self.heads.get(tenant) or await run_in_threadpool(_read_head, tenant)
            else:
                # The tail read here reaches every committed event, so the cursor ends at or
                # above this hub's head for the tenant: the pump's next events are all new to it.
                for event in await run_in_threadpool(_read_after, tenant, listener.cursor, 100_000):
                    if not listener.offer(event):
                        return
            if listener.closed:
                return
            self.heads.setdefault(tenant, listener.cursor)
            self.listeners[tenant].add(listener)

    def detach(self, listener: Listener) -> None:
        """Stop delivering to `listener` (safe to repeat)."""
        tenant = listener.tenant_id
        members = self.listeners.get(tenant)
        if members is None:
            return
        members.discard(listener)
        if not members:
            del self.listeners[tenant]
            self.heads.pop(tenant, None)

    def listener_count(self) -> int:
        """How many listeners this process holds (all tenants)."""
        return sum(len(members) for members in self.listeners.values())


_BATCH = 1000


def _read_after_many(cursors: dict[uuid.UUID, int]) -> list[tuple[uuid.UUID, LogEvent]]:
    if not cursors:
        return []
    with transaction() as session:
        rows = event_stream.after_many(session, cursors=cursors, limit=_BATCH)
        return [(row.tenant_id, LogEvent.from_row(row)) for row in rows]


def _read_after(tenant: uuid.UUID, seq: int, limit: int) -> list[LogEvent]:
    with transaction() as session:
        return [LogEvent.from_row(row) for row in event_stream.after(session, tenant_id=tenant, seq=seq, limit=limit)]


def _read_head(tenant: uuid.UUID) -> int:
    with transaction() as session:
        return event_stream.head(session, tenant_id=tenant)


def _read_position(tenant: uuid.UUID, event_id: str) -> int | None:
    with transaction() as session:
        return event_stream.position(session, tenant_id=tenant, event_id=event_id)


async def resume_position(tenant: uuid.UUID, event_id: str) -> int | None:
    """The `seq` to resume after `event_id` (`since`, `Last-Event-ID`), or None when the log no longer has it."""
    if not isinstance(event_id, str) or not event_id.startswith("evt_") or len(event_id) > 40:
        return None
    return await run_in_threadpool(_read_position, tenant, event_id)


async def authenticate(token: Any) -> dict[str, Any]:
    """Validate an access token or API token as the HTTP API does; return its token_info.

    Raises ApiError (401 INVALID_TOKEN, 403 TENANT_SUSPENDED, ...) like the bearer scheme, and
    403 PERMISSION_DENIED for an account without a tenant (a platform admin has no event log).
    """
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise ApiError(401, "INVALID_TOKEN", "Token is invalid")
    info = await run_in_threadpool(security.authenticate_bearer, token)
    if not info.get("tenantId"):
        raise ApiError(403, "PERMISSION_DENIED", "Only a tenant's accounts have an event stream")
    return info


# --------------------------------------------------------------------------------------------
# WebSocket /ws
# --------------------------------------------------------------------------------------------


def _error(code: str, message: str) -> dict:
    return {"type": "error", "code": code, "message": message}


class Socket:
    """One WebSocket connection of the `/ws` protocol, from authentication to close."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.settings = runtime.get().settings
        self.hub = EventHub.current()
        self.token: str | None = None
        self.info: dict[str, Any] = {}
        self.listener: Listener | None = None
        self.sender: asyncio.Task | None = None
        self.closed = False
        self._closing: asyncio.Task | None = None

    async def run(self) -> None:
        """Serve the connection until either side closes it."""
        await self.ws.accept()
        try:
            if not await self._authenticate():
                return
            await self._serve()
        except WebSocketDisconnect:
            pass
        except Exception:  # noqa: BLE001 - never a stack trace to the peer; log it, close 1011
            logger.exception("realtime: socket failed")
            await self.close(CLOSE_INTERNAL_ERROR, "INTERNAL_ERROR")
        finally:
            await self.close(None, None)

    async def _authenticate(self) -> bool:
        token = self.ws.query_params.get("token")
        if not token:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=self.settings.ws_auth_timeout_seconds)
            except TimeoutError:
                await self.close(CLOSE_POLICY_VIOLATION, "NO_TOKEN")
                return False
            if message["type"] == "websocket.disconnect":
                return False
            parsed = _parse(message)
            if not (isinstance(parsed, dict) and parsed.get("type") == "auth"):
                await self.close(CLOSE_POLICY_VIOLATION, "NO_TOKEN")
                return False
            token = parsed.get("token")
        try:
            self.info = await authenticate(token)
        except ApiError as exc:
            await self.close(CLOSE_POLICY_VIOLATION, exc.code)
            return False
        self.token = token
        self.ws.scope.setdefault("state", {})["tenant_id"] = self.info["tenantId"]
        self.listener = Listener(tenant_id=uuid.UUID(self.info["tenantId"]), scopes=frozenset(self.info["scopes"]),
                                 limit=self.settings.realtime_queue_size, on_item=self._start_sending)
        return True

    async def _serve(self) -> None:
        settings = self.settings
        now = time.monotonic()
        heard, next_ping, next_check = now, now + settings.ws_ping_seconds, now + settings.realtime_recheck_seconds
        while not self.closed:
            now = time.monotonic()
            wait = min(heard + settings.ws_idle_timeout_seconds, next_ping, next_check) - now
            try:
                # asyncio.timeout, not wait_for: no extra task per socket while it waits.
                async with asyncio.timeout(max(wait, 0.001)):
                    message = await self.ws.receive()
            except TimeoutError:
                now = time.monotonic()
                if now >= heard + settings.ws_idle_timeout_seconds:
                    await self.close(CLOSE_GOING_AWAY, "IDLE_TIMEOUT")
                    return
                if now >= next_ping:
                    self.listener.control({"type": "ping"})
                    next_ping = now + settings.ws_ping_seconds
                if now >= next_check:
                    next_check = now + settings.realtime_recheck_seconds
                    if not await self._still_valid():
                        return
                continue
            if message["type"] == "websocket.disconnect":
                return
            heard = time.monotonic()
            await self._handle(_parse(message))

    async def _still_valid(self) -> bool:
        # A token revoked, a user deactivated or a tenant suspended while connected ends the socket.
        try:
            await authenticate(self.token)
        except ApiError as exc:
            await self.close(CLOSE_POLICY_VIOLATION, exc.code)
            return False
        return True

    async def _handle(self, message: Any) -> None:
        listener = self.listener
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            listener.control({"type": "pong"})
        elif kind == "pong":
            pass  # the answer to our ping: hearing it was the point
        elif kind in ("subscribe", "unsubscribe"):
            channels = message.get("channels")
            problem = _channel_problem(channels, listener.scopes)
            since = message.get("since")
            if problem is None and kind == "subscribe" and since is not None and not isinstance(since, str):
                problem = ("VALIDATION_ERROR", "since must be an event id (evt_...)")
            if problem is not None:
                listener.control(_error(*problem))
            elif kind == "unsubscribe":
                listener.unsubscribe(channels)
                listener.control({"type": "unsubscribed", "channels": channels})
            else:
                await self._subscribe(channels, since)
        elif kind == "auth":
            await self._reauthenticate(message.get("token"))
        elif message is _INVALID_JSON:
            listener.control(_error("VALIDATION_ERROR", "A message must be a JSON object with a type"))
        else:
            listener.control(_error("VALIDATION_ERROR",
                                    "Unknown message type: expected subscribe, unsubscribe, ping, pong or auth"))

    async def _subscribe(self, channels: list[str], since: str | None) -> None:
        listener = self.listener
        seq = None
        if since is not None:
            seq = await resume_position(listener.tenant_id, since)
            if seq is None:
                listener.control({"type": "resync_required"})
        listener.subscribe(channels)
        listener.control({"type": "subscribed", "channels": channels})
        if seq is not None or listener not in self.hub.listeners.get(listener.tenant_id, ()):
            await self.hub.attach(listener, seq)

    async def _reauthenticate(self, token: Any) -> None:
        # A fresh access token for a long-lived socket (the one it had would expire): same user only.
        try:
            info = await authenticate(token)
        except ApiError as exc:
            await self.close(CLOSE_POLICY_VIOLATION, exc.code)
            return
        if info["userId"] != self.info["userId"]:
            self.listener.control(_error("PERMISSION_DENIED", "A socket stays with the account it authenticated"))
            return
        self.token, self.info = token, info
        self.listener.scopes = frozenset(info["scopes"])

    def _start_sending(self) -> None:
        # Called for each queued item: a sender task exists only while items wait, so an idle
        # socket costs one task (its receive loop), not two.
        if self.sender is None and not self.closed:
            self.sender = asyncio.create_task(self._send_pending())

    async def _send_pending(self) -> None:
        listener = self.listener
        while listener.items:
            item = listener.take()
            try:
                if item is OVERFLOW:
                    self._closing = asyncio.create_task(self.close(CLOSE_TRY_AGAIN_LATER, "SLOW_CONSUMER"))
                    return
                await self.ws.send_text(item.text if isinstance(item, LogEvent) else json.dumps(item))
            except Exception:  # noqa: BLE001 - the peer is gone: release everything
                self._closing = asyncio.create_task(self.close(None, None))
                return
            finally:
                listener.done()
        self.sender = None  # no await between the empty check and here: the next item starts a new task

    async def close(self, code: int | None, reason: str | None) -> None:
        """Close with `code` (None: only release, the peer is gone) once; detach and stop the sender."""
        if self.closed:
            return
        self.closed = True
        if self.listener is not None:
            self.hub.detach(self.listener)
            self.listener.close()
        if self.sender is not None and self.sender is not asyncio.current_task():
            self.sender.cancel()
        if code is not None:
            try:
                await self.ws.close(code, reason)
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass


_INVALID_JSON = object()


def _parse(message: dict) -> Any:
    raw = message.get("text")
    if raw is None and message.get("bytes") is not None:
        raw = message["bytes"].decode("utf-8", errors="replace")
    if raw is None or len(raw) > MAX_MESSAGE_BYTES:
        return _INVALID_JSON
    try:
        parsed = json.loads(raw)
    except ValueError:
        return _INVALID_JSON
    return parsed if isinstance(parsed, dict) else _INVALID_JSON


def _channel_problem(channels: Any, scopes: frozenset[str]) -> tuple[str, str] | None:
    if not (isinstance(channels, list) and 0 < len(channels) <= MAX_CHANNELS
            and all(isinstance(c, str) and len(c) <= 100 for c in channels)):
        return ("VALIDATION_ERROR", f"channels must be a list of 1 to {MAX_CHANNELS} channel names")
    for channel in channels:
        resources = channel_resources(channel)
        if resources is None:
            return ("VALIDATION_ERROR", f"Unknown channel {channel!r}: expected one of "
                    f"{', '.join(sorted(CHANNEL_RESOURCES))}, integration:<id> or *")
        declared = [r for r in resources if required_scopes(r) is not None]
        if channel != "*" and declared and not any(may_read(r, scopes) for r in declared):
            needed = sorted({s for r in declared for s in required_scopes(r)})
            return ("PERMISSION_DENIED", f"Channel {channel!r} requires the scope(s) {', '.join(needed)}")
    return None


# --------------------------------------------------------------------------------------------
# Server-Sent Events GET /api/v1/events/stream
# --------------------------------------------------------------------------------------------


def request_token(scope: Scope) -> str | None:
    """The token a request authenticated with: `Authorization: Bearer`, `X-API-Key` or `?token=`."""
    headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    from urllib.parse import parse_qs

    return (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [None])[0]


def event_stream_response(token_info: dict[str, Any], *, types: list[str] | None, scope: Scope) -> EventSourceResponse:
    """The SSE answer of `GET /events/stream`: replay after `Last-Event-ID` if sent, then live events.

    Each event: `id:` its id, `event:` its type, `data:` the WebSocket event message as JSON.
    A keep-alive comment every `HUB_SSE_PING_SECONDS`. The stream ends when the listener falls
    behind (the browser's EventSource reconnects with Last-Event-ID), or when its token is no
    longer valid (re-checked every `HUB_REALTIME_RECHECK_SECONDS`).
    """
    settings = runtime.get().settings
    headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
    listener = Listener(tenant_id=uuid.UUID(token_info["tenantId"]), scopes=frozenset(token_info.get("scopes", ())),
                        limit=settings.realtime_queue_size, channels={"*"},
                        types=frozenset(types) if types else None)
    stream = _sse_events(listener, token=request_token(scope), last_event_id=headers.get("last-event-id"))
    return EventSourceResponse(stream, ping=settings.sse_ping_seconds,
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _sse_events(listener: Listener, *, token: str | None, last_event_id: str | None):
    hub = EventHub.current()
    recheck = runtime.get().settings.realtime_recheck_seconds
    seq = None
    if last_event_id:
        seq = await resume_position(listener.tenant_id, last_event_id.strip())
        if seq is None:
            yield ServerSentEvent(event="resync_required", data=json.dumps({"type": "resync_required"}))
    attaching = asyncio.create_task(hub.attach(listener, seq))  # its replay waits for this loop to drain
    try:
        next_check = time.monotonic() + recheck
        while True:
            try:
                item = await asyncio.wait_for(listener.next(), timeout=max(next_check - time.monotonic(), 0.001))
            except TimeoutError:
                next_check = time.monotonic() + recheck
                if token is not None:
                    try:
                        await authenticate(token)
                    except ApiError:
                        return
                continue
            try:
                if item is OVERFLOW:
                    return
                if isinstance(item, LogEvent):
                    yield ServerSentEvent(id=item.id, event=item.type, data=item.text)
            finally:
                listener.done()
    finally:
        hub.detach(listener)
        listener.close()
        attaching.cancel()


async def websocket_endpoint(websocket: WebSocket) -> None:
    """`/ws`: the realtime protocol (README "Realtime", openapi/asyncapi.yaml)."""
    await Socket(websocket).run()


async def asyncapi_document(request: Request) -> Response:
    """`GET /api/v1/asyncapi.yaml`: the AsyncAPI document of `/ws`, bundled (public, like openapi.json)."""
    body = await run_in_threadpool(asyncapi.bundled_yaml)
    return Response(body, media_type="application/yaml")


_TOKEN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*")


class RedactTokenQuery(logging.Filter):
    """Blank the `token=` query parameter in uvicorn's WebSocket handshake lines.

    uvicorn logs every WebSocket handshake at INFO on `uvicorn.error` with the path and its
    query string (`127.0.0.1:5555 - "WebSocket /ws?token=..." [accepted]`), whatever
    `access_log` says; `?token=` carries an access or API token, which must never reach a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's string arguments (`token=[redacted]`); never drops a record."""
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "token=" in a for a in record.args):
            record.args = tuple(_TOKEN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _redact_uvicorn_handshake_logs() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RedactTokenQuery) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(RedactTokenQuery())


class RealtimeRoutes:
    """ASGI middleware serving `/ws` and its AsyncAPI document; every other request passes on.

    Connexion's AsyncApp routes only HTTP operations of its specs (`add_url_rule` makes HTTP
    routes, and its root API is mounted at `""`, which would take `/ws` first), so the app
    factory adds this inside Connexion's middleware stack (`MiddlewarePosition.BEFORE_SWAGGER`):
    the request-id/log middleware and the exception middleware still wrap every socket.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _redact_uvicorn_handshake_logs()  # here: built in every serving process, whatever serves it
        self.router = Router(routes=[WebSocketRoute("/ws", websocket_endpoint, name="realtime"),
                                     Route(ASYNCAPI_PATH, asyncapi_document, methods=["GET"], name="asyncapi")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if (scope["type"] == "websocket" and path == "/ws") or (scope["type"] == "http" and path == ASYNCAPI_PATH):
            await self.router(scope, receive, send)
            return
        await self.app(scope, receive, send)
