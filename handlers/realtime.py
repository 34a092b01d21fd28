"""Operations of tag `realtime` (openapi/paths/realtime.yaml): the tenant event log, live.
Seed: backend integration guide, "WebSocket Implementation" (the WebSocket `/ws` is served by
server/realtime.py, described in openapi/asyncapi.yaml)."""

from __future__ import annotations

from connexion.context import scope as request_scope

from server import realtime


def stream_events(token_info: dict, types: list[str] | None = None):
    """Stream the caller's tenant's events as Server-Sent Events (resuming after `Last-Event-ID`)."""
    return realtime.event_stream_response(token_info, types=types, scope=request_scope._get_current_object())
