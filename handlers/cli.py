"""The `integration-hub` command: serve, migrate, bootstrap."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys

from handlers.settings import Settings, load_settings


def migrate(settings: Settings) -> None:
    """Apply every Alembic migration to the configured database."""
    from persistence.migrate import upgrade

    upgrade(settings.database_url)


def bootstrap(settings: Settings) -> None:
    """Create the first super admin if none exists and seed the provider catalog (idempotent).

    Without `HUB_ADMIN_PASSWORD`, a strong password is generated and printed once.
    """
    from persistence import bootstrap as seeding
    from persistence import db

    db.configure(settings.database_url)
    password = settings.hub_admin_password or secrets.token_urlsafe(18)
    with db.transaction() as session:
        created = seeding.ensure_super_admin(session, email=settings.hub_admin_email, password=password)
        added = seeding.seed_catalog(session)
    if created:
        print(f"Created super admin {settings.hub_admin_email}", flush=True)
        if not settings.hub_admin_password:
            print(f"  generated password (shown once): {password}", flush=True)
    print(f"Provider catalog: {added} provider(s) added", flush=True)


def serve(settings: Settings, *, workers: int = 1) -> None:
    """Migrate, bootstrap, then serve the API with uvicorn (blocking)."""
    import uvicorn

    migrate(settings)
    bootstrap(settings)
    base = f"http://{settings.hub_host}:{settings.hub_port}"
    print(f"Integration Hub on {base}/api/v1", flush=True)
    if settings.swagger_ui_enabled:
        print(f"  interactive docs: {base}/api/v1/ui/", flush=True)
    print(f"  contract: {base}/api/v1/openapi.json   health: {base}/health", flush=True)
    uvicorn.run(
        "handlers.app:create_app",
        factory=True,
        host=settings.hub_host,
        port=settings.hub_port,
        workers=workers,
        log_level="info",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="integration-hub", description="Integration Hub API")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="migrate, bootstrap and serve the API")
    serve_cmd.add_argument("--host", help="bind address (env HUB_HOST, default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (env HUB_PORT, default 8000)")
    serve_cmd.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("bootstrap", help="create the first super admin and seed the provider catalog")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if getattr(args, "host", None):
        os.environ["HUB_HOST"] = args.host  # the uvicorn factory re-reads settings in each worker
    if getattr(args, "port", None):
        os.environ["HUB_PORT"] = str(args.port)
    settings = load_settings()
    if args.command == "migrate":
        migrate(settings)
        print("Database is up to date", flush=True)
    elif args.command == "bootstrap":
        migrate(settings)
        bootstrap(settings)
    else:
        serve(settings, workers=args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
