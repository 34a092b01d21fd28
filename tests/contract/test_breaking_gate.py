"""The breaking-change gate (scripts/check_breaking.py): each kind of breaking change, made on a
copy of the real bundle, fails with a message naming what broke; additions pass with a MINOR
bump; the version rule holds; and the current bundle passes against openapi/releases/."""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import sys

import pytest

from tests.contract.spec_tools import BUILD, ROOT, run

_spec = importlib.util.spec_from_file_location("check_breaking", ROOT / "scripts" / "check_breaking.py")
gate = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("check_breaking", gate)
_spec.loader.exec_module(gate)


def schema(doc: dict, name: str) -> dict:
    return doc["components"]["schemas"][name]


def param(name: str, *, required: bool = False, where: str = "query") -> dict:
    return {"name": name, "in": where, "required": required, "schema": {"type": "string", "maxLength": 20}}


def gate_output(base: dict, current: dict, tmp_path, *, allow_breaking: bool = False) -> tuple[int, str]:
    """Run the gate on two bundles written as files; return (exit status, what it printed)."""
    base_file, current_file = tmp_path / "base.json", tmp_path / "current.json"
    base_file.write_text(json.dumps(base))
    current_file.write_text(json.dumps(current))
    out = io.StringIO()
    status = gate.check(base_file, current_file, allow_breaking=allow_breaking, out=out)
    return status, out.getvalue()


def bumped(doc: dict, version: str) -> dict:
    doc["info"]["version"] = version
    return doc


# Each: (id, mutation of a copy of the bundle, text the failure must contain).
def _remove_operation(d):
    del d["paths"]["/auth/me"]["get"]


def _remove_path(d):
    del d["paths"]["/tenant/api-tokens/{tokenId}"]


def _rename_path(d):
    d["paths"]["/auth/whoami"] = d["paths"].pop("/auth/me")


def _rename_operation_id(d):
    d["paths"]["/auth/me"]["get"]["operationId"] = "who_am_i"


def _remove_parameter(d):
    op = d["paths"]["/integrations"]["get"]
    op["parameters"] = [p for p in op["parameters"] if p.get("$ref") != "#/components/parameters/Search"]


def _rename_parameter(d):
    op = d["paths"]["/integrations"]["get"]
    op["parameters"] = [p for p in op["parameters"] if p.get("$ref") != "#/components/parameters/Search"] + [param("q")]


def _rename_path_parameter(d):
    item = d["paths"].pop("/tenant/users/{userId}")
    item["parameters"] = [{"name": "id", "in": "path", "required": True, "schema": {"$ref": "#/components/schemas/Uuid"}}]
    d["paths"]["/tenant/users/{id}"] = item


def _remove_response_field(d):
    tokens = schema(d, "AuthTokens")
    del tokens["properties"]["expiresIn"]
    tokens["required"].remove("expiresIn")
    del tokens["example"]["expiresIn"]


def _rename_response_field(d):
    tokens = schema(d, "AuthTokens")
    tokens["properties"]["expiresInSeconds"] = tokens["properties"].pop("expiresIn")
    tokens["required"] = ["expiresInSeconds" if r == "expiresIn" else r for r in tokens["required"]]


def _optional_response_field(d):
    schema(d, "Tenant")["required"].remove("plan")


def _new_required_request_field(d):
    login = schema(d, "LoginRequest")
    login["properties"]["otp"] = {"type": "string", "maxLength": 8}
    login["required"].append("otp")


def _new_required_parameter(d):
    d["paths"]["/integrations"]["get"]["parameters"].append(param("region", required=True))


def _optional_parameter_required(d):
    d["components"]["parameters"]["Search"]["required"] = True


def _narrowed_enum(d):
    schema(d, "Category")["enum"].remove("custom")


def _narrowed_type(d):
    schema(d, "IntegrationCreate")["properties"]["name"] = {"type": "integer", "minimum": 0, "maximum": 10}


def _narrowed_length(d):
    schema(d, "RegisterRequest")["properties"]["name"]["maxLength"] = 20


def _no_longer_nullable(d):
    schema(d, "ApiTokenCreate")["properties"]["expiresAt"]["nullable"] = False


def _removed_success_status(d):
    responses = d["paths"]["/auth/login"]["post"]["responses"]
    responses["201"] = responses.pop("200")


def _security_on_public_operation(d):
    d["paths"]["/auth/login"]["post"]["security"] = [{"bearerAuth": []}]


def _more_required_scopes(d):
    d["paths"]["/auth/me"]["get"]["x-required-scopes"].append("users:read")


def _scheme_dropped(d):
    d["paths"]["/auth/me"]["get"]["security"] = [{"bearerAuth": []}]


