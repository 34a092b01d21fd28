"""Operations of tag `proxy` (openapi/paths/proxy.yaml): the caller's request, forwarded to the
integration's provider with the tenant connection's credentials. Tenant admin."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from connexion.context import scope as connexion_scope
from starlette.responses import Response

from connectors import proxy
from handlers import views
from server import runtime
from server.security import Caller
from server.validation import mark_passthrough

_NO_BODY = object()


def proxy_get(id: str, path: str, token_info: dict) -> Response:
    """Forward a GET to the provider."""
    return _forward("GET", id, path, token_info)


def proxy_post(id: str, path: str, token_info: dict, body: Any = _NO_BODY) -> Response:
    """Forward a POST (JSON body) to the provider; audited."""
    return _forward("POST", id, path, token_info, body)


def proxy_put(id: str, path: str, token_info: dict, body: Any = _NO_BODY) -> Response:
    """Forward a PUT (JSON body) to the provider; audited."""
    return _forward("PUT", id, path, token_info, body)


def proxy_patch(id: str, path: str, token_info: dict, body: Any = _NO_BODY) -> Response:
    """Forward a PATCH (JSON body) to the provider; audited."""
    return _forward("PATCH", id, path, token_info, body)


def proxy_delete(id: str, path: str, token_info: dict) -> Response:
    """Forward a DELETE to the provider; audited."""
    return _forward("DELETE", id, path, token_info)


def _forward(method: str, id: str, path: str, token_info: dict, body: Any = _NO_BODY) -> Response:
    caller = Caller.from_token(token_info)
    scope = connexion_scope._get_current_object()
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or ()}
    flows = runtime.get().flows(present_connection=views.connection)
    answer, returned = proxy.forward(flows, actor=caller.actor, integration_id=UUID(id), method=method, path=path,
                                     query=query, headers=headers, body=None if body is _NO_BODY else body,
                                     has_body=body is not _NO_BODY)
    mark_passthrough(scope)
    media_type = returned.pop("content-type", None) or returned.pop("Content-Type", None)
    return Response(answer.content, status_code=answer.status, headers=returned, media_type=media_type)
