"""The breaking-change gate: compare the current bundle with the last released one.

    python scripts/check_breaking.py [--base FILE] [--current FILE] [--allow-breaking]

`--base` defaults to the highest version in openapi/releases/ (`<semver>.yaml`), `--current` to
build/openapi.yaml (run ./scripts/bundle-spec first; ./scripts/check-breaking does both).

Every difference is classified:

* BREAKING (a client written against the release may fail): a removed or renamed path,
  operation, operationId or parameter; a new required parameter or request field; an optional
  parameter or request field made required; a narrowed request schema (type, enum value removed,
  tighter length/range/pattern/format, nullable or additional properties withdrawn); a removed
  response field, or one no longer always present, or its type changed, or made nullable; a
  removed success status or media type; tighter auth (security added to a public operation, an accepted scheme
  dropped, more `x-required-scopes`, a role granted fewer scopes); another server URL.
* ADDITION: a new path, operation, optional parameter, request or response field, enum value
  (in a response too: clients must tolerate values they do not know), status code, media type, security alternative, or scope granted to a role.
* CHANGE: anything else (descriptions, examples, a looser request constraint, a removed error
  status, looser auth, ...), and one narrowing that is not a break: the hub's free-text pattern
  (NUL_FREE_PATTERN) put on a string that had no pattern. It excludes only NUL, which the hub
  refuses in every string with 400 whatever the contract says (server/validation.py: PostgreSQL
  text cannot store it, so such a request never succeeded there): the pattern documents an
  existing refusal, it refuses nothing new.

The version rule (info.version is semver, the baseline's is the last release):
the change needs a MAJOR bump when breaking, MINOR for additions, PATCH for other changes, none
when the contract is unchanged. The check fails when info.version is not bumped at least that
much over the baseline, and on any breaking change unless `--allow-breaking` is given (a new
major version, which for this API also means a new base path).

Exit status: 0 pass, 1 fail, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ROOT / "openapi" / "releases"
CURRENT = ROOT / "build" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
STRUCTURE_KEYS = {"properties", "required", "items", "additionalProperties", "oneOf", "anyOf", "allOf", "enum",
                  "type", "nullable", "readOnly", "writeOnly"}
# The pattern the contract puts on free text (server/validation.py TEXT_PATTERN): anything but NUL.
NUL_FREE_PATTERN = "^[^\\u0000]*$"
CONSTRAINT_KEYS = {"maxLength", "maximum", "maxItems", "maxProperties", "minLength", "minimum", "minItems",
                   "minProperties", "exclusiveMaximum", "exclusiveMinimum", "uniqueItems", "pattern", "format",
                   "multipleOf"}


# --- loading ------------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    """Load a bundle (YAML or JSON)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def deref(doc: dict[str, Any]) -> dict[str, Any]:
    """Return `doc` with every local $ref replaced by (a copy of) its target."""

    def target(ref: str) -> Any:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                ref = node["$ref"]
                if not ref.startswith("#/"):
                    raise ValueError(f"external $ref {ref!r}: compare bundles, not sources")
                if ref in seen:
                    return {"x-recursive": ref}
                return resolve(target(ref), seen + (ref,))
            return {key: resolve(value, seen) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value, seen) for value in node]
        return node

    return resolve(doc, ())


def latest_release(directory: Path = RELEASES) -> Path:
    """The released bundle with the highest semver file name in `directory`."""
    releases = [(tuple(map(int, m.groups())), p) for p in directory.glob("*.yaml") if (m := SEMVER.match(p.stem))]
    if not releases:
        raise FileNotFoundError(f"no released bundle (<major>.<minor>.<patch>.yaml) in {directory}")
    return max(releases)[1]


# --- the comparison -----------------------------------------------------------------------------


@dataclass
class Report:
    breaking: list[str] = field(default_factory=list)
    additions: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    @property
    def bump(self) -> str:
        """The smallest version bump the differences need."""
        return "major" if self.breaking else "minor" if self.additions else "patch" if self.changes else "none"


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], tuple[str, dict, dict]]:
    """(METHOD, path template with anonymous params) -> (path, path item, operation)."""
    found = {}
    for path, item in (doc.get("paths") or {}).items():
        for method in HTTP_METHODS:
            if method in item:
                found[(method.upper(), _template(path))] = (path, item, item[method])
    return found


