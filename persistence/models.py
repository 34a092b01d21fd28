"""SQLModel tables of the hub. Schema changes go through Alembic (`persistence/migrations`).

Every tenant-owned row carries `tenant_id`; queries over such rows live in the module named
after the table and always filter by the caller's tenant.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def _factory(function: Callable[[], Any]) -> Callable[[], Any]:
    # pydantic reads a default factory's signature on every model construction
    # (FieldInfo.get_default asks whether it takes the validated data): a signature set once is
    # returned at once, where the builtins `list` and `dict` had theirs parsed by the tokenizer
    # each time (constructing an Integration took ~0.85 ms, ~0.28 ms with this).
    function.__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    return function


@_factory
def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime (microseconds kept)."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """Return `value` as an aware UTC datetime; SQLite hands back naive values stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _ts(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True), **kwargs)


@_factory
def new_id() -> uuid.UUID:
    """A new random primary key (UUID version 4)."""
    return uuid.uuid4()


@_factory
def _new_list() -> list:
    return []


@_factory
def _new_dict() -> dict:
    return {}


def _json(default_factory=_new_list) -> Any:
    return Field(default_factory=default_factory, sa_type=sa.JSON)


class Table(SQLModel):
    """The base of the hub's tables: SQLModel with pydantic's schema built on first use, not at import.

    Table models are built from rows and written by the ORM; nothing validates them through
    pydantic on the request path, so building eleven validation schemas at import only delayed
    every worker's start-up (~20 ms; the performance issue's cold-start target).
    """

    model_config = {"defer_build": True}


class Tenant(Table, table=True):
    """A customer organisation. `plan` gates premium providers; `status` gates every request."""

    __tablename__ = "tenants"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=200)
    plan: str = Field(default="free", max_length=20)
    status: str = Field(default="active", max_length=20, index=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class User(Table, table=True):
    """A person who signs in. Super admins have no tenant; everyone else belongs to exactly one."""

    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: Optional[uuid.UUID] = Field(default=None, foreign_key="tenants.id", index=True)
    email: str = Field(max_length=254, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)
    password_hash: str = Field(max_length=255)
    active: bool = Field(default=True)
    last_login_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    # The client IP of the last successful sign-in: the per-email login throttle never slows it down.
    last_login_ip: Optional[str] = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class RefreshToken(Table, table=True):
    """One issued refresh token (its `jti`). Tokens of one login share a `family_id`.

    Rotation marks the presented token `used_at`; presenting a used token again revokes the
    whole family (RFC 9700 section 4.14.2, refresh token rotation with reuse detection).
    """

    __tablename__ = "refresh_tokens"

    id: uuid.UUID = Field(primary_key=True)
    family_id: uuid.UUID = Field(index=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True)
    tenant_id: Optional[uuid.UUID] = Field(default=None, index=True)
    issued_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    used_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    revoked_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))


