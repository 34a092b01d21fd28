"""Signed change notifications of the sandbox: POST each record change to every registered URL.

A registration (`POST /_control/webhooks`) is a URL and a secret. Each change is delivered as
JSON `{"id", "type", "entity", "data", "occurred_at"}` with headers
`X-Sandbox-Event-Id`, `X-Sandbox-Timestamp` (Unix seconds) and `X-Sandbox-Signature`: the
lowercase hex HMAC-SHA256, keyed by the secret, of `timestamp + "." + raw body` (the scheme of
Stripe's and Slack's signatures). Delivered by one background thread, in order, up to three
attempts per registration (same event id every time, so receivers can deduplicate).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

SIGNATURE_HEADER = "X-Sandbox-Signature"
TIMESTAMP_HEADER = "X-Sandbox-Timestamp"
EVENT_ID_HEADER = "X-Sandbox-Event-Id"
ATTEMPT_DELAYS = (0.0, 0.2, 1.0)  # seconds before each attempt
DELIVERY_LOG_SIZE = 1000


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of `timestamp + "." + body` keyed by `secret`."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Subscription:
    """A registered receiver: id `whs_...`, URL, secret (never shown back), creation time (RFC 3339)."""

    id: str
    url: str
    secret: str
    created_at: str

    def to_json(self) -> dict:
        """Return the public view (without the secret)."""
        return {"id": self.id, "url": self.url, "createdAt": self.created_at}


class Notifier:
    """Registrations, the delivery queue and its worker thread, and a log of the last deliveries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        self._queue: queue.Queue[tuple[Subscription, dict]] = queue.Queue()
        self._log: deque[dict] = deque(maxlen=DELIVERY_LOG_SIZE)
        self._worker: threading.Thread | None = None

    def register(self, url: str, secret: str) -> Subscription:
        """Add a receiver and return it."""
        subscription = Subscription(f"whs_{secrets.token_hex(8)}", url, secret,
                                    datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        with self._lock:
            self._subscriptions[subscription.id] = subscription
        return subscription

    def unregister(self, subscription_id: str) -> bool:
        """Remove a receiver; return False when the id is unknown."""
        with self._lock:
            return self._subscriptions.pop(subscription_id, None) is not None

    def subscriptions(self) -> list[Subscription]:
        """Return the receivers, oldest first."""
        with self._lock:
            return list(self._subscriptions.values())

    def deliveries(self) -> list[dict]:
        """Return the last deliveries, oldest first: eventId, subscriptionId, attempts, status or error."""
        with self._lock:
            return list(self._log)

    def publish(self, *, entity: str, change: str, record: dict) -> dict:
        """Queue the notification of one change (`created` | `updated` | `deleted`) for every receiver; return the event."""
        event = {
            "id": f"evt_{secrets.token_hex(12)}",
            "type": f"{entity.removesuffix('s')}.{change}",
            "entity": entity,
            "data": record,
            "occurred_at": record["updatedAt"],
        }
        for subscription in self.subscriptions():
            self._ensure_worker()
            self._queue.put((subscription, event))
        return event

    def pending(self) -> int:
        """Return how many deliveries are queued or in flight."""
        return self._queue.unfinished_tasks

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="sandbox-notifier", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5, follow_redirects=False) as client:
            while True:
                subscription, event = self._queue.get()
                try:
                    self._deliver(client, subscription, event)
                finally:
                    self._queue.task_done()

    def _deliver(self, client: httpx.Client, subscription: Subscription, event: dict) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        outcome: dict = {"eventId": event["id"], "subscriptionId": subscription.id}
        for attempt, delay in enumerate(ATTEMPT_DELAYS, start=1):
            time.sleep(delay)
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", EVENT_ID_HEADER: event["id"], TIMESTAMP_HEADER: timestamp,
                       SIGNATURE_HEADER: sign(subscription.secret, timestamp, body)}
            try:
                status = client.post(subscription.url, content=body, headers=headers).status_code
            except httpx.HTTPError as error:
                outcome.update(attempts=attempt, status=None, error=type(error).__name__)
                continue
            outcome.update(attempts=attempt, status=status, error=None)
            if 200 <= status < 300:
                break
        with self._lock:
            self._log.append(outcome)
