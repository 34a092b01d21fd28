"""Deprecation headers, applied generically from the contract.

An operation marked `deprecated: true` in the spec answers with

* `Deprecation: @<unix seconds>` (RFC 9745, a structured-field Date): when the deprecation took
  effect, from the operation's `x-deprecated-at` (a date or RFC 3339 date-time); without it, the
  `x-sunset` date is the latest it can be and is used instead (with neither, `@0`: deprecated
  since an unknown date; tests/contract checks the real contract always gives both);
* `Sunset: <HTTP-date>` (RFC 8594): when the operation goes away, from `x-sunset`;
* `Link: <replacement>; rel="successor-version"` (RFC 8288) when it names `x-replaced-by`: a path
  of the same API (`/tenant/integrations/{id}`; prefixed with the spec's server path, and its
  `{name}` placeholders filled from the request's own path parameters of the same name) or an
  absolute URL.

Register after Connexion's routing, which names the operation in
`scope["extensions"]["connexion_routing"]["operation_id"]`, e.g.
`app.add_middleware(DeprecationMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION,
specs=[api_spec, root_spec])` (the resolved contracts it reads the deprecations from).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from email.utils import format_datetime
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_PLACEHOLDER = re.compile(r"\{([^}/]+)\}")


def _moment(value: Any, *, operation_id: str, key: str) -> datetime:
    """Return `value` (a date, a datetime, or their ISO text) as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time.min)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{operation_id}: {key} {value!r} is not a date or an RFC 3339 date-time") from None
    else:
        raise ValueError(f"{operation_id}: {key} {value!r} is not a date or an RFC 3339 date-time")
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _base_path(spec: dict[str, Any]) -> str:
    """The path of the spec's first server URL when it is relative (`/api/v1`), else ''."""
    url = ((spec.get("servers") or [{}])[0].get("url") or "").rstrip("/")
    return url if url.startswith("/") else ""


def _successor(spec: dict[str, Any], replaced_by: str) -> str:
    if re.match(r"^https?://", replaced_by):
        return replaced_by
    base = _base_path(spec)
    return replaced_by if not base or replaced_by.startswith(base + "/") else base + replaced_by


def deprecations(spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Map each deprecated operation's operationId to the headers its answers carry.

    Raises ValueError naming the operation when its `x-sunset` or `x-deprecated-at` is not a date.
    """
    found: dict[str, dict[str, str]] = {}
    for item in (spec.get("paths") or {}).values():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict) or not operation.get("deprecated"):
                continue
            operation_id = operation["operationId"]
            sunset = operation.get("x-sunset")
            since = operation.get("x-deprecated-at", sunset)
            headers: dict[str, str] = {}
            if since is not None:
                key = "x-deprecated-at" if "x-deprecated-at" in operation else "x-sunset"
                headers["Deprecation"] = f"@{int(_moment(since, operation_id=operation_id, key=key).timestamp())}"
            else:
                # RFC 9745 needs a date; with neither extension, "deprecated since an unknown date".
                headers["Deprecation"] = "@0"
            if sunset is not None:
                headers["Sunset"] = format_datetime(_moment(sunset, operation_id=operation_id, key="x-sunset"), usegmt=True)
            if operation.get("x-replaced-by"):
                headers["Link"] = f'<{_successor(spec, str(operation["x-replaced-by"]))}>; rel="successor-version"'
            found[operation_id] = headers
    return found


def _path_patterns(spec: dict[str, Any]) -> dict[str, re.Pattern[str]]:
    """Per deprecated operationId, a pattern capturing its path parameters from a request path."""
    patterns = {}
    for path, item in (spec.get("paths") or {}).items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict) and operation.get("deprecated"):
                parts = _PLACEHOLDER.split(path)
                regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
                patterns[operation["operationId"]] = re.compile(regex + "$")
    return patterns


class DeprecationMiddleware:
    """Add the Deprecation, Sunset and Link headers the contract declares to every answer of a
    deprecated operation (pure ASGI; needs Connexion's routing extension in the scope)."""

    def __init__(self, app: ASGIApp, specs: Iterable[dict[str, Any]]) -> None:
        self.app = app
        self.headers: dict[str, dict[str, str]] = {}
        self.patterns: dict[str, re.Pattern[str]] = {}
        for spec in specs:
            self.headers.update(deprecations(spec))
            self.patterns.update(_path_patterns(spec))

    def _for(self, operation_id: str, path: str) -> dict[str, str]:
        headers = dict(self.headers[operation_id])
        link = headers.get("Link")
        if link and _PLACEHOLDER.search(link):
            match = self.patterns[operation_id].search(path)
            values = match.groupdict() if match else {}
            filled = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), link)
            if _PLACEHOLDER.search(filled):
                del headers["Link"]  # a successor we cannot name exactly is better left out
            else:
                headers["Link"] = filled
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routing = ((scope.get("extensions") or {}).get("connexion_routing") or {}) if scope["type"] == "http" else {}
        operation_id = routing.get("operation_id")
        if operation_id not in self.headers:
            await self.app(scope, receive, send)
            return
        extra = self._for(operation_id, scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    if name == "Link":
                        headers.append(name, value)  # alongside any Link the operation sets itself
                    elif name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
