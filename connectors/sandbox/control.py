"""The sandbox's control endpoints (no authentication; a test peer, not an API the hub exposes).

- `GET /_control/faults`, `POST /_control/faults` (replace the plan; camelCase fields of
  connectors.sandbox.faults.Faults, each optional), `DELETE /_control/faults` (no faults).
- `POST /_control/webhooks` `{"url", "secret"}` registers a change receiver (201, without the
  secret), `GET /_control/webhooks` lists receivers and the last deliveries,
  `DELETE /_control/webhooks/<id>` removes one (204).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, request

from connectors.sandbox.faults import Faults, from_json
from connectors.sandbox.state import SandboxState

MAX_URL_LENGTH = 2048
MAX_SECRET_LENGTH = 200


def control_blueprint(state: SandboxState) -> Blueprint:
    """Return the blueprint of the control endpoints of `state`."""
    blueprint = Blueprint("sandbox_control", __name__, url_prefix="/_control")

    @blueprint.get("/faults")
    def get_faults() -> Response:
        """Return the fault plan in force."""
        return jsonify(state.faults.faults.to_json())

    @blueprint.post("/faults")
    def set_faults() -> Response:
        """Replace the fault plan (counters restart); 400 names a bad field."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _invalid("The body must be a JSON object")
        try:
            faults = from_json(body)
        except ValueError as error:
            return _invalid(str(error))
        state.faults.configure(faults)
        return jsonify(faults.to_json())

    @blueprint.delete("/faults")
    def clear_faults() -> Response:
        """Switch every fault off."""
        state.faults.configure(Faults())
        return jsonify(Faults().to_json())

    @blueprint.post("/webhooks")
    def register_webhook() -> tuple[Response, int]:
        """Register a receiver of signed change notifications."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or set(body) != {"url", "secret"}:
            return _invalid("The body must be {\"url\": ..., \"secret\": ...}"), 400
        url, secret = body["url"], body["secret"]
        if not isinstance(url, str) or len(url) > MAX_URL_LENGTH or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).hostname:
            return _invalid("url must be an absolute http(s) URL"), 400
        if not isinstance(secret, str) or not 0 < len(secret) <= MAX_SECRET_LENGTH:
            return _invalid(f"secret must be a string of 1 to {MAX_SECRET_LENGTH} characters"), 400
        return jsonify(state.notifier.register(url, secret).to_json()), 201

    @blueprint.get("/webhooks")
    def list_webhooks() -> Response:
        """Return the receivers and the last deliveries (oldest first)."""
        return jsonify({"subscriptions": [s.to_json() for s in state.notifier.subscriptions()],
                        "deliveries": state.notifier.deliveries()})

    @blueprint.delete("/webhooks/<subscription_id>")
    def unregister_webhook(subscription_id: str) -> tuple[Response | str, int]:
        """Remove a receiver; 404 for an unknown id."""
        if not state.notifier.unregister(subscription_id):
            answer = jsonify({"error": "not_found", "message": f"No webhook {subscription_id}"})
            return answer, 404
        return "", 204

    return blueprint


def _invalid(message: str) -> Response:
    answer = jsonify({"error": "invalid_request", "message": message})
    answer.status_code = 400
    return answer
