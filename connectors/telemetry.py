"""Prometheus metrics of outbound calls (the default registry; `/metrics` exposes it)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

OUTBOUND_CALLS = Counter(
    "hub_outbound_requests_total", "Calls the hub made to external systems", ["host", "outcome"]
)
OUTBOUND_DURATION = Histogram(
    "hub_outbound_request_duration_seconds", "Duration of calls to external systems", ["host"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