def _parameters(item: dict, op: dict) -> dict[tuple[str, str], dict]:
    merged = {}
    for param in (item.get("parameters") or []) + (op.get("parameters") or []):
        name = param["name"].lower() if param["in"] == "header" else param["name"]
        merged[(param["in"], name)] = param
    return merged


def _types(schema: dict) -> set[str]:
    if "type" in schema:
        return {schema["type"]}
    for key in ("allOf", "oneOf", "anyOf"):
        if key in schema:
            return set().union(*(_types(s) for s in schema[key] if isinstance(s, dict))) or {"any"}
    return {"any"}


def _flatten(schema: Any) -> Any:
    """Merge a single-member allOf (`{allOf: [X], readOnly: true}`) into one schema."""
    if isinstance(schema, dict) and isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
        merged = {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}
        return _flatten(merged)
    return schema


class SchemaDiff:
    """Direction-aware comparison of two resolved schemas.

    "request": what the server accepts must not shrink. "response": what the client receives
    must stay something it understands.
    """

    def __init__(self, report: Report, where: str, direction: str) -> None:
        self.report, self.where, self.direction = report, where, direction

    def _say(self, kind: str, at: str, message: str) -> None:
        getattr(self.report, kind).append(f"{self.where}: {message}")

    def compare(self, old: Any, new: Any, at: str = "", depth: int = 0) -> None:
        old, new = _flatten(old), _flatten(new)
        if not isinstance(old, dict) or not isinstance(new, dict) or depth > 40:
            if old != new:
                self._say("changes", at, f"{f'field {at!r}' if at else 'body'} schema changed")
            return
        request = self.direction == "request"
        label = f"field '{at}'" if at else "body"
        old_types, new_types = _types(old), _types(new)
        if old_types != new_types and "any" not in new_types:
            widened = old_types <= new_types or (old_types == {"integer"} and new_types == {"number"})
            narrowed = new_types <= old_types or (old_types == {"number"} and new_types == {"integer"})
            if request and widened or not request and narrowed:
                self._say("additions" if request else "changes", at,
                          f"{label} type widened from {'/'.join(sorted(old_types))} to {'/'.join(sorted(new_types))}"
                          if request else f"{label} type narrowed to {'/'.join(sorted(new_types))}")
            else:
                self._say("breaking", at, f"{label} type changed from {'/'.join(sorted(old_types))} to "
                                          f"{'/'.join(sorted(new_types))}")
                return
        self._nullable(old, new, at, label)
        self._enum(old, new, at, label)
        self._access(old, new, at, label)
        if request:
            self._request_constraints(old, new, at, label)
        self._properties(old, new, at, depth)
        if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
            self.compare(old["items"], new["items"], f"{at}[]", depth + 1)
        if isinstance(old.get("additionalProperties"), dict) and isinstance(new.get("additionalProperties"), dict):
            self.compare(old["additionalProperties"], new["additionalProperties"], f"{at}{{*}}", depth + 1)
        for key in ("oneOf", "anyOf", "allOf"):
            olds, news = old.get(key) or [], new.get(key) or []
            if len(olds) == len(news):
                for index, (o, n) in enumerate(zip(olds, news)):
                    self.compare(o, n, f"{at}({key}[{index}])", depth + 1)
            else:
                self._say("breaking", at, f"{label} {key} changed from {len(olds)} to {len(news)} alternatives")
        handled = STRUCTURE_KEYS | (CONSTRAINT_KEYS if request else set())
        rest = sorted(k for k in set(old) | set(new) if k not in handled and old.get(k) != new.get(k))
        if rest:
            self._say("changes", at, f"{label} details changed ({', '.join(rest)})")

    def _access(self, old: dict, new: dict, at: str, label: str) -> None:
        if self.direction == "request" and new.get("readOnly") and not old.get("readOnly"):
            self._say("breaking", at, f"{label} is now readOnly (no longer accepted in requests)")
        if self.direction == "response" and new.get("writeOnly") and not old.get("writeOnly"):
            self._say("breaking", at, f"{label} is now writeOnly (no longer returned)")

    def _nullable(self, old: dict, new: dict, at: str, label: str) -> None:
        was, now = bool(old.get("nullable")), bool(new.get("nullable"))
        if was == now:
            return
        if self.direction == "request":
            kind = "breaking" if was else "additions"
            self._say(kind, at, f"{label} {'no longer accepts' if was else 'now accepts'} null")
        else:
            kind = "breaking" if now else "changes"
            self._say(kind, at, f"{label} {'may now be null' if now else 'is never null any more'}")

    def _enum(self, old: dict, new: dict, at: str, label: str) -> None:
        if "enum" not in old and "enum" not in new:
            return
        if "enum" not in new:
            self._say("additions" if self.direction == "request" else "breaking", at,
                      f"{label} enum lifted (any value {'accepted' if self.direction == 'request' else 'may come back'})")
            return
        if "enum" not in old:
            self._say("breaking" if self.direction == "request" else "changes", at,
                      f"{label} narrowed to the enum {new['enum']}")
            return
        removed = [v for v in old["enum"] if v not in new["enum"]]
        added = [v for v in new["enum"] if v not in old["enum"]]
        if self.direction == "request":
            if removed:
                self._say("breaking", at, f"{label} enum narrowed: {removed} no longer accepted")
            if added:
                self._say("additions", at, f"{label} enum widened: {added} accepted")
        else:
            if added:  # an addition, as for any new value; clients must tolerate unknown values
                self._say("additions", at, f"{label} enum widened in a response: {added} may come back "
                                           "(regenerate clients: generated ones may reject values they do not know)")
            if removed:
                self._say("changes", at, f"{label} enum values {removed} no longer returned")

    def _request_constraints(self, old: dict, new: dict, at: str, label: str) -> None:
        tighter, looser = [], []
        for key, stricter in (("maxLength", min), ("maximum", min), ("maxItems", min), ("maxProperties", min),
                              ("minLength", max), ("minimum", max), ("minItems", max), ("minProperties", max)):
            o, n = old.get(key), new.get(key)
            if o == n:
                continue
            if n is not None and (o is None or stricter(o, n) == n):
                tighter.append(f"{key} {o if o is not None else 'none'} -> {n}")
            else:
                looser.append(f"{key} {o} -> {n if n is not None else 'none'}")
        for key in ("exclusiveMaximum", "exclusiveMinimum", "uniqueItems"):
            if bool(new.get(key)) != bool(old.get(key)):
                (tighter if new.get(key) else looser).append(f"{key} {'added' if new.get(key) else 'dropped'}")
        for key in ("pattern", "format", "multipleOf"):
            if old.get(key) != new.get(key):
                documents_refusal = key == "pattern" and "pattern" not in old and new["pattern"] == NUL_FREE_PATTERN
                (tighter if key in new and not documents_refusal else looser).append(
                    f"{key} {old.get(key)!r} -> {new.get(key)!r}" + (" (documents the NUL refusal)" if documents_refusal else ""))
        if old.get("additionalProperties") is not False and new.get("additionalProperties") is False:
            tighter.append("additional properties no longer accepted")
        elif old.get("additionalProperties") is False and new.get("additionalProperties") is not False:
            looser.append("additional properties accepted")
        if tighter:
            self._say("breaking", at, f"{label} narrowed: " + "; ".join(tighter))
        if looser:
            self._say("changes", at, f"{label} widened: " + "; ".join(looser))

    def _properties(self, old: dict, new: dict, at: str, depth: int) -> None:
        old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
        old_req, new_req = set(old.get("required") or []), set(new.get("required") or [])
        request = self.direction == "request"
        # A readOnly field is never sent, a writeOnly one never received: not part of that direction.
        unseen = "readOnly" if request else "writeOnly"
        for name in old_props:
            path = f"{at}.{name}" if at else name
            if _flatten(old_props[name]).get(unseen) if isinstance(old_props[name], dict) else False:
                if name not in new_props:
                    self._say("changes", path, f"field '{path}' ({unseen}) removed")
                continue
            if name not in new_props:
                if request and new.get("additionalProperties") is not False and not new_req & {name}:
                    self._say("changes", path, f"request field '{path}' no longer described")
                else:
                    self._say("breaking", path, f"{'request' if request else 'response'} field '{path}' removed")
                continue
            if request and name not in old_req and name in new_req:
                self._say("breaking", path, f"request field '{path}' is now required")
            if not request and name in old_req and name not in new_req:
                self._say("breaking", path, f"response field '{path}' is no longer always present")
            if request and name in old_req and name not in new_req:
                self._say("additions", path, f"request field '{path}' is now optional")
            self.compare(old_props[name], new_props[name], path, depth + 1)
        for name in new_props:
            if name in old_props:
                continue
            path = f"{at}.{name}" if at else name
            if request and name in new_req and not _flatten(new_props[name]).get("readOnly"):
                self._say("breaking", path, f"new required request field '{path}'")
            else:
                self._say("additions", path, f"new {'request' if request else 'response'} field '{path}'")


