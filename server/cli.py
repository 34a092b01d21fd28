"""The `integration-hub` command: serve, worker, migrate, bootstrap."""

from __future__ import annotations

import argparse
import os
import secrets
import warnings

from server.observability import configure_logging
from server.settings import Settings, load_settings


def migrate(settings: Settings) -> None:
    """Apply every Alembic migration to the configured database."""
    from persistence.migrate import upgrade

    settings.prepare_var_dir()
    upgrade(settings.database_url)


def bootstrap(settings: Settings) -> None:
    """Create the first super admin if none exists, seed the provider catalog and warm the spec cache (idempotent).

    Without `HUB_ADMIN_PASSWORD`, a strong password is generated and printed once. The spec
    cache (`<HUB_VAR_DIR>/cache`) holds both contracts validated and resolved, so workers started
    afterwards skip that second of work.
    """
    from server.app import warm_spec_cache
    from persistence import bootstrap as seeding
    from persistence import db, vault

    db.configure(settings.database_url)
    vault.configure(vault.Keyring.from_strings(settings.encryption_keys()))
    password = settings.hub_admin_password or secrets.token_urlsafe(18)
    with db.transaction() as session:
        created = seeding.ensure_super_admin(session, email=settings.hub_admin_email, password=password)
        added = seeding.seed_catalog(session)
        added += seeding.seed_catalog(session, seeding.sandbox_entries(
            settings.sandbox_url, client_id=settings.sandbox_client_id, client_secret=settings.sandbox_client_secret))
    if created:
        print(f"Created super admin {settings.hub_admin_email}", flush=True)
        if not settings.hub_admin_password:
            print(f"  generated password (shown once): {password}", flush=True)
    print(f"Provider catalog: {added} provider(s) added", flush=True)
    warm_spec_cache(settings)


def rotate_keys(settings: Settings, *, batch: int = 100) -> int:
    """Re-seal every stored secret under the newest key of `HUB_ENCRYPTION_KEYS`; return how many.

    Online: one short transaction per row, each row locked while it is re-sealed, so the hub
    keeps serving. Keep the old key configured (after the new one) until this has run.
    """
    from persistence import connections, db, incoming_webhooks, oauth_states, providers, vault

    db.configure(settings.database_url)
    vault.configure(vault.Keyring.from_strings(settings.encryption_keys()))
    changed, after = 0, None
    while True:
        with db.transaction() as session:
            ids = connections.sealed_ids(session, after=after, batch=batch)
        if not ids:
            break
        for connection_id in ids:
            with db.transaction() as session:
                changed += connections.reseal(session, connection_id=connection_id)
        after = ids[-1]
    with db.transaction() as session:
        changed += providers.reseal_client_secrets(session)
        changed += oauth_states.reseal_pending(session)
        changed += incoming_webhooks.reseal_secrets(session)
    return changed


def audit_verify(settings: Settings) -> int:
    """Check every audit hash chain; print the outcome; return 0 when intact, 1 when tampered."""
    from persistence import audit, db

    db.configure(settings.database_url)
    with db.transaction() as session:
        checked, breaks = audit.verify(session)
    if not breaks:
        print(f"Audit log intact: {checked} entries verified", flush=True)
        return 0
    for item in breaks:
        print(f"TAMPERED chain {item.chain} at entry {item.seq}: {item.problem}", flush=True)
    print(f"Audit log NOT intact: {len(breaks)} chain(s) broken ({checked} entries read)", flush=True)
    return 1


def events_prune(settings: Settings, *, batch: int = 1000) -> int:
    """Delete the events older than `HUB_EVENT_RETENTION_DAYS`, one bounded batch per transaction; return how many."""
    from datetime import timedelta

    from persistence import db, events
    from persistence.models import utcnow

    db.configure(settings.database_url)
    cutoff, deleted = utcnow() - timedelta(days=settings.event_retention_days), 0
    while True:
        with db.transaction() as session:
            removed = events.prune(session, older_than=cutoff, batch=batch)
        deleted += removed
        if removed < batch:
            return deleted


def start_sandbox(settings: Settings):
    """Start the sandbox provider beside the hub (development), its redirect URI set to the hub's."""
    from connectors.sandbox import SandboxConfig, SandboxServer

    config = SandboxConfig(client_id=settings.sandbox_client_id, client_secret=settings.sandbox_client_secret,
                           redirect_uris=[settings.oauth_redirect_uri])
    try:
        server = SandboxServer(config, port=settings.sandbox_port).start()
    except OSError as exc:
        print(f"  sandbox provider not started ({exc}); is one already running?", flush=True)
        return None
    print(f"  sandbox provider: {server.base_url} (client {config.client_id}, API key {config.api_keys[0]})", flush=True)
    return server


def serve(settings: Settings, *, workers: int = 1, sandbox: bool = True, worker: bool | None = None) -> None:
    """Migrate, bootstrap, then serve the API with uvicorn (blocking).

    In development the sandbox provider runs beside the hub unless `sandbox` is False, and one
    webhook worker runs in this process unless `worker` is False (in production it runs only
    when `worker` is True: there `integration-hub worker` runs as its own process).
    """
    import uvicorn

    migrate(settings)
    bootstrap(settings)  # warms the spec cache once, so N workers don't each validate the contract
    if sandbox and not settings.is_production:
        start_sandbox(settings)
    base = f"http://{settings.hub_host}:{settings.hub_port}"
    print(f"Integration Hub on {base}/api/v1", flush=True)
    if settings.swagger_ui_enabled:
        print(f"  interactive docs: {base}/api/v1/ui/", flush=True)
    print(f"  contract: {base}/api/v1/openapi.json   health: {base}/health", flush=True)
    in_process = None
    if worker if worker is not None else not settings.is_production:
        from server.worker import start_in_thread

        in_process = start_in_thread(settings)
        print("  webhook worker: in this process (--no-worker to run `integration-hub worker` apart)", flush=True)
        _stop_worker_on_signals(*in_process)
    uvicorn.run("server.app:serving_app", factory=True, workers=workers, **uvicorn_options(settings))
    if in_process is not None:
        in_process[0].stop()
        in_process[1].join(timeout=20)


