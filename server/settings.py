"""The hub's configuration: one pydantic-settings object, read once at start-up and passed down.

Every setting is documented in README.md ("Configuration"). `persistence/` and `connectors/`
never read the environment; they receive what they need from this object.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from persistence.vault import generate_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Hub settings from the environment (names in upper case, e.g. `DATABASE_URL`).

    Raises `pydantic.ValidationError` at start-up when a production deployment lacks a secret
    (`JWT_SECRET`) or sets an unsafe value, so a bad configuration never serves a request.
    """

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    hub_env: Literal["development", "production"] = "development"
    hub_host: str = "127.0.0.1"
    hub_port: int = Field(default=8000, ge=1, le=65535)
    var_dir: Path = Field(default=PROJECT_ROOT / "var", alias="HUB_VAR_DIR")
    database_url: str = ""
    jwt_secret: str = ""
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "integration-hub"
    jwt_audience: str = "integration-hub-api"
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=30, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)
    allowed_origins: str = "http://localhost:3000,http://127.0.0.1:3000"
    hub_admin_email: str = "admin@hub.local"
    hub_admin_password: str = ""
    max_body_bytes: int = Field(default=1024 * 1024, alias="HUB_MAX_BODY_BYTES", ge=1024)
    outbound_timeout_seconds: float = Field(default=10.0, alias="HUB_OUTBOUND_TIMEOUT", gt=0, le=60)
    outbound_allowlist: str | None = Field(default=None, alias="HUB_OUTBOUND_ALLOWLIST")
    hub_public_url: str = ""
    hub_log_format: Literal["text", "json"] | None = None
    redis_url: str = ""
    rate_limit_scale: float = Field(default=1.0, alias="HUB_RATE_LIMIT_SCALE", gt=0)
    hub_metrics_token: str = ""
    hub_encryption_keys: str = ""
    sandbox_url: str = Field(default="http://127.0.0.1:8100", alias="HUB_SANDBOX_URL")
    sandbox_port: int = Field(default=8100, alias="HUB_SANDBOX_PORT", ge=0, le=65535)
    sandbox_client_id: str = Field(default="hub-sandbox-client", alias="HUB_SANDBOX_CLIENT_ID")
    sandbox_client_secret: str = Field(default="hub-sandbox-secret", alias="HUB_SANDBOX_CLIENT_SECRET")
    connection_tests_per_minute: int = Field(default=10, alias="HUB_CONNECTION_TESTS_PER_MINUTE", ge=1)
    # How long GET /events (and a consumer catching up) can reach back; older events are pruned.
    event_retention_days: int = Field(default=30, alias="HUB_EVENT_RETENTION_DAYS", ge=1, le=3650)
    validate_responses: bool | None = Field(default=None, alias="HUB_VALIDATE_RESPONSES")
    trusted_proxies: str = Field(default="", alias="HUB_TRUSTED_PROXIES")
    session_cookies: bool = Field(default=False, alias="HUB_SESSION_COOKIES")
    # Realtime (WebSocket /ws, SSE /api/v1/events/stream): README "Realtime".
    ws_ping_seconds: float = Field(default=30.0, alias="HUB_WS_PING_SECONDS", gt=0)
    ws_idle_timeout_seconds: float = Field(default=90.0, alias="HUB_WS_IDLE_TIMEOUT_SECONDS", gt=0)
    ws_auth_timeout_seconds: float = Field(default=10.0, alias="HUB_WS_AUTH_TIMEOUT_SECONDS", gt=0)
    sse_ping_seconds: float = Field(default=15.0, alias="HUB_SSE_PING_SECONDS", gt=0)
    realtime_queue_size: int = Field(default=1000, alias="HUB_REALTIME_QUEUE_SIZE", ge=1, le=100_000)
    realtime_recheck_seconds: float = Field(default=30.0, alias="HUB_REALTIME_RECHECK_SECONDS", gt=0, le=60)
    realtime_poll_seconds: float = Field(default=1.0, alias="HUB_REALTIME_POLL_SECONDS", gt=0, le=60)
    swagger_ui: bool | None = Field(default=None, alias="HUB_SWAGGER_UI")
    # Outgoing webhooks (README "Webhooks"). Svix's schedule: the first try at once, then retries.
    webhook_retry_schedule: str = Field(default="0,5,300,1800,7200,18000,36000,36000",
                                        alias="HUB_WEBHOOK_RETRY_SCHEDULE")
    webhook_secret_grace_seconds: int = Field(default=24 * 3600, alias="HUB_WEBHOOK_SECRET_GRACE_SECONDS",
                                              ge=0, le=24 * 3600)
    webhook_lease_seconds: float = Field(default=60.0, alias="HUB_WEBHOOK_LEASE_SECONDS", gt=0, le=3600)
    worker_concurrency: int = Field(default=16, alias="HUB_WORKER_CONCURRENCY", ge=1, le=1000)
    worker_poll_seconds: float = Field(default=0.05, alias="HUB_WORKER_POLL_INTERVAL", gt=0, le=60)
    # Sync runs (README "Data: sync, records, proxy, incoming webhooks"): threads, lease, schedule, retries, breaker.
    sync_concurrency: int = Field(default=4, alias="HUB_SYNC_CONCURRENCY", ge=1, le=256)
    sync_lease_seconds: float = Field(default=300.0, alias="HUB_SYNC_LEASE_SECONDS", gt=0, le=3600)
    sync_poll_seconds: float = Field(default=1.0, alias="HUB_SYNC_POLL_INTERVAL", gt=0, le=60)
    sync_schedule_seconds: float = Field(default=15.0, alias="HUB_SYNC_SCHEDULE_INTERVAL", gt=0, le=3600)
    sync_retry_attempts: int = Field(default=5, alias="HUB_SYNC_RETRY_ATTEMPTS", ge=1, le=20)
    sync_backoff_seconds: float = Field(default=0.5, alias="HUB_SYNC_BACKOFF_SECONDS", ge=0, le=60)
    sync_max_backoff_seconds: float = Field(default=30.0, alias="HUB_SYNC_MAX_BACKOFF_SECONDS", ge=0, le=600)
    sync_max_retry_after_seconds: float = Field(default=60.0, alias="HUB_SYNC_MAX_RETRY_AFTER_SECONDS", ge=0, le=3600)
    sync_breaker_failures: int = Field(default=5, alias="HUB_SYNC_BREAKER_FAILURES", ge=1, le=1000)
    sync_breaker_reset_seconds: float = Field(default=60.0, alias="HUB_SYNC_BREAKER_RESET_SECONDS", gt=0, le=3600)

    @field_validator("jwt_secret")
    @classmethod
    def _secret_is_strong(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule_is_seconds(cls, value: str) -> str:
        try:
            delays = [float(item) for item in value.split(",") if item.strip()]
        except ValueError:
            raise ValueError("HUB_WEBHOOK_RETRY_SCHEDULE is comma-separated seconds, e.g. 0,5,300") from None
        if not delays or any(delay < 0 for delay in delays) or len(delays) > 50:
            raise ValueError("HUB_WEBHOOK_RETRY_SCHEDULE needs 1 to 50 delays, none negative")
        return value

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        """The webhook retry schedule in seconds: delay before attempt 1, 2, ... (`HUB_WEBHOOK_RETRY_SCHEDULE`)."""
        return tuple(float(item) for item in self.webhook_retry_schedule.split(",") if item.strip())

    @model_validator(mode="after")
    def _fill_development_defaults(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'hub.db'}"
        if self.hub_env == "production" and not self.jwt_secret:
            raise ValueError("JWT_SECRET is required when HUB_ENV=production")
        if self.hub_env == "production" and not self.hub_encryption_keys:
            raise ValueError("HUB_ENCRYPTION_KEYS is required when HUB_ENV=production")
        if not self.hub_public_url:
            self.hub_public_url = f"http://{self.hub_host}:{self.hub_port}"
        self.hub_public_url = self.hub_public_url.rstrip("/")
        return self

    @property
    def log_format(self) -> str:
        """`HUB_LOG_FORMAT`: json in production unless set, text in development."""
        return self.hub_log_format or ("json" if self.is_production else "text")

    @property
    def oauth_redirect_uri(self) -> str:
        """The one OAuth redirect URI the hub registers at every provider."""
        return f"{self.hub_public_url}/api/v1/integrations/oauth/callback"

    def encryption_keys(self) -> list[str]:
        """Return the credential encryption keys, newest first (`HUB_ENCRYPTION_KEYS`).

        In development, without the variable, one key is created and kept in
        `var/encryption_key` so stored credentials survive restarts.
        """
        if self.hub_encryption_keys:
            return [k.strip() for k in self.hub_encryption_keys.split(",") if k.strip()]
        path = self.var_dir / "encryption_key"
        if not path.exists():
            _write_private(path, generate_key())
        return [path.read_text().strip()]

    @property
    def is_production(self) -> bool:
        """True when `HUB_ENV=production`."""
        return self.hub_env == "production"

    @property
    def origins(self) -> list[str]:
        """`ALLOWED_ORIGINS` as a list (comma-separated in the environment)."""
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def response_validation(self) -> bool:
        """Validate responses against the spec: on in development and tests, off in production."""
        return (not self.is_production) if self.validate_responses is None else self.validate_responses

    @property
    def swagger_ui_enabled(self) -> bool:
        """Serve Swagger UI: on in development, off in production unless asked for."""
        return (not self.is_production) if self.swagger_ui is None else self.swagger_ui

    @property
    def outbound_allowed(self) -> tuple[str, ...]:
        """Hosts/IPs/CIDRs exempt from the SSRF address check (`HUB_OUTBOUND_ALLOWLIST`).

        Unset: loopback in development (the sandbox provider runs there), nothing in production.
        """
        if self.outbound_allowlist is None:
            return () if self.is_production else ("127.0.0.1", "::1", "localhost")
        return tuple(item.strip() for item in self.outbound_allowlist.split(",") if item.strip())

    def signing_secret(self) -> str:
        """Return the JWT signing secret; in development create and keep one under `var/`.

        Keeping it in `var/jwt_secret` lets a restarted development server accept the tokens it
        issued before the restart.
        """
        if self.jwt_secret:
            return self.jwt_secret
        path = self.var_dir / "jwt_secret"
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(48))
        return path.read_text().strip()

    @property
    def forwarded_allow_ips(self) -> str:
        """`HUB_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For`/`-Proto` the hub believes.

        Comma-separated IPs or CIDRs (uvicorn's `forwarded_allow_ips`); empty (the default)
        trusts no proxy, so the client IP is always the TCP peer's. Set it to your reverse
        proxy's address, never to `*` on a port the internet can reach.
        """
        return ",".join(item.strip() for item in self.trusted_proxies.split(",") if item.strip())

    def prepare_var_dir(self) -> None:
        """Create `HUB_VAR_DIR` private (0700) and the SQLite database file in it 0600.

        SQLite would create the file with the process umask (often world-readable); it holds
        password hashes and sealed secrets, so it is created here first, owner-only. A database
        outside `HUB_VAR_DIR` (set by `DATABASE_URL`) is the operator's to protect.
        """
        _private_dir(self.var_dir)
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            path = Path(self.database_url[len(prefix):].split("?", 1)[0])
            if path.parent.resolve() == self.var_dir.resolve() and not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _private_dir(path: Path) -> None:
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is masked by the umask


def _write_private(path: Path, text: str) -> None:
    """Create `path` owner-only (0600) from the first byte, in a private (0700) directory."""
    _private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def load_settings(**overrides) -> Settings:
    """Read the settings from the environment, with keyword overrides (used by tests and the CLI)."""
    return Settings(**overrides)
