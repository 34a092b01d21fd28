"""The published contract: `./scripts/bundle-spec` joins the multi-file sources into one valid
OpenAPI 3.0.3 document per served API, keeps the declared component names, passes Redocly's
`recommended` ruleset with zero errors, and describes exactly what the running hub serves."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from tests.contract.spec_tools import BUILD, ROOT, deref, operations

SOURCES = {"api": ROOT / "openapi" / "openapi.yaml", "root": ROOT / "openapi" / "root.yaml"}
FILES = {"api": BUILD / "openapi", "root": BUILD / "openapi-root"}
SERVED = {"api": "/api/v1/openapi.json", "root": "/openapi.json"}


def surface(doc: dict) -> dict[str, dict]:
    """Per operationId: route, security, parameters and request/response schemas, all resolved."""
    found = {}
    for operation in operations(doc):
        op = deref(doc, operation.op)
        body = op.get("requestBody") or {}
        found[operation.operation_id] = {
            "route": f"{operation.method.upper()} {operation.path}",
            "security": op.get("security", doc.get("security")),
            "x-required-scopes": op.get("x-required-scopes"),
            "parameters": sorted(
                ({"name": p["name"], "in": p["in"], "required": p.get("required", False), "schema": p.get("schema")}
                 for p in operation.parameters(doc)),
                key=lambda p: (p["in"], p["name"]),
            ),
            "requestBody": {"required": body.get("required", False),
                            **{media: m.get("schema") for media, m in (body.get("content") or {}).items()}},
            "responses": {status: {media: m.get("schema") for media, m in (r.get("content") or {}).items()}
                          for status, r in op["responses"].items()},
        }
    return found


@pytest.mark.parametrize("name", ["api", "root"])
class TestBundle:
    def test_is_one_valid_openapi_3_0_3_document(self, bundles, name):
        doc = bundles[name]
        assert doc["openapi"] == "3.0.3"
        text = json.dumps(doc)
        refs = set(re.findall(r'"\$ref": "([^"]*)"', text))
        assert refs and all(ref.startswith("#/components/") for ref in refs), sorted(r for r in refs if not r.startswith("#/"))
        try:
            validate(doc)
        except OpenAPIValidationError as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"build/{FILES[name].name}.json is not valid OpenAPI 3.0: {exc}")

    def test_yaml_and_json_say_the_same(self, bundles, name):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        assert yaml.load(FILES[name].with_suffix(".yaml").read_text(), Loader=loader) == bundles[name]

    def test_shared_anchor_holders_do_not_leak(self, bundles, name):
        assert "_shared" not in json.dumps(bundles[name])

    def test_components_keep_their_declared_names(self, bundles, name):
        source = yaml.safe_load(SOURCES[name].read_text())
        components = bundles[name]["components"]
        for section, entries in source["components"].items():
            for component in entries:
                bundled = components[section].get(component)
                assert bundled is not None, f"#/components/{section}/{component} is missing from the bundle"
                assert set(bundled) != {"$ref"}, f"#/components/{section}/{component} is only an alias: {bundled}"
        made_up = [f"{section}/{c}" for section, entries in components.items() for c in entries if re.search(r"-\d+$", c)]
        assert not made_up, f"names the bundler made up: {made_up}"

    def test_every_operation_is_bundled(self, bundles, name):
        source_paths = yaml.safe_load(SOURCES[name].read_text())["paths"]
        assert list(bundles[name]["paths"]) == list(source_paths)

    def test_served_contract_describes_the_same_operations(self, client, bundles, name):
        """The running hub serves (fully dereferenced by Connexion) what the bundle publishes."""
        response = client.get(SERVED[name])
        assert response.status_code == 200, response.text
        served, published = surface(response.json()), surface(bundles[name])
        assert sorted(served) == sorted(published)
        for operation_id in published:
            assert served[operation_id] == published[operation_id], operation_id


def test_lint_passes_redocly_recommended_with_zero_errors(bundle_output):
    """bundle-spec exits non-zero on a lint error; here the printed report is checked too."""
    assert "validating build/openapi.yaml" in bundle_output and "validating build/openapi-root.yaml" in bundle_output
    errors = [line for line in bundle_output.splitlines() if re.match(r"\s*\d+:\d+\s+error\s", line)]
    assert not errors, "\n".join(errors)
    assert "Your API descriptions are valid" in bundle_output