class Provider(Table, table=True):
    """A catalog entry: an external service the hub can integrate with (platform-owned, no tenant).

    Shape from the integration API seed, "Integration Provider Endpoints", plus `api_base_url`
    and `test_request`, which the hub needs to reach the service.
    """

    __tablename__ = "providers"
    # The tenant catalog (status active, audience tenant) in each order it offers (sortBy, either
    # direction), id breaking ties: its first, offset and keyset (cursor) pages are index range
    # scans. Catalog rows are few and rarely written, so five indexes cost little (migration 0004).
    __table_args__ = tuple(
        sa.Index(f"ix_providers_catalog_{column}", "status", "audience", column, "id")
        for column in ("name", "display_name", "provider", "created_at", "updated_at")
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    provider: str = Field(max_length=63, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=100)
    display_name: str = Field(max_length=100)
    description: Optional[str] = Field(default=None, max_length=1000)
    category: str = Field(max_length=20, index=True)
    status: str = Field(max_length=20, index=True)
    audience: str = Field(max_length=10, index=True)
    capabilities: list = _json()
    supported_sync_directions: list = _json()
    supports_realtime: bool = False
    supports_webhooks: bool = False
    supports_notifications: bool = False
    supports_search: bool = False
    searchable_entities: list = _json()
    search_capabilities: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    requires_user_scoping: bool = False
    auth_type: str = Field(max_length=10)
    oauth_config: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    available_entities: list = _json()
    entity_mappings: list = _json()
    icon: str = Field(max_length=200)
    color: str = Field(max_length=7)
    version: str = Field(max_length=50)
    is_premium: bool = False
    required_plan: Optional[str] = Field(default=None, max_length=20)
    api_base_url: Optional[str] = Field(default=None, max_length=2048)
    test_request: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    api_key_header: Optional[str] = Field(default=None, max_length=100)
    # How incoming webhooks are verified and routed (persistence/webhook_verification.py); migration 0010.
    webhook_verification: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    # The OAuth client secret, vault-sealed and bound to this provider; never in oauth_config.
    oauth_client_secret: Optional[str] = Field(default=None)
    created_at: datetime = _ts()
    updated_at: datetime = _ts(index=True)


class AuditEntry(Table, table=True):
    """One audited action: who did what to which resource, from where, and how it ended.

    Written in the same transaction as the change it records. `changes` is already redacted
    (no secret ever reaches this table). Platform actions have no tenant.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        sa.UniqueConstraint("chain", "seq", name="uq_audit_chain_seq"),
        sa.Index("ix_audit_entries_tenant_cursor", "tenant_id", "created_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: Optional[uuid.UUID] = Field(default=None, index=True)
    actor_id: Optional[uuid.UUID] = Field(default=None, index=True)
    actor_role: Optional[str] = Field(default=None, max_length=20)
    action: str = Field(max_length=100, index=True)
    resource_type: str = Field(max_length=50)
    resource_id: Optional[str] = Field(default=None, max_length=100)
    request_id: Optional[str] = Field(default=None, max_length=100)
    ip: Optional[str] = Field(default=None, max_length=64)
    changes: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    outcome: str = Field(default="success", max_length=10)
    created_at: datetime = _ts(index=True)
    # Hash chain per tenant (or `platform`): seq orders it, hash covers this entry and prev_hash.
    chain: str = Field(default="platform", max_length=40)
    seq: int = Field(default=0)
    prev_hash: str = Field(default="", max_length=64)
    hash: str = Field(default="", max_length=64)


class Integration(Table, table=True):
    """A tenant's enabled instance of a catalog provider (IntegrationDocument of the seed).

    `status`: pending (no working connection yet), connected, error, disabled.
    """

    __tablename__ = "integrations"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_integrations_tenant_name"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id", index=True)
    provider_id: uuid.UUID = Field(foreign_key="providers.id", index=True)
    name: str = Field(max_length=200)
    description: Optional[str] = Field(default=None, max_length=1000)
    icon: Optional[str] = Field(default=None, max_length=200)
    settings: dict = _json(_new_dict)
    allowed_shard_types: list = _json()
    search_enabled: bool = False
    searchable_entities: list = _json()
    user_scoped: bool = False
    status: str = Field(default="pending", max_length=20, index=True)
    enabled_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    enabled_by: Optional[uuid.UUID] = Field(default=None)
    last_connected_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    last_error: Optional[str] = Field(default=None, max_length=500)
    # The secret verifying incoming webhooks, vault-sealed and bound to tenant and integration; migration 0010.
    webhook_secret: Optional[str] = Field(default=None)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Connection(Table, table=True):
    """The credentials linking an integration to the external system.

    One per integration for the tenant (`user_id` NULL), one per user for user-scoped
    integrations. `secret` is the vault-sealed credential set, bound to tenant and connection;
    it is never returned by the API. `status`: active, expired (needs re-auth), revoked, error.
    """

    __tablename__ = "connections"
    __table_args__ = (sa.UniqueConstraint("integration_id", "owner_key", name="uq_connections_owner"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id", index=True)
    integration_id: uuid.UUID = Field(foreign_key="integrations.id", index=True)
    user_id: Optional[uuid.UUID] = Field(default=None, foreign_key="users.id", index=True)
    # "tenant" or the user id: a unique key that also works where NULLs are distinct.
    owner_key: str = Field(max_length=40)
    auth_type: str = Field(max_length=10)
    status: str = Field(default="active", max_length=10)
    display_name: Optional[str] = Field(default=None, max_length=200)
    secret: Optional[str] = Field(default=None)
    secret_version: int = Field(default=0)
    scopes: list = _json()
    connected_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    expires_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    last_validated_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    validation_error: Optional[str] = Field(default=None, max_length=500)
    last_response_time_ms: Optional[float] = Field(default=None)
    disconnected_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class OAuthState(Table, table=True):
    """A pending OAuth authorization: single-use, 10 minutes, bound to who started it and why.

    Stored by the SHA-256 of the `state` value; the PKCE verifier is vault-sealed.
    RFC 6749 section 10.12, RFC 7636, RFC 9700 section 4.7.
    """

    __tablename__ = "oauth_states"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    state_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id", index=True)
    user_id: uuid.UUID = Field(foreign_key="users.id")
    integration_id: uuid.UUID = Field(foreign_key="integrations.id")
    user_scoped: bool = False
    sealed_verifier: str
    return_url: str = Field(max_length=2048)
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    used_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()


class ApiToken(Table, table=True):
    """A scoped, expiring, revocable API token of a tenant. Only its SHA-256 is stored.

    The token reads `hub_<prefix>_<secret>`; `prefix` is shown in lists so people can tell
    tokens apart. It acts as its creator, limited to its scopes.
    """

    __tablename__ = "api_tokens"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id", index=True)
    created_by: uuid.UUID = Field(index=True)
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=20, sa_column_kwargs={"unique": True})
    secret_hash: str = Field(max_length=64)
    scopes: list = _json()
    expires_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    last_used_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    revoked_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()


class AuditChainHead(Table, table=True):
    """The last link of one audit hash chain (a tenant's, or `platform`): locked to append."""

    __tablename__ = "audit_chain_heads"

    chain: str = Field(primary_key=True, max_length=40)
    seq: int = 0
    hash: str = Field(default="", max_length=64)


class IdempotencyRecord(Table, table=True):
    """A POST seen with an Idempotency-Key: its request fingerprint and, once done, its answer.

    Kept 24 hours (Stripe's idempotent requests). `scope` is the tenant (or user, or client IP).
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (sa.UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    scope: str = Field(max_length=80)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    state: str = Field(default="in_progress", max_length=12)
    response_status: Optional[int] = None
    response_body: Optional[str] = None
    response_headers: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    created_at: datetime = _ts(index=True)


class Event(Table, table=True):
    """One change that mattered to a tenant, as its systems learn of it (webhooks, realtime, `GET /events`).

    Written by `persistence.events.record_change` in the transaction of the change and of its
    audit entry. `id` is `evt_` + a ULID (sortable, public); `seq` orders the log: the audit
    chain's head row is locked before the event is inserted, so one tenant's events take their
    `seq` in commit order and a reader walking `seq` upwards never skips one that commits late.
    `data` is the resource's API view (never a secret); `actor` who caused it
    (`{"type": "user"|"system", "id": ..., "role": ...}`; an API token acts as its creator).
    """

    __tablename__ = "events"
    # AUTOINCREMENT on SQLite: a pruned log never hands out a `seq` again (resume cursors stay valid).
    __table_args__ = (sa.Index("ix_events_tenant_seq", "tenant_id", "seq"), {"sqlite_autoincrement": True})

    seq: Optional[int] = Field(default=None, sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                               primary_key=True, sa_column_kwargs={"autoincrement": True})
    id: str = Field(max_length=40, unique=True)
    tenant_id: uuid.UUID = Field()
    type: str = Field(max_length=60)
    occurred_at: datetime = _ts(index=True)
    data: dict = _json(_new_dict)
    request_id: Optional[str] = Field(default=None, max_length=100)
    actor: dict = _json(_new_dict)


class WebhookEndpoint(Table, table=True):
    """A tenant's receiver of outgoing webhooks (Standard Webhooks; Svix's endpoint).

    `event_types` empty means every type. `secret` is the vault-sealed `whsec_...` signing
    secret, bound to tenant and endpoint; after a rotation `previous_secret` keeps signing beside
    it until `previous_secret_expires_at`. `failing_since` is when the current run of failed
    attempts began (None while it succeeds): 5 days of it disables the endpoint.
    """

    __tablename__ = "webhook_endpoints"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id", index=True)
    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=500)
    event_types: list = _json()
    enabled: bool = True
    disabled_reason: Optional[str] = Field(default=None, max_length=200)
    secret: str
    previous_secret: Optional[str] = None
    previous_secret_expires_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    failing_since: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WebhookDelivery(Table, table=True):
    """The outbox row of one event for one endpoint: pending until delivered, exhausted or cancelled.

    Written in the event's transaction. `status`: pending, succeeded, failed (endpoint disabled
    or 410), exhausted (retry schedule used up), cancelled (endpoint deleted). A worker claims a
    due row by setting `claimed_until` (its lease); a row whose lease ran out is claimed again.
    `step` counts the attempts of the current round (a resend or recover starts a new round, its
    `trigger` then `manual`; `test` for the test send); `attempt_count` every attempt ever made.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint", "tenant_id", "endpoint_id", "status", "updated_at"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field()
    endpoint_id: uuid.UUID = Field()
    event_id: str = Field(max_length=40, index=True)
    status: str = Field(default="pending", max_length=12)
    trigger: str = Field(default="scheduled", max_length=12)
    step: int = 0
    attempt_count: int = 0
    next_attempt_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    claimed_until: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    claimed_by: Optional[str] = Field(default=None, max_length=100)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WebhookAttempt(Table, table=True):
    """One HTTP attempt to deliver an event to an endpoint, as the attempts log shows it.

    `response_body` keeps the first 8 KiB; `error_kind` is timeout, connect_error, ssrf_refused,
    http_status or tls (None on success); `next_attempt_at` when the next retry is due (None once
    delivered, exhausted or disabled).
    """

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        sa.Index("ix_webhook_attempts_endpoint", "tenant_id", "endpoint_id", "attempted_at", "id"),
        sa.Index("ix_webhook_attempts_event", "tenant_id", "event_id", "attempted_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field()
    endpoint_id: uuid.UUID = Field()
    delivery_id: uuid.UUID = Field()
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=60)
    attempt_number: int
    trigger: str = Field(default="scheduled", max_length=12)
    status: str = Field(max_length=10)
    response_status: Optional[int] = None
    response_body: Optional[str] = None
    duration_ms: float = 0
    error_kind: Optional[str] = Field(default=None, max_length=20)
    error: Optional[str] = Field(default=None, max_length=500)
    attempted_at: datetime = _ts()
    next_attempt_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))


