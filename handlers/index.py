"""Operations of tag `index` (openapi/paths/index.yaml): the hub's bare address and `/api/v1/`
point a person to the docs, the contracts and health instead of answering 404."""

from __future__ import annotations

import functools

from server import runtime
from server.app import API_SPEC, load_spec


def get_api_index() -> dict:
    """Return links to the docs (null when Swagger UI is off), both contracts and health."""
    rt = runtime.get()
    return {
        "name": "Integration Hub",
        "version": api_version(),
        "links": {
            "docs": "/api/v1/ui/" if rt.settings.swagger_ui_enabled else None,
            "contract": "/api/v1/openapi.json",
            "probesContract": "/openapi.json",
            "health": "/health",
            "api": "/api/v1",
        },
    }


def get_root_index() -> dict:
    """Return the same links as `GET /api/v1/`, for whoever opens the hub's bare address."""
    return get_api_index()


@functools.cache
def api_version() -> str:
    """Return `info.version` of the served `/api/v1` contract (read once per process)."""
    return load_spec(API_SPEC)["info"]["version"]
