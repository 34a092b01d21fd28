"""Command line entry point: serve a sandbox provider in the foreground.

    python -m connectors.sandbox --port 8100 --redirect-uri http://127.0.0.1:8000/api/v1/integrations/oauth/callback
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence

from werkzeug.serving import make_server

from connectors.sandbox.app import STATE_EXTENSION, create_sandbox_app
from connectors.sandbox.config import SandboxConfig
from connectors.sandbox.faults import Faults, camel, from_json

CALLBACK_PATH = "/api/v1/integrations/oauth/callback"
DEFAULT_HUB_URL = "http://127.0.0.1:8000"


def default_redirect_uri(environ: Mapping[str, str]) -> str:
    """Return the hub's OAuth callback URL under HUB_PUBLIC_URL (default http://127.0.0.1:8000)."""
    return (environ.get("HUB_PUBLIC_URL") or DEFAULT_HUB_URL).rstrip("/") + CALLBACK_PATH


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `main`."""
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(prog="python -m connectors.sandbox", description="Serve the sandbox provider.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8100, help="port to bind, 0 for any free port (default 8100)")
    parser.add_argument("--redirect-uri", action="append", dest="redirect_uris", metavar="URI",
                        help="registered redirect URI, repeatable (default: $HUB_PUBLIC_URL" + CALLBACK_PATH + ")")
    parser.add_argument("--access-token-ttl", type=int, default=defaults.access_token_ttl, metavar="SECONDS",
                        help=f"access token lifetime in seconds (default {defaults.access_token_ttl})")
    parser.add_argument("--records", type=int, default=defaults.records, metavar="N",
                        help=f"accounts to generate, deterministically; twice as many contacts (default {defaults.records})")
    faults = parser.add_argument_group("fault injection (also POST /_control/faults)")
    for flag, help_text in (("--rate-limit-every", "every Nth API request answers 429"),
                            ("--retry-after", "Retry-After seconds of those 429s (default 1)"),
                            ("--error-every", "every Nth API request starts a burst of 5xx answers"),
                            ("--error-burst", "length of each 5xx burst (default 1)"),
                            ("--error-status", "status of the injected errors (default 503)"),
                            ("--latency-ms", "milliseconds added to every API answer"),
                            ("--unauthorized-every", "every Nth bearer request finds its access token expired (401)")):
        faults.add_argument(flag, type=int, metavar="N", help=help_text)
    parser.add_argument("--webhook-url", metavar="URL", help="register a receiver of signed change notifications at start")
    parser.add_argument("--webhook-secret", metavar="SECRET", help="its HMAC secret (required with --webhook-url)")
    return parser


def faults_from_args(args: argparse.Namespace) -> Faults:
    """Return the fault plan of the parsed fault flags (unset flags keep Faults' defaults).

    Raises ValueError naming a value out of the bounds the control endpoint also applies.
    """
    names = ("rate_limit_every", "retry_after", "error_every", "error_burst", "error_status", "latency_ms",
             "unauthorized_every")
    return from_json({camel(name): getattr(args, name) for name in names if getattr(args, name) is not None})


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, print the endpoints and credentials, and serve until interrupted; return 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.webhook_url) != bool(args.webhook_secret):
        parser.error("--webhook-url and --webhook-secret go together")
    if args.records < 0 or args.records > 1_000_000:
        parser.error("--records must be between 0 and 1000000")
    try:
        faults = faults_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    config = SandboxConfig(
        redirect_uris=args.redirect_uris or [default_redirect_uri(os.environ)],
        access_token_ttl=args.access_token_ttl,
        records=args.records,
        faults=faults,
    )
    if not _is_loopback(args.host):
        # Authlib refuses plain-HTTP OAuth requests to non-loopback hosts (e.g. a compose service
        # name); the sandbox is plain HTTP by design, so opt out for this process only.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    app = create_sandbox_app(config)
    if args.webhook_url:
        app.extensions[STATE_EXTENSION].notifier.register(args.webhook_url, args.webhook_secret)
    server = make_server(args.host, args.port, app, threaded=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    base_url = f"http://{host}:{server.server_port}"
    user, password = next(iter(config.basic_users.items()))
    print(f"Sandbox provider on {base_url}", flush=True)
    print(f"  authorize:     {base_url}/oauth/authorize  (PKCE S256 required)")
    print(f"  token:         {base_url}/oauth/token")
    print(f"  revoke:        {base_url}/oauth/revoke")
    print(f"  client id:     {config.client_id}")
    print(f"  client secret: {config.client_secret}")
    print(f"  redirect URIs: {', '.join(config.redirect_uris)}")
    print(f"  scopes:        {' '.join(config.scopes)}")
    print(f"  API key:       {config.api_keys[0]}  (header X-API-Key)")
    print(f"  basic auth:    {user} / {password}")
    print(f"  records:       {config.records} accounts, {2 * config.records} contacts")
    print(f"  control:       {base_url}/_control/faults, {base_url}/_control/webhooks", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
