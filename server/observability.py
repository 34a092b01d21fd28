"""Request metrics (Prometheus) and the one structured log line per request (integration runbook 6.2)."""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import Counter, Gauge, Histogram

REQUEST_DURATION = Histogram(
    "hub_http_request_duration_seconds", "Duration of API requests", ["operation_id", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTH_FAILURES = Counter("hub_auth_failures_total", "Refused authentications and authorizations", ["code"])
RATE_LIMIT_HITS = Counter("hub_rate_limit_hits_total", "Requests refused by a rate limit", ["limit"])
# Outgoing webhooks (server/worker.py). Outcome: succeeded, or the error kind of a failed attempt.
WEBHOOK_ATTEMPTS = Counter("hub_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"])
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "hub_webhook_attempt_duration_seconds", "Duration of webhook delivery attempts",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
WEBHOOK_PENDING = Gauge("hub_webhook_pending_deliveries", "Webhook deliveries not yet delivered, exhausted or failed")
WEBHOOK_OLDEST_PENDING_AGE = Gauge("hub_webhook_oldest_pending_age_seconds",
                                   "Age of the oldest pending webhook delivery (0 when none)")
# Incoming provider webhooks (handlers/incoming_webhooks.py, server/incoming_worker.py). Outcome of a
# request: queued, duplicate, ignored, unknown_integration, unusable, or the reason of a 401
# (missing_signature, bad_signature, missing_timestamp, stale_timestamp).
INCOMING_WEBHOOKS = Counter("hub_incoming_webhooks_total", "Incoming provider webhooks by outcome", ["outcome"])
# Outcome of the work: done, retry, failed.
INCOMING_WEBHOOK_WORK = Counter("hub_incoming_webhook_work_total", "Incoming webhook work items by outcome", ["outcome"])
INCOMING_WEBHOOK_LAG = Histogram(
    "hub_incoming_webhook_lag_seconds", "From an incoming webhook's receipt to its record upserted",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# Fields of the per-request line, in this order (runbook 6.2: correlate by requestId).
REQUEST_FIELDS = ("requestId", "method", "path", "operationId", "status", "durationMs", "tenantId")


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message and any request fields."""

    def __init__(self) -> None:
        super().__init__()
        # Every request logs a line: the second's text is formatted once per second, not per line
        # (one tuple, replaced whole, so threads never read half of an update).
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a single-line JSON object."""
        created = record.created
        second, text = self._second
        if int(created) != second:
            second, text = int(created), time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            self._second = (second, text)
        line = {
            "time": text + f".{int(created % 1 * 1e6):06d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__  # where `extra=` puts the request fields
        line.update({key: fields[key] for key in REQUEST_FIELDS if key in fields})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _LINE_ENCODER.encode(line)


# json.dumps(line, default=str) builds an encoder per call; one, reused, writes the same text.
_LINE_ENCODER = json.JSONEncoder(default=str)


def request_duration(operation_id: str, status: int) -> Histogram:
    """Return the REQUEST_DURATION child of one operation and status, looked up once per pair.

    Bounded: operation ids are the contract's (or "unrouted") and statuses are HTTP's.
    """
    key = (operation_id, status)
    child = _DURATION_CHILDREN.get(key)
    if child is None:
        child = _DURATION_CHILDREN[key] = REQUEST_DURATION.labels(operation_id=operation_id, status=str(status))
    return child


_DURATION_CHILDREN: dict[tuple[str, int], Histogram] = {}


# Fields a text line appends as key=value (the message already shows method, path, status, duration).
TEXT_FIELDS = ("requestId", "operationId", "tenantId")


class TextFormatter(logging.Formatter):
    """`time level logger message`, then `requestId=... operationId=... tenantId=...` when the record has them.

    A field the request did not have (no tenant: anonymous or platform caller) shows as `-`, so
    every request line has the same shape and greps by `requestId=` always work.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one text line, with the request fields it carries appended."""
        line = super().format(record)
        if hasattr(record, "requestId"):
            line += "".join(f" {key}={getattr(record, key, None) or '-'}" for key in TEXT_FIELDS)
        return line


def formatter(log_format: str) -> logging.Formatter:
    """Return the formatter of `HUB_LOG_FORMAT`: JsonFormatter for "json", else TextFormatter."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: str) -> None:
    """Log to stderr at INFO, as JSON when `log_format` is "json", else as text lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    # Every request logs a line: skip what no line shows (the HOWTO's "Optimization" section):
    # the caller's file and line, thread and process names.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs full URLs, query strings included


def observe_backlog(pending: int, oldest_age_seconds: float | None) -> None:
    """Set the webhook backlog gauges: pending deliveries and the oldest one's age in seconds."""
    WEBHOOK_PENDING.set(pending)
    WEBHOOK_OLDEST_PENDING_AGE.set(max(0.0, oldest_age_seconds or 0.0))
