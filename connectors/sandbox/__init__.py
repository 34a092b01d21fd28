"""Sandbox provider: a small deterministic external system the hub reaches over loopback HTTP.

An OAuth2 authorization server (authorization code + PKCE S256, rotating refresh tokens,
revocation) and a REST API (bearer, API key or basic auth; cursor paging; rate limit) in one
Flask app with in-memory state. Used by tests (SandboxServer), demos and offline work (cli.main).
"""

from connectors.sandbox.app import create_sandbox_app
from connectors.sandbox.config import SandboxConfig
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.state import SandboxState

__all__ = ["SandboxConfig", "SandboxServer", "SandboxState", "create_sandbox_app"]
