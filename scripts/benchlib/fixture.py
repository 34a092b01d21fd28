"""The benchmark's settings, database and accounts.

The database is a SQLite file under the work directory: migrated (persistence.migrate.upgrade),
bootstrapped (server.cli.bootstrap), filled to N catalog providers (audience tenant, status
active; clones of the first shipped catalog entry) and given one enterprise tenant with a
tenant_admin per measurement, so rate-limit windows start empty for every run.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import bulk

ROOT = Path(__file__).resolve().parents[2]
VISIBLE = "SELECT count(*) FROM providers WHERE audience = 'tenant' AND status = 'active'"
# Every hub limit times this: benchmark traffic (thousands of requests a second from one
# tenant) must stay under the limits while the limiter still does its full work.
RATE_LIMIT_SCALE = 1000


@dataclass(frozen=True)
class Account:
    """A tenant_admin of its own enterprise tenant, with a 24-hour access token."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    token: str

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The ASGI headers of an authenticated JSON request."""
        return [(b"authorization", f"Bearer {self.token}".encode()), (b"content-type", b"application/json")]


@dataclass
class BenchEnv:
    """Where the bench works and the secrets its hub runs with (fresh each run)."""

    workdir: Path
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    encryption_key: str = field(default_factory=lambda: base64.urlsafe_b64encode(os.urandom(32)).decode())

    @property
    def db_path(self) -> Path:
        return self.workdir / "hub.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"

    def settings(self, *, validate_responses: bool = False):
        """The hub's production settings on the bench database."""
        from server.settings import Settings

        return Settings(database_url=self.url, jwt_secret=self.jwt_secret, hub_env="production",
                        hub_encryption_keys=self.encryption_key, var_dir=self.workdir / "var",
                        rate_limit_scale=RATE_LIMIT_SCALE, access_token_ttl_seconds=24 * 3600,
                        validate_responses=validate_responses, hub_admin_password="bench-admin-password",
                        redis_url="", hub_log_format="json")

    def environ(self, *, validate_responses: bool = False) -> dict[str, str]:
        """The same settings as environment variables, for a uvicorn subprocess."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update({"DATABASE_URL": self.url, "JWT_SECRET": self.jwt_secret, "HUB_ENV": "production",
                    "HUB_ENCRYPTION_KEYS": self.encryption_key, "HUB_VAR_DIR": str(self.workdir / "var"),
                    "HUB_RATE_LIMIT_SCALE": str(RATE_LIMIT_SCALE), "ACCESS_TOKEN_TTL_SECONDS": str(24 * 3600),
                    "HUB_VALIDATE_RESPONSES": "true" if validate_responses else "false", "REDIS_URL": "",
                    "HUB_LOG_FORMAT": "json", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'scripts'}"})
        return env


def token_config(settings):
    """The TokenConfig the app factory builds from `settings`."""
    from server.tokens import TokenConfig

    return TokenConfig(secret=settings.signing_secret(), algorithm=settings.jwt_algorithm, issuer=settings.jwt_issuer,
                       audience=settings.jwt_audience, access_ttl=settings.access_token_ttl_seconds,
                       refresh_ttl=settings.refresh_token_ttl_seconds)


@dataclass
class Fixture:
    """The prepared database: the provider the create operation enables, and unused accounts."""

    env: BenchEnv
    provider_id: str
    accounts: list[Account]

    def take(self) -> Account:
        """Return an account no measurement has used yet."""
        if not self.accounts:
            raise RuntimeError("the bench ran out of prepared accounts; raise `accounts` in prepare()")
        return self.accounts.pop()


def prepare(env: BenchEnv, *, providers: int, accounts: int) -> Fixture:
    """Create the database from scratch: migrate, bootstrap, `providers` catalog rows, `accounts` tenants."""
    from server.cli import bootstrap
    from persistence.migrate import upgrade

    env.workdir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{env.db_path}{suffix}").unlink(missing_ok=True)
    settings = env.settings()
    upgrade(env.url)
    with contextlib.redirect_stdout(io.StringIO()):
        bootstrap(settings)  # also configures persistence.db and the vault
    template = _template_provider()
    grow_catalog(env, providers, template=template)
    return Fixture(env=env, provider_id=str(uuid.UUID(template)), accounts=_accounts(settings, accounts))


def _template_provider() -> str:
    from persistence import bootstrap as seeding
    from persistence import providers
    from persistence.db import transaction

    fields = dict(seeding.catalog_entries()[0])
    fields.update(provider="bench_template", name="Bench Template", display_name="Bench Template",
                  status="active", audience="tenant", is_premium=False, required_plan=None)
    with transaction() as session:
        return providers.create(session, fields=fields).id.hex


def grow_catalog(env: BenchEnv, visible: int, *, template: str | None = None) -> int:
    """Add clones of the template provider until `visible` providers are in the catalog; return the count."""
    if template is None:
        template = _find_template(env)
    have = bulk.count(env.db_path, VISIBLE)
    if visible > have:
        start = bulk.count(env.db_path, "SELECT count(*) FROM providers") + 1
        bulk.clone(env.db_path, "providers", template_id=template, start=start, count=visible - have, overrides={
            "id": bulk.NEW_ID, "provider": "'bench_' || n",
            "name": "'Bench ' || substr(hex(randomblob(3)), 1, 6) || ' ' || n",
            "display_name": "'Bench ' || n"})
    return bulk.count(env.db_path, VISIBLE)


def _find_template(env: BenchEnv) -> str:
    import sqlite3

    conn = sqlite3.connect(env.db_path)
    try:
        return conn.execute("SELECT id FROM providers WHERE provider = 'bench_template'").fetchone()[0]
    finally:
        conn.close()


def _accounts(settings, count: int) -> list[Account]:
    from server.tokens import mint_access
    from persistence import tenants
    from persistence.db import transaction
    from persistence.models import User
    from persistence.passwords import hash_password

    config, password_hash, made = token_config(settings), hash_password("bench-password"), []
    with transaction() as session:
        for i in range(count):
            tenant = tenants.create(session, name=f"Bench tenant {i}", plan="enterprise")
            user = User(tenant_id=tenant.id, email=f"bench{i}-{uuid.uuid4().hex[:8]}@bench.test", name=f"Bench {i}",
                        role="tenant_admin", password_hash=password_hash)
            session.add(user)
            session.flush()
            made.append(Account(user.id, tenant.id, mint_access(config, user_id=user.id, tenant_id=tenant.id,
                                                                role="tenant_admin", family_id=uuid.uuid4())))
    return made