def _stop_worker_on_signals(worker, thread) -> None:
    # uvicorn restores the handlers it found and raises the signal again once it has shut down:
    # these then let the in-process worker finish its attempts in flight before the process ends.
    import signal

    def finish(signum, _frame):
        worker.stop()
        thread.join(timeout=20)
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, finish)


def uvicorn_options(settings: Settings) -> dict:
    """The uvicorn settings `serve` runs with (host, port, logging, proxy trust, event loop, WebSocket protocol).

    Proxy headers are believed only from `HUB_TRUSTED_PROXIES` (default: nobody). uvicorn's own
    default trusts `X-Forwarded-For` from 127.0.0.1, so behind any local tunnel or proxy a
    client would pick its own IP for the login throttles and the audit log.
    """
    trusted = settings.forwarded_allow_ips
    return {
        "host": settings.hub_host,
        "port": settings.hub_port,
        "log_level": "info",
        "log_config": None,  # keep the hub's logging configuration (JSON with HUB_LOG_FORMAT=json)
        # The hub logs one line per request itself, without query strings: uvicorn's access
        # log would record OAuth codes and states from the callback's URL.
        "access_log": False,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or "",
        "loop": SERVE_LOOP,
        **WEBSOCKET_OPTIONS,
    }


# The event loop: asyncio's, not uvloop (uvicorn's "auto" when installed). libuv accepts one
# connection per loop iteration (libuv/libuv#3696), and an iteration under load runs every ready
# request's work, the `@local_read` handlers included (server/pipeline.py): with 32 busy
# connections a new connection waited ~20 iterations, up to 3 s, before its first request was
# read (`GET /auth/me` p99 1.4 s under wrk against 0.2 s on asyncio's loop, which accepts up to
# 100 a tick; the same CPU per request or less: README "Performance").
SERVE_LOOP = "asyncio"


# WebSocket serving: the sans-I/O `websockets` protocol (one object per socket, no tasks of its
# own), without permessage-deflate: a compressor and a decompressor per socket cost ~40 KiB of
# memory per idle socket, and CPU per message, for event messages of a few hundred bytes
# (README "Realtime"; `./scripts/bench --only realtime`).
WEBSOCKET_OPTIONS = {"ws": "websockets-sansio", "ws_per_message_deflate": False}


def build_parser() -> argparse.ArgumentParser:
    """The `integration-hub` command line: serve, worker, migrate, bootstrap, rotate-keys, audit, events, sandbox."""
    parser = argparse.ArgumentParser(prog="integration-hub", description="Integration Hub API")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="migrate, bootstrap and serve the API")
    serve_cmd.add_argument("--host", help="bind address (env HUB_HOST, default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (env HUB_PORT, default 8000)")
    serve_cmd.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    serve_cmd.add_argument("--no-sandbox", action="store_true", help="do not start the sandbox provider")
    serve_cmd.add_argument("--no-worker", action="store_true",
                           help="do not run a webhook worker in this process (run `integration-hub worker`)")
    worker_cmd = commands.add_parser("worker", help="deliver outgoing webhooks until SIGTERM")
    worker_cmd.add_argument("--concurrency", type=int, help="attempts in flight at once (env HUB_WORKER_CONCURRENCY, default 16)")
    worker_cmd.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("bootstrap", help="create the first super admin and seed the provider catalog")
    commands.add_parser("rotate-keys", help="re-encrypt every stored secret under the newest HUB_ENCRYPTION_KEYS key")
    audit_cmd = commands.add_parser("audit", help="audit log tools")
    audit_cmd.add_argument("action", choices=["verify"], help="verify: check the hash chains (exit 1 if tampered)")
    events_cmd = commands.add_parser("events", help="event log tools")
    events_cmd.add_argument("action", choices=["prune"],
                            help="prune: delete events older than HUB_EVENT_RETENTION_DAYS (default 30)")
    commands.add_parser("sandbox", help="serve the sandbox provider alone (see --help)", add_help=False)
    return parser


def _export_address(args: argparse.Namespace) -> None:
    # The uvicorn factory re-reads settings in each worker: pass --host/--port through the environment.
    if getattr(args, "host", None):
        os.environ["HUB_HOST"] = args.host
    if getattr(args, "port", None):
        os.environ["HUB_PORT"] = str(args.port)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "sandbox":
        from connectors.sandbox.cli import main as sandbox_main

        return sandbox_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    # Starlette's test client and Authlib announce an httpx successor; nothing to act on here.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    configure_logging(load_settings().log_format)
    _export_address(args)
    settings = load_settings()
    if args.command == "migrate":
        migrate(settings)
        print("Database is up to date", flush=True)
    elif args.command == "bootstrap":
        migrate(settings)
        bootstrap(settings)
    elif args.command == "audit":
        return audit_verify(settings)
    elif args.command == "events":
        print(f"Pruned {events_prune(settings)} event(s) older than {settings.event_retention_days} days", flush=True)
    elif args.command == "worker":
        from server.worker import run_forever

        migrate(settings)
        return run_forever(settings, concurrency=args.concurrency, metrics_port=args.metrics_port)
    elif args.command == "rotate-keys":
        print(f"Re-encrypted {rotate_keys(settings)} secret(s) under the newest key", flush=True)
    else:
        serve(settings, workers=args.workers, sandbox=not args.no_sandbox, worker=False if args.no_worker else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
