"""The sandbox provider's WSGI app factory."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from connectors.sandbox.api import api_blueprint
from connectors.sandbox.config import SandboxConfig
from connectors.sandbox.control import control_blueprint
from connectors.sandbox.oauth import SandboxAuthorizationServer, oauth_blueprint
from connectors.sandbox.state import SandboxState
from connectors.sandbox.styles import register_paging_routes
from connectors.sandbox.writes import register_write_routes

STATE_EXTENSION = "sandbox_state"


def create_sandbox_app(config: SandboxConfig) -> Flask:
    """Return a Flask app serving the sandbox OAuth2 server and REST API for `config`.

    The app's state (codes, tokens, rate-limit counters, records) is a SandboxState in
    `app.extensions["sandbox_state"]`; `config` is kept by reference and read per request.
    """
    app = Flask("connectors.sandbox")
    app.json.sort_keys = False  # keep the documented field order in answers
    state = SandboxState(config)
    app.extensions[STATE_EXTENSION] = state
    app.register_blueprint(oauth_blueprint(SandboxAuthorizationServer(app, state)))
    api = api_blueprint(state)
    register_write_routes(api, state)
    register_paging_routes(api, state)
    app.register_blueprint(api)
    app.register_blueprint(control_blueprint(state))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    return app


def _http_error(error: HTTPException) -> Response:
    # 404/405/... in the same {"error", "message"} shape as the API's own errors.
    answer = jsonify({"error": (error.name or "error").lower().replace(" ", "_"), "message": error.description})
    answer.status_code = error.code or 500
    if error.code == 405 and error.valid_methods:
        answer.headers["Allow"] = ", ".join(error.valid_methods)
    return answer


def _internal_error(error: Exception) -> Response:
    # Never echo the exception: the body is the same for every unexpected failure.
    answer = jsonify({"error": "internal_error", "message": "The sandbox failed to handle this request"})
    answer.status_code = 500
    return answer