def _security(op: dict, doc: dict) -> list[dict]:
    return op.get("security", doc.get("security", []))


def _compare_operation(report: Report, where: str, base_doc: dict, old: tuple, current_doc: dict, new: tuple) -> None:
    (old_path, old_item, old_op), (new_path, new_item, new_op) = old, new
    if old_op.get("operationId") != new_op.get("operationId"):
        report.breaking.append(f"{where}: operationId renamed {old_op.get('operationId')!r} -> {new_op.get('operationId')!r} "
                               "(generated clients name their functions after it)")
    old_names = re.findall(r"\{([^}]+)\}", old_path)
    new_names = re.findall(r"\{([^}]+)\}", new_path)
    for o, n in zip(old_names, new_names):
        if o != n:
            report.breaking.append(f"{where}: path parameter '{o}' renamed to '{n}'")

    # Auth: a public operation that now needs a token, a dropped scheme, more required scopes.
    old_sec, new_sec = _security(old_op, base_doc), _security(new_op, current_doc)
    if old_sec != new_sec:
        if not old_sec and new_sec:
            report.breaking.append(f"{where}: security added to a public operation ({new_sec})")
        elif old_sec and not new_sec:
            report.changes.append(f"{where}: now public (security: [])")
        else:
            dropped = [alt for alt in old_sec if alt not in new_sec]
            if dropped:
                report.breaking.append(f"{where}: security requirement(s) {dropped} no longer accepted")
            if [alt for alt in new_sec if alt not in old_sec]:
                report.additions.append(f"{where}: security alternatives added")
    old_scopes, new_scopes = set(old_op.get("x-required-scopes") or []), set(new_op.get("x-required-scopes") or [])
    if new_scopes - old_scopes:
        report.breaking.append(f"{where}: x-required-scopes tightened, now also requires {sorted(new_scopes - old_scopes)}")
    if old_scopes - new_scopes:
        report.changes.append(f"{where}: x-required-scopes loosened, no longer requires {sorted(old_scopes - new_scopes)}")

    # Parameters.
    old_params, new_params = _parameters(old_item, old_op), _parameters(new_item, new_op)
    renamed_path_params = {("path", o): ("path", n) for o, n in zip(old_names, new_names) if o != n}
    for key, param in old_params.items():
        key_now = renamed_path_params.get(key, key)
        label = f"{param['in']} parameter '{param['name']}'"
        if key_now not in new_params:
            report.breaking.append(f"{where}: {label} removed")
            continue
        now = new_params[key_now]
        if not param.get("required") and now.get("required"):
            report.breaking.append(f"{where}: {label} is now required")
        SchemaDiff(report, f"{where} {label}", "request").compare(param.get("schema"), now.get("schema"))
    for key, param in new_params.items():
        if key in old_params or key in renamed_path_params.values():
            continue
        label = f"{param['in']} parameter '{param['name']}'"
        if param.get("required"):
            report.breaking.append(f"{where}: new required {label}")
        else:
            report.additions.append(f"{where}: new optional {label}")

    # Request body.
    old_body, new_body = old_op.get("requestBody"), new_op.get("requestBody")
    if new_body and not old_body:
        (report.breaking if new_body.get("required") else report.additions).append(
            f"{where}: {'required ' if new_body.get('required') else ''}request body added")
    elif old_body and not new_body:
        report.breaking.append(f"{where}: request body removed")
    elif old_body and new_body:
        if not old_body.get("required") and new_body.get("required"):
            report.breaking.append(f"{where}: request body is now required")
        for media, content in old_body.get("content", {}).items():
            if media not in new_body.get("content", {}):
                report.breaking.append(f"{where}: request media type {media} no longer accepted")
                continue
            SchemaDiff(report, f"{where} request body", "request").compare(content.get("schema"), new_body["content"][media].get("schema"))
        for media in new_body.get("content", {}):
            if media not in old_body.get("content", {}):
                report.additions.append(f"{where}: request media type {media} accepted")

    # Responses.
    old_resp, new_resp = old_op.get("responses") or {}, new_op.get("responses") or {}
    for status, response in old_resp.items():
        success = status[0] in "23"
        if status not in new_resp:
            (report.breaking if success else report.changes).append(
                f"{where}: {'success' if success else 'error'} status {status} removed")
            continue
        now = new_resp[status]
        for media, content in (response.get("content") or {}).items():
            if media not in (now.get("content") or {}):
                report.breaking.append(f"{where}: response {status} media type {media} removed")
                continue
            SchemaDiff(report, f"{where} response {status}", "response").compare(content.get("schema"), now["content"][media].get("schema"))
        for media in (now.get("content") or {}):
            if media not in (response.get("content") or {}):
                report.additions.append(f"{where}: response {status} media type {media} added")
    for status in new_resp:
        if status not in old_resp:
            report.additions.append(f"{where}: status {status} documented")


