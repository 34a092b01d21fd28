"""Helpers for the published-contract tests: build and load the bundles, walk and dereference
them, and validate real HTTP exchanges against them with openapi-core."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def run(args: list[str], *, timeout: float = 300, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command from the repository root; on failure, fail with its whole output."""
    result = subprocess.run(args, cwd=kwargs.pop("cwd", ROOT), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def pointer(doc: Any, ref: str) -> Any:
    """Return what the local reference `#/a/b~1c` points at in `doc`."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(doc: dict[str, Any], node: Any = None) -> Any:
    """Return `node` (default: the whole `doc`) with every local $ref replaced by its target."""

    def resolve(value: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            if "$ref" in value:
                ref = value["$ref"]
                assert ref not in seen, f"recursive reference {ref}"
                return resolve(pointer(doc, ref), seen + (ref,))
            return {key: resolve(child, seen) for key, child in value.items()}
        if isinstance(value, list):
            return [resolve(child, seen) for child in value]
        return value

    return resolve(doc if node is None else node, ())


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    item: dict[str, Any]
    op: dict[str, Any]

    @property
    def operation_id(self) -> str:
        return self.op["operationId"]

    def parameters(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """Path-level and operation-level parameters, resolved; the operation's win by (name, in)."""
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in (self.item.get("parameters") or []) + (self.op.get("parameters") or []):
            param = deref(doc, raw)
            merged[(param["name"], param["in"])] = param
        return list(merged.values())


def operations(doc: dict[str, Any]) -> Iterator[Operation]:
    """Every operation of `doc`, in document order."""
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield Operation(path, method, item, item[method])


# --- openapi-core over httpx (the in-process TestClient and real HTTP alike) ---------------------


class HttpxOpenAPIRequest:
    """openapi-core's Request protocol over an `httpx.Request`."""

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(request.url.query.decode(), keep_blank_values=True)),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )

    host_url = property(lambda self: f"{self.request.url.scheme}://{self.request.url.netloc.decode()}")
    path = property(lambda self: self.request.url.path)
    method = property(lambda self: self.request.method.lower())
    body = property(lambda self: self.request.content or None)
    content_type = property(lambda self: self.request.headers.get("content-type", "").lower())


class HttpxOpenAPIResponse:
    """openapi-core's Response protocol over an `httpx.Response`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    status_code = property(lambda self: self.response.status_code)
    data = property(lambda self: self.response.content)
    headers = property(lambda self: Headers(list(self.response.headers.items())))
    content_type = property(lambda self: self.response.headers.get("content-type", "").lower())


def openapi(doc: dict[str, Any], base_url: str) -> OpenAPI:
    """An openapi-core view of a bundle, its relative server URL made absolute with `base_url`."""
    absolute = json.loads(json.dumps(doc))
    absolute["servers"] = [{"url": base_url.rstrip("/") + server["url"].rstrip("/")} for server in doc["servers"]]
    return OpenAPI.from_dict(absolute)


def validate_response(spec: OpenAPI, response: httpx.Response) -> None:
    """Validate `response` (and the request that caused it) against `spec`: status, headers, body."""
    spec.validate_response(HttpxOpenAPIRequest(response.request), HttpxOpenAPIResponse(response))
