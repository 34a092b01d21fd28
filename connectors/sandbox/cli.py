"""Command line entry point: serve a sandbox provider in the foreground.

    python -m connectors.sandbox --port 8100 --redirect-uri http://127.0.0.1:8000/api/v1/integrations/oauth/callback
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence

from werkzeug.serving import make_server

from connectors.sandbox.app import create_sandbox_app
from connectors.sandbox.config import SandboxConfig

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, print the endpoints and credentials, and serve until interrupted; return 0."""
    args = build_parser().parse_args(argv)
    config = SandboxConfig(
        redirect_uris=args.redirect_uris or [default_redirect_uri(os.environ)],
        access_token_ttl=args.access_token_ttl,
    )
    if not _is_loopback(args.host):
        # Authlib refuses plain-HTTP OAuth requests to non-loopback hosts (e.g. a compose service
        # name); the sandbox is plain HTTP by design, so opt out for this process only.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    server = make_server(args.host, args.port, create_sandbox_app(config), threaded=True)
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
    print(f"  basic auth:    {user} / {password}", flush=True)
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
