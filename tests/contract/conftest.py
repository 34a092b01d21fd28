"""Fixtures of the published-contract tests: the bundles, built once per session by the real
`./scripts/bundle-spec` (Redocly CLI from package.json) into build/."""

from __future__ import annotations

import pytest

from tests.contract import spec_tools


@pytest.fixture(scope="session")
def bundle_output() -> str:
    """Run ./scripts/bundle-spec (bundle + Redocly lint) and return what it printed."""
    result = spec_tools.run(["./scripts/bundle-spec"], timeout=600)
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def api_bundle(bundle_output) -> dict:
    """build/openapi.json: the /api/v1 contract as published."""
    return spec_tools.load(spec_tools.BUILD / "openapi.json")


@pytest.fixture(scope="session")
def root_bundle(bundle_output) -> dict:
    """build/openapi-root.json: the probes served at the root path."""
    return spec_tools.load(spec_tools.BUILD / "openapi-root.json")


@pytest.fixture(scope="session")
def bundles(api_bundle, root_bundle) -> dict[str, dict]:
    return {"api": api_bundle, "root": root_bundle}
