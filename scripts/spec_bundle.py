"""Finish a Redocly bundle of the contract: keep the component names the source declares.

`./scripts/bundle-spec` runs `redocly bundle` (which joins the multi-file sources into one
document and hoists every external $ref into `components`), then this module:

* gives back each component the name the source root declares for it. Redocly names a hoisted
  component after the last segment of its JSON pointer, so two different files' `#/X` clash and
  one becomes `X-2`; when the root declares that component under another name
  (`ConnectionCheck: {$ref: components/connections.yaml#/ConnectionTestResult}`), the bundle would
  keep only a `ConnectionCheck -> X-2` alias. The content moves under the declared name and
  every $ref follows it.
* refuses a bundle that still holds a `_shared` key (the path files' YAML anchor holders are
  not part of the contract) or an external $ref;
* writes the result as `<out>.json` and `<out>.yaml` from the same object.

Usage: python scripts/spec_bundle.py RAW_BUNDLE.json SOURCE_ROOT.yaml OUT_BASE
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

COMPONENT_PREFIX = "#/components/"


def walk_refs(node: Any, visit) -> None:
    """Call `visit(mapping)` on every mapping holding a `$ref`, depth first."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            visit(node)
        for value in node.values():
            walk_refs(value, visit)
    elif isinstance(node, list):
        for value in node:
            walk_refs(value, visit)


def restore_declared_names(bundle: dict[str, Any], declared: dict[str, set[str]]) -> list[str]:
    """Move aliased components under the names the source root declares; return what moved.

    `declared` maps a components section (schemas, responses, ...) to the names the source root
    lists there. A declared name whose bundled value is only `{$ref: #/components/<s>/<other>}`,
    where `<other>` is a name the bundler made up, takes `<other>`'s content.
    """
    components = bundle.get("components", {})
    renames: dict[str, str] = {}
    for section, names in declared.items():
        entries = components.get(section, {})
        for name in sorted(names):
            value = entries.get(name)
            if not (isinstance(value, dict) and set(value) == {"$ref"}):
                continue
            target = value["$ref"].removeprefix(f"{COMPONENT_PREFIX}{section}/")
            if target == value["$ref"] or target in names or target not in entries:
                continue  # an alias to another declared component is the source's own choice
            if f"{COMPONENT_PREFIX}{section}/{target}" in renames:
                continue  # two declared names for one made-up one: the first keeps the content
            entries[name] = entries.pop(target)
            renames[f"{COMPONENT_PREFIX}{section}/{target}"] = f"{COMPONENT_PREFIX}{section}/{name}"

    def follow(ref_holder: dict) -> None:
        if ref_holder["$ref"] in renames:
            ref_holder["$ref"] = renames[ref_holder["$ref"]]

    walk_refs(bundle, follow)
    return [f"{old.rsplit('/', 1)[1]} -> {new.rsplit('/', 1)[1]}" for old, new in renames.items()]


def problems(bundle: dict[str, Any]) -> list[str]:
    """Return what makes the bundle unfit to publish: leaked `_shared` keys, external $refs."""
    found: list[str] = []

    def scan(node: Any, pointer: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_shared":
                    found.append(f"{pointer}/_shared: a YAML anchor holder leaked into the bundle")
                if key == "$ref" and isinstance(value, str) and not value.startswith("#/"):
                    found.append(f"{pointer}: external $ref {value!r} left in the bundle")
                scan(value, f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                scan(value, f"{pointer}/{index}")

    scan(bundle, "#")
    return found


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def write(bundle: dict[str, Any], out_base: Path) -> None:
    """Write `<out_base>.json` and `<out_base>.yaml` (same content, key order kept)."""
    _write_atomically(out_base.with_suffix(".json"), json.dumps(bundle, indent=2, ensure_ascii=False) + "\n")
    _write_atomically(out_base.with_suffix(".yaml"),
                      yaml.dump(bundle, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                                allow_unicode=True, width=120))


def main(argv: list[str]) -> int:
    """Finish the raw Redocly bundle `argv[0]` of source root `argv[1]` into `argv[2]`.{json,yaml}."""
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    raw, source_root, out_base = Path(argv[0]), Path(argv[1]), Path(argv[2])
    bundle = json.loads(raw.read_text(encoding="utf-8"))
    root = yaml.safe_load(source_root.read_text(encoding="utf-8"))
    declared = {section: set(entries) for section, entries in (root.get("components") or {}).items()}
    for moved in restore_declared_names(bundle, declared):
        print(f"  kept the declared component name: {moved}")
    found = problems(bundle)
    if found:
        print("\n".join(f"  {p}" for p in found), file=sys.stderr)
        return 1
    write(bundle, out_base)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