class WorkerHeartbeat(Table, table=True):
    """The last sign of life of one webhook worker (`/health` reports the newest)."""

    __tablename__ = "worker_heartbeats"

    name: str = Field(primary_key=True, max_length=100)
    started_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    in_flight: int = 0


class Record(Table, table=True):
    """One provider object as the hub last saw it (the records store; Nango's records API).

    Written only through `persistence.records` (sync pages, write-through answers, incoming
    webhooks). `owner_key` is the connection's owner ("tenant", or the user id of a user-scoped
    connection): a user reads only the records of their own connection. `content_hash` is the
    SHA-256 of the canonical JSON of `data`: an unchanged copy writes nothing.
    `provider_updated_at` is the provider's own modification time, the last-write-wins key;
    `last_modified_at` is when the hub last changed the row. `seq` orders the records API: it is
    taken from the integration's `record_sequences` row, locked until commit, so one
    integration's changes get their `seq` in commit order and a reader walking `seq` upwards
    never misses a change. `last_seen_run_id` marks the rows a full refresh saw (the others are
    tombstoned when that run succeeds). A tombstone keeps the row with `deleted_at` set.
    """

    __tablename__ = "records"
    __table_args__ = (
        sa.UniqueConstraint("integration_id", "owner_key", "entity", "external_id", name="uq_records_identity"),
        sa.Index("ix_records_owner_seq", "integration_id", "owner_key", "seq"),
        # A tenant admin walks every owner's records of an integration in `seq` order.
        sa.Index("ix_records_integration_seq", "integration_id", "seq"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field(index=True)
    integration_id: uuid.UUID = Field()
    owner_key: str = Field(max_length=40)
    user_id: Optional[uuid.UUID] = Field(default=None)
    entity: str = Field(max_length=100)
    external_id: str = Field(max_length=255)
    data: dict = _json(_new_dict)
    content_hash: str = Field(max_length=64)
    provider_updated_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    first_seen_at: datetime = _ts()
    last_modified_at: datetime = _ts()
    last_action: str = Field(default="added", max_length=10)
    deleted_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    seq: int = Field(default=0, sa_type=sa.BigInteger())
    last_seen_run_id: Optional[uuid.UUID] = Field(default=None)


class RecordSequence(Table, table=True):
    """The last `seq` handed to one integration's records; its row lock orders their writers."""

    __tablename__ = "record_sequences"

    integration_id: uuid.UUID = Field(primary_key=True)
    value: int = Field(default=0, sa_type=sa.BigInteger())


# --- Sync runs (issue 14 section 3; migration 0009) -----------------------------------------


class SyncSettings(Table, table=True):
    """An integration's sync settings; no row means the defaults (scheduled runs off, every entity, hourly).

    `entities` empty means every entity of the provider with a sync definition. `paused` stops
    claiming and scheduling (a running run stops after its current page and resumes from it).
    """

    __tablename__ = "sync_settings"

    integration_id: uuid.UUID = Field(foreign_key="integrations.id", primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id", index=True)
    enabled: bool = False
    entities: list = _json()
    frequency_seconds: int = 3600
    paused: bool = False
    paused_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class SyncState(Table, table=True):
    """Where one entity of one connection (`owner_key`: "tenant" or the user id) stands between runs.

    `watermark` is the newest provider `updatedAt` a successful run stored (the next incremental
    run's changed-since value); `last_full_at` when a full refresh last completed (the scheduler
    forces one every 24 h); `next_run_at` when the scheduler queues the next run.
    """

    __tablename__ = "sync_states"
    __table_args__ = (sa.UniqueConstraint("integration_id", "owner_key", "entity", name="uq_sync_states_entity"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id", index=True)
    integration_id: uuid.UUID = Field(foreign_key="integrations.id")
    owner_key: str = Field(max_length=40)
    user_id: Optional[uuid.UUID] = Field(default=None)
    entity: str = Field(max_length=100)
    watermark: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    last_run_id: Optional[uuid.UUID] = Field(default=None)
    last_success_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    last_full_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    next_run_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class SyncRun(Table, table=True):
    """One run of one entity for one connection: queued, running, succeeded or failed.

    The outbox row of a sync: a worker claims it with a lease (`claimed_until`), pages through
    the provider and commits each page with `checkpoint` (the next page request `{url, params}`),
    so a run whose worker died resumes from its last committed page. `active_key`
    (`<owner_key>:<entity>` while queued or running, else NULL) is unique per integration: one
    live run per entity. `since` is the changed-since value of an incremental run; `max_seen`
    the newest provider `updatedAt` stored so far (the next watermark). `changed_ids` holds the
    first 100 changed records' ids for `records.changed`.
    """

    __tablename__ = "sync_runs"
    __table_args__ = (
        sa.UniqueConstraint("integration_id", "active_key", name="uq_sync_runs_active"),
        sa.Index("ix_sync_runs_due", "status", "next_attempt_at"),
        sa.Index("ix_sync_runs_list", "tenant_id", "integration_id", "queued_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenants.id")
    integration_id: uuid.UUID = Field(foreign_key="integrations.id")
    owner_key: str = Field(max_length=40)
    user_id: Optional[uuid.UUID] = Field(default=None)
    entity: str = Field(max_length=100)
    kind: str = Field(max_length=12)
    trigger: str = Field(max_length=12)
    status: str = Field(default="queued", max_length=12)
    active_key: Optional[str] = Field(default=None, max_length=150)
    since: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    max_seen: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    checkpoint: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    added: int = 0
    updated: int = 0
    deleted: int = 0
    pages: int = 0
    requests: int = 0
    changed_ids: list = _json()
    error_type: Optional[str] = Field(default=None, max_length=30)
    error_message: Optional[str] = Field(default=None, max_length=500)
    claims: int = 0
    next_attempt_at: datetime = _ts()
    claimed_until: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    claimed_by: Optional[str] = Field(default=None, max_length=100)
    queued_at: datetime = _ts()
    started_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    finished_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    updated_at: datetime = _ts()
class IncomingWebhook(Table, table=True):
    """A verified notification a provider POSTed to an integration: the replay guard and the work's outbox row.

    Unique per integration and provider event id, kept 7 days (a replay within them is
    acknowledged without effect; `persistence.incoming_webhooks.prune` deletes older rows).
    `status`: queued (the worker is to read and upsert the record), done, ignored (no entity was
    named: kept for the replay guard only) or failed (attempts used up). A worker claims a due
    row by setting `claimed_until` (its lease); a row whose lease ran out is claimed again.
    `record` is the complete record when the notification carried it (else it is fetched).
    """

    __tablename__ = "incoming_webhooks"
    __table_args__ = (
        sa.UniqueConstraint("integration_id", "provider_event_id", name="uq_incoming_webhooks_event"),
        sa.Index("ix_incoming_webhooks_due", "status", "next_attempt_at"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    tenant_id: uuid.UUID = Field()
    integration_id: uuid.UUID = Field()
    provider_event_id: str = Field(max_length=255)
    status: str = Field(default="queued", max_length=10)
    entity: Optional[str] = Field(default=None, max_length=100)
    external_id: Optional[str] = Field(default=None, max_length=255)
    record: Optional[dict] = Field(default=None, sa_type=sa.JSON)
    attempts: int = 0
    last_error: Optional[str] = Field(default=None, max_length=500)
    received_at: datetime = _ts(index=True)
    next_attempt_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    claimed_until: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))
    claimed_by: Optional[str] = Field(default=None, max_length=100)
    finished_at: Optional[datetime] = Field(default=None, sa_type=sa.DateTime(timezone=True))


class SearchDocument(Table, table=True):
    """The searchable text of one live record (the search index; issue 15). Written only by
    `persistence.search_index`, in the transaction that changes the record.

    `title` is the entity's `titleField` value, `body` its `searchableFields` values, as the
    provider sent them (snippets show them). The full-text structures over them are outside the
    models because each database has its own (made by migration 0011): on SQLite the FTS5 table
    `search_fts` (external content: this table, `rowid` = `id`, kept in step by triggers); on
    PostgreSQL the weighted `tsvector` column `search_vector` with its GIN index.
    `id` is an INTEGER primary key so that SQLite uses it as the rowid FTS5 points at.
    """

    __tablename__ = "search_documents"
    __table_args__ = (sa.Index("ix_search_documents_scope", "tenant_id", "integration_id", "owner_key", "entity"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    record_id: uuid.UUID = Field(unique=True, index=True)
    tenant_id: uuid.UUID = Field()
    integration_id: uuid.UUID = Field()
    owner_key: str = Field(max_length=40)
    entity: str = Field(max_length=100)
    title: str = Field(default="", sa_type=sa.Text())
    body: str = Field(default="", sa_type=sa.Text())
