"""Test harness: one database per run (`--db sqlite|postgresql`), one app per session.

The PostgreSQL run starts a throwaway cluster with the server binaries on the machine
(tests/pg_cluster.py). With `CI=true` it must run; elsewhere it is skipped with a visible
reason when no binaries exist. Tests isolate themselves by creating their own tenant, users
and providers (factories in tests/factories.py), so no test sees another's rows.
"""

from __future__ import annotations

import os
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from starlette.testclient import TestClient  # noqa: E402

from tests import event_contract, factories  # noqa: E402

ADMIN_EMAIL = "root@hub.test"
ADMIN_PASSWORD = "root-password-for-tests"
JWT_SECRET = "test-secret-" + "x" * 40


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", choices=["sqlite", "postgresql"], default="sqlite", help="database to run the suite on")


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {config.getoption('--db')}"


# The session's event contract check (tests/event_contract.py): the database it reads, set
# when the app is built, and how many tests were deselected (a partial run).
_event_check: dict = {"database_url": None, "deselected": 0}


def pytest_deselected(items: list[pytest.Item]) -> None:
    _event_check["deselected"] += len(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    # Before the last test's teardown, while the session database still exists; raised after
    # it, so the throwaway PostgreSQL is stopped either way.
    found = event_contract.check(item.session, database_url=_event_check["database_url"],
                                 deselected=_event_check["deselected"]) if nextitem is None else []
    result = yield
    if found:
        raise event_contract.EventContractBroken(found)
    return result


@pytest.fixture(scope="session")
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--db")


@pytest.fixture(scope="session")
def pg_cluster(db_kind: str):
    """The throwaway PostgreSQL cluster of a `--db postgresql` run, or None on SQLite."""
    if db_kind != "postgresql":
        yield None
        return
    from tests.pg_cluster import PostgresCluster, find_binaries

    if find_binaries() is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}: the PostgreSQL run is mandatory in CI", pytrace=False)
        pytest.skip(f"{message}: PostgreSQL run skipped")
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def database_url(db_kind: str, pg_cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    if pg_cluster is not None:
        return pg_cluster.url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'hub.db'}"


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory):
    from server.settings import Settings

    return Settings(
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        HUB_VAR_DIR=tmp_path_factory.mktemp("var"),
        hub_admin_email=ADMIN_EMAIL,
        hub_admin_password=ADMIN_PASSWORD,
        HUB_VALIDATE_RESPONSES=True,
        allowed_origins="https://app.example.com",
        hub_public_url="http://testserver",
        HUB_OUTBOUND_TIMEOUT=3,
        HUB_RATE_LIMIT_SCALE=1000,  # generous: limits are the subject of their own tests only
        HUB_OUTBOUND_ALLOWLIST="127.0.0.1",  # the loopback test servers and the sandbox provider
    )


@pytest.fixture(scope="session")
def app(settings):
    """The hub, built once per session on a migrated, bootstrapped database."""
    from server.app import create_app
    from server.cli import bootstrap, migrate

    migrate(settings)
    built = create_app(settings)
    bootstrap(settings)
    _event_check["database_url"] = settings.database_url
    return built


@pytest.fixture(scope="session")
def sandbox(settings):
    """The sandbox provider on a loopback port, registered with the hub's OAuth redirect URI."""
    from connectors.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(redirect_uris=[settings.oauth_redirect_uri])).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox_provider(client, super_admin, sandbox) -> dict:
    """A catalog provider pointing at the sandbox (OAuth client registered, API key in X-API-Key)."""
    return factories.create_provider(client, super_admin, **factories.sandbox_provider_fields(sandbox.base_url))


@pytest.fixture
def sandbox_integration(client, tenant_admin, sandbox_provider) -> dict:
    """`tenant_admin`'s tenant with the sandbox provider enabled (pending, not connected)."""
    return factories.enable_integration(client, tenant_admin, sandbox_provider["id"])


@pytest.fixture(scope="session")
def client(app) -> TestClient:
    """An in-process HTTP client; server errors come back as 500 responses, not exceptions."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def super_admin(client) -> factories.Account:
    """The bootstrap super admin, signed in once for the session and again when its token nears expiry.

    Its access token lives 15 minutes; a session on a loaded machine lasts longer than that.
    """
    return factories.RenewingAccount.sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def tenant_admin(client) -> factories.Account:
    """A fresh tenant and its first tenant_admin (registered through the API)."""
    return factories.register(client)


@pytest.fixture
def member(client, tenant_admin) -> factories.Account:
    """A plain `user` of `tenant_admin`'s tenant."""
    return factories.add_user(client, tenant_admin, role="user")


@pytest.fixture
def other_tenant_admin(client) -> factories.Account:
    """The admin of a second, unrelated tenant (for cross-tenant checks)."""
    return factories.register(client)