def _role_loses_scope(d):
    d["components"]["securitySchemes"]["bearerAuth"]["x-role-scopes"]["user"].remove("catalog:read")


BREAKING = [
    ("operation removed", _remove_operation, "GET /auth/me (get_me): operation removed"),
    ("path removed", _remove_path, "DELETE /tenant/api-tokens/{tokenId} (revoke_api_token): path removed"),
    ("path renamed", _rename_path, "GET /auth/me (get_me): path removed"),
    ("operationId renamed", _rename_operation_id, "operationId renamed 'get_me' -> 'who_am_i'"),
    ("parameter removed", _remove_parameter, "GET /integrations (list_catalog): query parameter 'search' removed"),
    ("parameter renamed", _rename_parameter, "query parameter 'search' removed"),
    ("path parameter renamed", _rename_path_parameter, "path parameter 'userId' renamed to 'id'"),
    ("response field removed", _remove_response_field, "POST /auth/login (login) response 200: response field 'expiresIn' removed"),
    ("response field renamed", _rename_response_field, "response field 'expiresIn' removed"),
    ("response field optional", _optional_response_field, "response field 'plan' is no longer always present"),
    ("new required request field", _new_required_request_field, "POST /auth/login (login) request body: new required request field 'otp'"),
    ("new required parameter", _new_required_parameter, "GET /integrations (list_catalog): new required query parameter 'region'"),
    ("optional parameter required", _optional_parameter_required, "query parameter 'search' is now required"),
    ("narrowed enum", _narrowed_enum, "enum narrowed: ['custom'] no longer accepted"),
    ("narrowed type", _narrowed_type, "POST /tenant/integrations (create_tenant_integration) request body: field 'name' type changed from string to integer"),
    ("narrowed length", _narrowed_length, "field 'name' narrowed: maxLength 200 -> 20"),
    ("no longer nullable", _no_longer_nullable, "field 'expiresAt' no longer accepts null"),
    ("success status removed", _removed_success_status, "POST /auth/login (login): success status 200 removed"),
    ("security added to a public operation", _security_on_public_operation, "POST /auth/login (login): security added to a public operation"),
    ("more required scopes", _more_required_scopes, "GET /auth/me (get_me): x-required-scopes tightened, now also requires ['users:read']"),
    ("auth scheme dropped", _scheme_dropped, "security requirement(s) [{'apiKeyAuth': []}, {'cookieAuth': []}] no longer accepted"),
    ("role loses a scope", _role_loses_scope, "role 'user' no longer granted ['catalog:read']"),
]


@pytest.fixture(scope="module")
def released(api_bundle) -> dict:
    """The current bundle, standing in for the last release (version 1.0.0)."""
    return bumped(copy.deepcopy(api_bundle), "1.0.0")


@pytest.mark.parametrize("mutate,expected", [pytest.param(m, e, id=i) for i, m, e in BREAKING])
def test_breaking_change_fails_naming_what_broke(released, tmp_path, mutate, expected):
    current = bumped(copy.deepcopy(released), "1.1.0")
    mutate(current)
    status, output = gate_output(released, current, tmp_path)
    assert status == 1, output
    assert expected in output, output
    assert "The changes need a MAJOR version bump (breaking changes)." in output
    assert "FAIL:" in output and "breaking change(s) against the released contract 1.0.0" in output


def test_a_major_bump_with_allow_breaking_passes(released, tmp_path):
    current = bumped(copy.deepcopy(released), "2.0.0")
    _remove_operation(current)
    assert gate_output(released, current, tmp_path, allow_breaking=True)[0] == 0
    assert gate_output(released, bumped(current, "1.1.0"), tmp_path, allow_breaking=True)[0] == 1


def _additions(d):
    d["paths"]["/auth/sessions"] = {"get": {**copy.deepcopy(d["paths"]["/auth/me"]["get"]), "operationId": "list_sessions"}}
    d["paths"]["/integrations"]["get"]["parameters"].append(param("region"))
    schema(d, "Tenant")["properties"]["region"] = {"type": "string", "maxLength": 20}
    schema(d, "Tenant")["required"].append("region")
    schema(d, "LoginRequest")["properties"]["rememberMe"] = {"type": "boolean"}
    schema(d, "Category")["enum"].append("analytics")
    d["paths"]["/auth/login"]["post"]["responses"]["202"] = copy.deepcopy(d["paths"]["/auth/login"]["post"]["responses"]["200"])


