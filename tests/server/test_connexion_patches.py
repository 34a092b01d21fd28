"""server/connexion_patches.py and the spec cache of server.app.load_spec.

The first test fails when an upgrade of Connexion changes a function the patches replace or
rely on: re-read the new source, check the patch still holds, then update the pinned digest.
"""

from __future__ import annotations

import hashlib
import inspect
import json

import pytest
from connexion import security as connexion_security
from connexion.decorators import parameter as connexion_parameter
from connexion.spec import Specification

from server import app as app_module
from server import connexion_patches

# sha256 of the source of each function named in connexion_patches.PATCHED, for Connexion 3.3.0.
PINNED = {
    "connexion.apps.asynchronous.AsyncOperation.fn": "9cad70e32840c9ec",
    "connexion.decorators.main.ASGIDecorator.__call__": "7397ac94437e4d7e",
    "connexion.decorators.main.BaseDecorator.decorate": "ecc6529a18274fda",
    "connexion.decorators.main.BaseDecorator.uri_parser": "140072be21d36da0",
    "connexion.security.AbstractSecurityHandler._accepts_kwarg": "f04f41d0fb5eea37",
    "connexion.security.AbstractSecurityHandler._generic_check": "28e23fb07ef65fb6",
    "connexion.spec.Specification.load": "d78c7b7508c83891",
    "connexion.spec.Specification.__init__": "4db416e79b8b3f11",
    "connexion.spec.OpenAPISpecification.base_path": "b722dfbf6031db37",
    "connexion.spec.Specification.clone": "0724b7a4faaa587e",
    "connexion.spec.Specification.with_base_path": "21e32bfe0dd9d277",
}


