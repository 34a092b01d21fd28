"""Fixtures of the published-contract tests: the bundles, built once per session by the real
`./scripts/bundle-spec` (Redocly CLI from package.json) into build/."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.contract import spec_tools


@pytest.fixture(scope="session")
def bundle_output() -> str:
    """Run ./scripts/bundle-spec (bundle + Redocly lint) and return what it printed.

    Needs Node.js (Redocly CLI from package.json): mandatory in CI, skipped elsewhere without it.
    """
    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Node.js and npm are required in CI to bundle the contract (Redocly CLI)", pytrace=False)
        pytest.skip("Node.js/npm not found: cannot bundle the contract with Redocly CLI")
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


@pytest.fixture(scope="session")
def live_hub(app) -> str:
    """The session's hub served over real HTTP on a free loopback port (uvicorn in a thread);
    returns its base URL. Same app and database as the in-process `client`."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-hub", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the live hub did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()