def compare(base: dict[str, Any], current: dict[str, Any]) -> Report:
    """Classify every difference between two bundles (`base` released, `current` proposed)."""
    report = Report()
    base_doc, current_doc = deref(base), deref(current)
    if [s.get("url") for s in base_doc.get("servers", [])] != [s.get("url") for s in current_doc.get("servers", [])]:
        report.breaking.append(f"servers changed: {base_doc.get('servers')} -> {current_doc.get('servers')}")

    old_ops, new_ops = _operations(base_doc), _operations(current_doc)
    old_paths = {_template(p) for p in base_doc.get("paths", {})}
    new_paths = {_template(p) for p in current_doc.get("paths", {})}
    for key, old in old_ops.items():
        method, _ = key
        where = f"{method} {old[0]} ({old[2].get('operationId')})"
        if key not in new_ops:
            what = "path removed" if _template(old[0]) not in new_paths else "operation removed"
            report.breaking.append(f"{where}: {what}")
            continue
        _compare_operation(report, where, base_doc, old, current_doc, new_ops[key])
    for key, new in new_ops.items():
        if key not in old_ops:
            kind = "new path" if _template(new[0]) not in old_paths else "new operation"
            report.additions.append(f"{key[0]} {new[0]} ({new[2].get('operationId')}): {kind}")

    # Security schemes and the scopes roles hold.
    old_schemes = base_doc.get("components", {}).get("securitySchemes", {})
    new_schemes = current_doc.get("components", {}).get("securitySchemes", {})
    for name, scheme in old_schemes.items():
        if name not in new_schemes:
            report.breaking.append(f"security scheme '{name}' removed")
            continue
        old_roles, new_roles = scheme.get("x-role-scopes") or {}, new_schemes[name].get("x-role-scopes") or {}
        for role, scopes in old_roles.items():
            lost = sorted(set(scopes) - set(new_roles.get(role, [])))
            if lost:
                report.breaking.append(f"security scheme '{name}': role '{role}' no longer granted {lost}")
        for role, scopes in new_roles.items():
            gained = sorted(set(scopes) - set(old_roles.get(role, [])))
            if gained:
                report.additions.append(f"security scheme '{name}': role '{role}' now granted {gained}")
        if {k: v for k, v in scheme.items() if k != "x-role-scopes"} != {k: v for k, v in new_schemes[name].items() if k != "x-role-scopes"}:
            report.changes.append(f"security scheme '{name}' changed")

    # Anything else (descriptions, examples, tags, info...) is a change that needs a patch.
    def unversioned(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "info": {k: v for k, v in doc.get("info", {}).items() if k != "version"}}

    if not (report.breaking or report.additions or report.changes) and unversioned(base) != unversioned(current):
        report.changes.append("descriptions, examples or other documentation changed")
    # The same fact may be found twice (a parameter at path and operation level): say it once.
    report.breaking, report.additions, report.changes = (list(dict.fromkeys(x)) for x in
                                                          (report.breaking, report.additions, report.changes))
    return report