def _digest(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def test_the_patched_connexion_internals_are_the_ones_the_patches_were_written_for():
    found = {name: _digest(get()) for name, get in connexion_patches.PATCHED.items()}
    changed = {name: digest for name, digest in found.items() if PINNED.get(name) != digest}
    assert not changed, (
        f"Connexion changed what server/connexion_patches.py patches or relies on: {sorted(changed)}. "
        "Re-check each patch against the new source, then pin the new digests: " + json.dumps(found, indent=1))


def count_signature_reads_in(module, monkeypatch) -> list[str]:
    """Count the calls `module` makes to Connexion's `inspect_function_arguments`, by function name."""
    calls: list[str] = []
    original = module.inspect_function_arguments

    def counting(function):
        calls.append(function.__name__)
        return original(function)

    monkeypatch.setattr(module, "inspect_function_arguments", counting)
    return calls


@pytest.fixture
def count_signature_reads(monkeypatch):
    """Count the handler decorators' signature inspections (what the chain cache saves)."""
    return count_signature_reads_in(connexion_parameter, monkeypatch)


# An operation server/pipeline.py leaves to Connexion's own app (its handler takes **kwargs), so
# it runs through the decorator chain these patches build once.
THROUGH_CONNEXION = ("/api/v1/tenant/audit-logs", "list_tenant_audit_logs")


def test_the_decorator_chain_is_built_once_per_operation(client, tenant_admin, count_signature_reads):
    path, handler = THROUGH_CONNEXION
    for _ in range(4):
        assert client.get(path, headers=tenant_admin.headers).status_code == 200
    # Built when the operation first ran (possibly before this test), never per request.
    assert count_signature_reads.count(handler) <= 1


def test_without_the_patch_connexion_rebuilds_the_chain_per_request(client, tenant_admin, count_signature_reads):
    # The control for the test above: Connexion's own `fn` inspects the handler on every request.
    path, handler = THROUGH_CONNEXION
    connexion_patches.uninstall()
    try:
        for _ in range(3):
            assert client.get(path, headers=tenant_admin.headers).status_code == 200
    finally:
        connexion_patches.install()
    assert count_signature_reads.count(handler) == 3


def test_the_security_handler_inspects_the_bearer_function_once(client, tenant_admin, monkeypatch):
    calls = count_signature_reads_in(connexion_security, monkeypatch)
    connexion_patches._accepts_kwarg.cache_clear()
    for _ in range(4):
        assert client.get("/api/v1/auth/me", headers=tenant_admin.headers).status_code == 200
    # Once per keyword (required_scopes, request), not twice per request.
    assert calls.count("authenticate_bearer") == 2


def test_handlers_still_receive_their_arguments_through_the_cached_chain(client, tenant_admin):
    created = client.post("/api/v1/tenant/users", headers=tenant_admin.headers,
                          json={"email": "patched-chain@example.com", "name": "Chain", "role": "user",
                                "password": "a-long-enough-password"})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    fetched = client.get(f"/api/v1/tenant/users/{user_id}", headers=tenant_admin.headers)
    assert fetched.status_code == 200
    assert fetched.json()["email"] == "patched-chain@example.com"
    listed = client.get("/api/v1/tenant/users", params={"limit": 1}, headers=tenant_admin.headers)
    assert listed.status_code == 200
    assert len(listed.json()["users"]) == 1


def test_serving_the_contract_does_not_validate_it_again(client, monkeypatch):
    def refuse(cls, spec):
        raise AssertionError("the served spec was validated again")

    monkeypatch.setattr(Specification, "_validate_spec", classmethod(refuse))
    first = client.get("/api/v1/openapi.json")
    second = client.get("/api/v1/openapi.json")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["paths"]["/auth/me"]["get"]["operationId"] == "get_me"


def test_the_served_contract_is_the_untouched_one(client):
    # Validating a body makes Connexion attach `components` to the operation's schema; the
    # served copy comes from the untouched spec, so it never shows that.
    assert client.post("/api/v1/auth/register", json={"email": "x"}).status_code == 400
    served = client.get("/api/v1/openapi.json").json()
    schema = served["paths"]["/auth/register"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "components" not in schema
    assert served["servers"] == [{"url": "/api/v1"}]


def test_a_resolved_specification_keeps_one_copy_per_base_path():
    spec = connexion_patches.ResolvedSpecification(app_module.load_spec(app_module.ROOT_SPEC))
    assert spec.with_base_path("/proxy") is spec.with_base_path("/proxy")
    assert spec.with_base_path("/proxy").spec["servers"] == [{"url": "/proxy"}]
    assert spec.with_base_path("/other").spec["servers"] == [{"url": "/other"}]


class TestSpecCache:
    def test_a_cache_miss_validates_and_writes_the_resolved_spec(self, tmp_path, monkeypatch):
        monkeypatch.setattr(app_module, "_resolved_specs", {})
        spec = app_module.load_spec(app_module.ROOT_SPEC, cache_dir=tmp_path)
        [cached] = tmp_path.glob("openapi-root-*.json")
        assert json.loads(cached.read_text()) == spec
        assert "$ref" not in cached.read_text()

    def test_a_cache_hit_neither_validates_nor_resolves(self, tmp_path, monkeypatch):
        monkeypatch.setattr(app_module, "_resolved_specs", {})
        expected = app_module.load_spec(app_module.ROOT_SPEC, cache_dir=tmp_path)
        monkeypatch.setattr(app_module, "_resolved_specs", {})
        monkeypatch.setattr(Specification, "load", classmethod(lambda *a, **k: pytest.fail("the spec was loaded")))
        assert app_module.load_spec(app_module.ROOT_SPEC, cache_dir=tmp_path) == expected

    def test_each_call_returns_an_independent_dict(self):
        first = app_module.load_spec(app_module.ROOT_SPEC)
        first["servers"] = [{"url": "/changed"}]
        assert app_module.load_spec(app_module.ROOT_SPEC).get("servers") != [{"url": "/changed"}]

    def test_a_changed_contract_file_misses_the_cache(self, tmp_path, monkeypatch):
        before = app_module.spec_digest(app_module.ROOT_SPEC)
        contract = tmp_path / "openapi"
        contract.mkdir()
        for file in app_module.SPEC_DIR.rglob("*.yaml"):
            target = contract / file.relative_to(app_module.SPEC_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
        monkeypatch.setattr(app_module, "SPEC_DIR", contract)
        same = app_module.spec_digest(app_module.ROOT_SPEC)
        (contract / "components" / "responses.yaml").write_text(
            (contract / "components" / "responses.yaml").read_text() + "\n# edited\n")
        assert same == before
        assert app_module.spec_digest(app_module.ROOT_SPEC) != before

    def test_a_corrupt_cache_file_is_rebuilt(self, tmp_path, monkeypatch):
        monkeypatch.setattr(app_module, "_resolved_specs", {})
        expected = app_module.load_spec(app_module.ROOT_SPEC, cache_dir=tmp_path)
        [cached] = tmp_path.glob("openapi-root-*.json")
        cached.write_text(cached.read_text()[:1000])
        monkeypatch.setattr(app_module, "_resolved_specs", {})
        assert app_module.load_spec(app_module.ROOT_SPEC, cache_dir=tmp_path) == expected
        assert json.loads(cached.read_text()) == expected

    def test_an_unwritable_cache_directory_only_costs_time(self, tmp_path, monkeypatch):
        monkeypatch.setattr(app_module, "_resolved_specs", {})
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        assert app_module.load_spec(app_module.ROOT_SPEC, cache_dir=blocker / "cache")["paths"]
