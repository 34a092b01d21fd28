"""The AsyncAPI document of the WebSocket `/ws` (openapi/asyncapi.yaml), bundled into one document.

The source references the OpenAPI contract's schemas by relative `$ref` (one source for each
schema); `bundle()` inlines every reference to another file, so the served document
(`GET /api/v1/asyncapi.yaml`) and `build/asyncapi.yaml` stand alone. References inside the
document itself (`#/components/...`) are kept.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

ASYNCAPI_SPEC = Path(__file__).resolve().parent.parent / "openapi" / "asyncapi.yaml"
_MAX_DEPTH = 64  # the contract's schemas are not recursive; deeper means a reference cycle


def bundle(path: Path = ASYNCAPI_SPEC) -> dict[str, Any]:
    """Return the document at `path` with every reference to another file inlined.

    Raises ValueError for a reference that cannot be resolved or a reference cycle.
    """
    return _inline(_load(path), path, path, depth=0)


@functools.lru_cache(maxsize=1)
def bundled_yaml() -> bytes:
    """The bundled document as YAML (built once per process)."""
    return yaml.safe_dump(bundle(), sort_keys=False, allow_unicode=True).encode()


@functools.lru_cache(maxsize=32)
def _load_cached(path: str) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _load(path: Path) -> Any:
    return _load_cached(str(path.resolve()))


def _pointer(document: Any, pointer: str, where: str) -> Any:
    node = document
    for part in [p for p in pointer.split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"unresolvable $ref {where}")
        node = node[part]
    return node


def _inline(node: Any, root: Path, current: Path, *, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError(f"$ref cycle or nesting too deep in {current}")
    if isinstance(node, list):
        return [_inline(item, root, current, depth=depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target, _, pointer = ref.partition("#")
        if not target and current == root:
            return dict(node)  # a reference inside the AsyncAPI document itself: kept
        file = (current.parent / target).resolve() if target else current
        resolved = _pointer(_load(file), pointer, f"{ref} (from {current.name})")
        return _inline(resolved, root, file, depth=depth + 1)
    return {key: _inline(value, root, current, depth=depth) for key, value in node.items()}