# --- the version rule ---------------------------------------------------------------------------


def version_problem(base_version: str, current_version: str, bump: str) -> str | None:
    """Return why `current_version` is not bumped enough over `base_version` for `bump`, or None."""
    for label, value in (("baseline", base_version), ("current", current_version)):
        if not SEMVER.match(str(value)):
            return f"the {label} info.version {value!r} is not semver (MAJOR.MINOR.PATCH)"
    old = tuple(map(int, SEMVER.match(str(base_version)).groups()))
    new = tuple(map(int, SEMVER.match(str(current_version)).groups()))
    needed = {
        "none": new >= old,
        "patch": new > old,
        "minor": new[0] > old[0] or (new[0] == old[0] and new[1] > old[1]),
        "major": new[0] > old[0],
    }[bump]
    if needed:
        return None
    if bump == "none":
        return f"info.version {current_version} is lower than the released {base_version}"
    minimum = {"patch": (old[0], old[1], old[2] + 1), "minor": (old[0], old[1] + 1, 0), "major": (old[0] + 1, 0, 0)}[bump]
    return (f"info.version is {current_version} but the changes need a {bump.upper()} bump over the released "
            f"{base_version}: set it to {'.'.join(map(str, minimum))} or higher in openapi/openapi.yaml")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def check(base_path: Path, current_path: Path, *, allow_breaking: bool = False, out=sys.stdout) -> int:
    """Print the comparison of two bundles and return the exit status (0 pass, 1 fail)."""
    base, current = load(base_path), load(current_path)
    report = compare(base, current)
    base_version, current_version = base.get("info", {}).get("version"), current.get("info", {}).get("version")

    def say(text: str = "") -> None:
        print(text, file=out)

    say(f"Comparing {_shown(current_path)} (info.version {current_version}) with the release {_shown(base_path)}")
    for title, items, mark in (("Breaking changes", report.breaking, "!"), ("Additions", report.additions, "+"),
                               ("Other changes", report.changes, "~")):
        if items:
            say(f"{title} ({len(items)}):")
            for item in items:
                say(f"  {mark} {item}")
    say({"none": "No change to the contract: no version bump needed.",
         "patch": "The changes need a PATCH version bump (no new surface, nothing breaking).",
         "minor": "The changes need a MINOR version bump (additions, nothing breaking).",
         "major": "The changes need a MAJOR version bump (breaking changes)."}[report.bump])
    failures = []
    if report.breaking and not allow_breaking:
        failures.append(f"{len(report.breaking)} breaking change(s) against the released contract {base_version}; "
                        "keep the old behaviour (add, deprecate, then remove in a new major version)")
    problem = version_problem(base_version, current_version, report.bump)
    if problem:
        failures.append(problem)
    for failure in failures:
        say(f"FAIL: {failure}")
    if not failures:
        say(f"OK: info.version {current_version} fits the changes since {base_version}.")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="the released bundle (default: the highest version in openapi/releases/)")
    parser.add_argument("--current", type=Path, default=CURRENT, help="the proposed bundle (default: build/openapi.yaml)")
    parser.add_argument("--allow-breaking", action="store_true", help="accept breaking changes (a new major version)")
    args = parser.parse_args(argv)
    try:
        base = args.base or latest_release()
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    for path in (base, args.current):
        if not path.exists():
            print(f"{path} does not exist (run ./scripts/bundle-spec)", file=sys.stderr)
            return 2
    return check(base, args.current, allow_breaking=args.allow_breaking)


if __name__ == "__main__":
    sys.exit(main())
