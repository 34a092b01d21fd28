"""Operations of tag `incoming-webhooks` (openapi/paths/incoming-webhooks.yaml).

Seeds: integrations document ("Incoming Webhooks": HMAC verification), PrintShop guide
(idempotent webhook handlers). The receiving operation is public: the provider's signature over
the raw body (`server/raw_body.py` keeps it byte for byte) is its authentication.
"""

from __future__ import annotations

import time
from uuid import UUID

from connexion import request

from connectors import incoming_webhooks as verifier
from handlers import views
from persistence import audit, events, incoming_webhooks, integrations
from persistence.db import transaction
from persistence.errors import InvalidInput, NotFound
from persistence.models import utcnow
from server.errors import ApiError
from server.observability import INCOMING_WEBHOOKS
from server.security import Caller, request_actor


def receive_incoming_webhook(integrationId: str, body: bytes | None = None) -> tuple[dict, int]:
    """Verify a provider's notification over its raw bytes; queue its work, or acknowledge a replay (202 both)."""
    headers, raw = dict(request.headers), body or b""
    try:
        with transaction() as session:
            target = incoming_webhooks.target(session, integration_id=UUID(integrationId))
    except NotFound:
        INCOMING_WEBHOOKS.labels(outcome="unknown_integration").inc()
        raise
    try:
        verified = verifier.verify(target.declaration, secret=target.secret, headers=headers, body=raw, now=time.time())
    except verifier.Rejected as rejected:
        _refuse(target, rejected.reason)
    except verifier.Unusable as unusable:
        INCOMING_WEBHOOKS.labels(outcome="unusable").inc()
        raise ApiError(400, "VALIDATION_ERROR", str(unusable)) from None
    found = verifier.route(target.declaration, headers=headers, body=raw)
    with transaction() as session:
        status = incoming_webhooks.accept(
            session, tenant_id=target.tenant_id, integration_id=target.integration_id, event_id=verified.event_id,
            entity=found.entity if found else None, external_id=found.external_id if found else None,
            record=found.record if found else None, now=utcnow())
    INCOMING_WEBHOOKS.labels(outcome=status).inc()
    return {"status": status, "eventId": verified.event_id}, 202


def _refuse(target: incoming_webhooks.Target, reason: str) -> None:
    """Audit and count a notification that failed verification, then answer 401 (the reason stays in the audit)."""
    INCOMING_WEBHOOKS.labels(outcome=reason).inc()
    with transaction() as session:
        audit.record(session, tenant_id=target.tenant_id, actor=request_actor(), action="incoming_webhook.reject",
                     resource_type="integration", resource_id=target.integration_id, changes={"reason": reason},
                     outcome="failure")
    raise ApiError(401, "INVALID_SIGNATURE", "The webhook signature is missing, wrong or too old")


def set_incoming_webhook_secret(id: str, token_info: dict, body: dict | None = None) -> dict:
    """Store the given secret, or generate one, for the integration's incoming webhooks; answer it this once."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        scheme = incoming_webhooks.scheme_of(session, tenant_id=caller.tenant_id, integration_id=UUID(id))
        secret = (body or {}).get("secret") or verifier.generate_secret(scheme)
        if not verifier.usable_secret(scheme, secret):
            raise InvalidInput("A standard_webhooks secret is whsec_ followed by base64", details={"field": "secret"})
        incoming_webhooks.set_secret(session, tenant_id=caller.tenant_id, integration_id=UUID(id), secret=secret,
                                     now=utcnow())
        view = views.integration(integrations.get_row(session, tenant_id=caller.tenant_id, integration_id=UUID(id)))
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor,
                             action="integration.set_webhook_secret", resource_type="integration", resource_id=id,
                             changes={"generated": not (body or {}).get("secret")},
                             event_type="integration.updated", data=view)
        return {"integrationId": id, "secret": secret, "scheme": scheme, "incomingWebhookUrl": view["incomingWebhookUrl"]}