def test_additions_pass_with_a_minor_bump(released, tmp_path):
    current = bumped(copy.deepcopy(released), "1.1.0")
    _additions(current)
    status, output = gate_output(released, current, tmp_path)
    assert status == 0, output
    assert "Breaking changes" not in output
    for expected in ("GET /auth/sessions (list_sessions): new path",
                     "GET /integrations (list_catalog): new optional query parameter 'region'",
                     "new response field 'region'", "new request field 'rememberMe'",
                     "enum widened: ['analytics'] accepted", "enum widened in a response: ['analytics'] may come back",
                     "POST /auth/login (login): status 202 documented",
                     "The changes need a MINOR version bump", "OK: info.version 1.1.0"):
        assert expected in output, output


@pytest.mark.parametrize("version,passes", [("1.0.0", False), ("1.0.1", False), ("1.1.0", True), ("2.0.0", True)])
def test_additions_need_a_minor_bump(released, tmp_path, version, passes):
    current = bumped(copy.deepcopy(released), version)
    _additions(current)
    status, output = gate_output(released, current, tmp_path)
    assert (status == 0) is passes, output
    if not passes:
        assert "need a MINOR bump over the released 1.0.0: set it to 1.1.0 or higher" in output, output


@pytest.mark.parametrize("version,passes", [("1.0.0", False), ("0.9.9", False), ("1.0.1", True), ("1.2.0", True)])
def test_documentation_changes_need_a_patch_bump(released, tmp_path, version, passes):
    current = bumped(copy.deepcopy(released), version)
    current["paths"]["/auth/me"]["get"]["summary"] = "Who am I"
    status, output = gate_output(released, current, tmp_path)
    assert "The changes need a PATCH version bump" in output, output
    assert (status == 0) is passes, output


def test_no_change_needs_no_bump_but_never_a_lower_version(released, tmp_path):
    assert gate_output(released, copy.deepcopy(released), tmp_path)[0] == 0
    status, output = gate_output(released, bumped(copy.deepcopy(released), "0.9.0"), tmp_path)
    assert status == 1 and "lower than the released 1.0.0" in output, output


def test_fields_a_direction_never_carries_are_not_breaking(released, tmp_path):
    """A writeOnly field leaving a response (it was never returned) is not breaking there; it is
    in the requests that could send it."""
    current = bumped(copy.deepcopy(released), "1.0.1")
    del schema(current, "OAuthConfig")["properties"]["clientSecret"]
    status, output = gate_output(released, current, tmp_path)
    assert "response 201: field 'oauthConfig.clientSecret' (writeOnly) removed" in output, output
    assert "response field 'oauthConfig.clientSecret' removed" not in output, output
    assert "(create_provider) request body: request field 'oauthConfig.clientSecret' removed" in output, output
    assert status == 1


def test_looser_request_constraints_and_auth_are_not_breaking(released, tmp_path):
    current = bumped(copy.deepcopy(released), "1.0.1")
    schema(current, "RegisterRequest")["properties"]["name"]["maxLength"] = 400
    current["paths"]["/auth/me"]["get"]["x-required-scopes"] = []
    status, output = gate_output(released, current, tmp_path)
    assert status == 0, output
    assert "widened: maxLength 200 -> 400" in output and "x-required-scopes loosened" in output


def test_the_nul_free_pattern_on_free_text_is_not_breaking(released, tmp_path):
    """The hub refuses NUL in every string (server/validation.py); the pattern only says so."""
    base = bumped(copy.deepcopy(released), "1.0.0")
    schema(base, "RegisterRequest")["properties"]["name"].pop("pattern", None)
    current = bumped(copy.deepcopy(base), "1.0.1")
    schema(current, "RegisterRequest")["properties"]["name"]["pattern"] = gate.NUL_FREE_PATTERN
    status, output = gate_output(base, current, tmp_path)
    assert status == 0, output
    assert "(documents the NUL refusal)" in output


def test_any_other_new_pattern_is_still_breaking(released, tmp_path):
    base = bumped(copy.deepcopy(released), "1.0.0")
    schema(base, "RegisterRequest")["properties"]["name"].pop("pattern", None)
    current = bumped(copy.deepcopy(base), "1.0.1")
    schema(current, "RegisterRequest")["properties"]["name"]["pattern"] = "^[^\\u0000<>]*$"
    status, output = gate_output(base, current, tmp_path)
    assert status == 1
    assert "field 'name' narrowed: pattern None" in output, output


def test_the_gate_knows_the_pattern_the_hub_enforces():
    from server.validation import TEXT_PATTERN

    assert gate.NUL_FREE_PATTERN == TEXT_PATTERN


def test_current_bundle_passes_against_the_last_release(bundle_output):
    """The real gate, as CI and developers run it: build/openapi.yaml vs openapi/releases/."""
    releases = sorted((ROOT / "openapi" / "releases").glob("*.yaml"))
    assert releases, "openapi/releases/ holds no released bundle"
    result = run([sys.executable, "scripts/check_breaking.py", "--current", str(BUILD / "openapi.yaml")], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: info.version" in result.stdout
