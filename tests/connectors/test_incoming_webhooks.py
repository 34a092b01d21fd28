"""The incoming-webhook verifier: signatures over raw bytes as each declared scheme computes them.

Signatures are computed here the way each provider documents them (and, for the sandbox and
Standard Webhooks, with the code that really signs: `connectors.sandbox.notify.sign` and the
`standardwebhooks` library), so a mistake in the verifier's reading of a scheme fails a test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from connectors import incoming_webhooks as verifier
from connectors.sandbox.notify import sign as sandbox_sign
from persistence import bootstrap, webhook_verification

NOW = 1_764_640_000  # 2025-12-02T01:46:40Z
SECRET = "0123456789abcdef0123456789abcdef"


def catalog_declaration(provider: str) -> webhook_verification.Declaration:
    entry = next(item for item in bootstrap.catalog_entries() if item["provider"] == provider)
    return webhook_verification.parse(entry["webhook_verification"])


SANDBOX = webhook_verification.parse(bootstrap.SANDBOX_WEBHOOK_VERIFICATION)
SANDBOX_BODY = json.dumps({"id": "evt_1", "type": "contact.updated", "entity": "contacts",
                           "data": {"id": "con_0001", "email": "ada@example.com",
                                    "updatedAt": "2026-12-02T01:00:00.000000Z"}}, separators=(",", ":")).encode()


def sandbox_headers(body: bytes = SANDBOX_BODY, *, timestamp: int = NOW, secret: str = SECRET,
                    event_id: str = "evt_1") -> dict:
    return {"X-Sandbox-Signature": sandbox_sign(secret, str(timestamp), body), "X-Sandbox-Timestamp": str(timestamp),
            "X-Sandbox-Event-Id": event_id, "Content-Type": "application/json"}


class TestSandboxScheme:
    def test_valid_notification(self):
        verified = verifier.verify(SANDBOX, secret=SECRET, headers=sandbox_headers(), body=SANDBOX_BODY, now=NOW)

        assert verified == verifier.Verified("evt_1", NOW)

    def test_headers_match_whatever_their_case(self):
        headers = {name.lower(): value for name, value in sandbox_headers().items()}

        assert verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW).event_id == "evt_1"

    @pytest.mark.parametrize("body", [SANDBOX_BODY + b" ", SANDBOX_BODY.replace(b"ada", b"eve"), b""])
    def test_a_changed_body_is_a_bad_signature(self, body):
        with pytest.raises(verifier.Rejected) as raised:
            verifier.verify(SANDBOX, secret=SECRET, headers=sandbox_headers(), body=body, now=NOW)

        assert raised.value.reason == "bad_signature"

    def test_another_secret_is_a_bad_signature(self):
        headers = sandbox_headers(secret="another-secret-of-some-length")

        with pytest.raises(verifier.Rejected, match="bad_signature"):
            verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW)

    def test_the_timestamp_is_signed(self):
        headers = sandbox_headers() | {"X-Sandbox-Timestamp": str(NOW + 1)}

        with pytest.raises(verifier.Rejected, match="bad_signature"):
            verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW)

    @pytest.mark.parametrize("age", [301, -301, 86_400])
    def test_outside_five_minutes_is_stale(self, age):
        headers = sandbox_headers(timestamp=NOW - age)

        with pytest.raises(verifier.Rejected, match="stale_timestamp"):
            verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW)

    @pytest.mark.parametrize("age", [300, -300, 0])
    def test_within_five_minutes_is_fresh(self, age):
        headers = sandbox_headers(timestamp=NOW - age)

        assert verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW).timestamp == NOW - age

    @pytest.mark.parametrize("missing, reason", [("X-Sandbox-Signature", "missing_signature"),
                                                 ("X-Sandbox-Timestamp", "missing_timestamp")])
    def test_missing_headers(self, missing, reason):
        headers = {k: v for k, v in sandbox_headers().items() if k != missing}

        with pytest.raises(verifier.Rejected) as raised:
            verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW)

        assert raised.value.reason == reason

    @pytest.mark.parametrize("signature", ["zz" * 32, "", "ab", "é" * 64, "0" * 64])
    def test_malformed_or_wrong_signatures_are_refused_not_raised(self, signature):
        headers = sandbox_headers() | {"X-Sandbox-Signature": signature}

        with pytest.raises(verifier.Rejected):
            verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW)

    @pytest.mark.parametrize("timestamp", ["abc", "1e9", "-5", "١٧٦٤٦٤٠٠٠٠", "9" * 40])
    def test_malformed_timestamps_are_refused(self, timestamp):
        headers = {"X-Sandbox-Signature": sandbox_sign(SECRET, timestamp, SANDBOX_BODY), "X-Sandbox-Timestamp": timestamp,
                   "X-Sandbox-Event-Id": "evt_1"}

        with pytest.raises(verifier.Rejected, match="stale_timestamp"):
            verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW)

    def test_any_bytes_are_verified_as_bytes(self):
        body = bytes(range(256)) * 4

        verified = verifier.verify(SANDBOX, secret=SECRET, headers=sandbox_headers(body), body=body, now=NOW)

        assert verified.event_id == "evt_1"
        assert verifier.route(SANDBOX, headers=sandbox_headers(body), body=body) is None

    def test_an_authentic_notification_without_event_id_is_unusable(self):
        headers = {k: v for k, v in sandbox_headers().items() if k != "X-Sandbox-Event-Id"}

        with pytest.raises(verifier.Unusable):
            verifier.verify(SANDBOX, secret=SECRET, headers=headers, body=SANDBOX_BODY, now=NOW)

    def test_route_takes_entity_id_and_whole_record(self):
        found = verifier.route(SANDBOX, headers=sandbox_headers(), body=SANDBOX_BODY)

        assert found == verifier.Notification("Contact", "con_0001", json.loads(SANDBOX_BODY)["data"])

    @pytest.mark.parametrize("body", [b'{"entity": "invoices", "data": {"id": "x"}}', b'{"entity": "contacts"}',
                                      b'{"entity": "contacts", "data": {"id": {"nested": 1}}}', b"[1, 2]", b"null"])
    def test_unroutable_notifications(self, body):
        assert verifier.route(SANDBOX, headers={}, body=body) is None


class TestGitHubScheme:
    """https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries"""

    GITHUB = catalog_declaration("github")
    BODY = b'{"action":"edited","issue":{"id":1347,"title":"Found a bug","updated_at":"2026-12-02T01:00:00Z"}}'

    def headers(self, body: bytes, secret: str = SECRET) -> dict:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                "X-GitHub-Event": "issues"}

    def test_valid(self):
        verified = verifier.verify(self.GITHUB, secret=SECRET, headers=self.headers(self.BODY), body=self.BODY, now=NOW)

        assert verified == verifier.Verified("72d3162e-cc78-11e3-81ab-4c9367dc0958", None)
        assert verifier.route(self.GITHUB, headers=self.headers(self.BODY), body=self.BODY) == verifier.Notification(
            "Issue", "1347", json.loads(self.BODY)["issue"])

    def test_the_prefix_is_required(self):
        headers = self.headers(self.BODY)
        headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"].removeprefix("sha256=")

        with pytest.raises(verifier.Rejected, match="missing_signature"):
            verifier.verify(self.GITHUB, secret=SECRET, headers=headers, body=self.BODY, now=NOW)

    def test_another_event_is_not_routed(self):
        headers = self.headers(self.BODY) | {"X-GitHub-Event": "ping"}

        assert verifier.route(self.GITHUB, headers=headers, body=self.BODY) is None


class TestStripeScheme:
    """https://docs.stripe.com/webhooks#verify-manually: `t=<ts>,v1=<hex>` over `<ts>.<body>`."""

    STRIPE = catalog_declaration("stripe")
    BODY = b'{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","type":"customer.updated","data":{"object":{"id":"cus_9s6XKzkNRiz8i3","object":"customer","email":"a@example.com"}}}'

    def header(self, *, secret: str = "whsec_test_secret_value", timestamp: int = NOW, extra: str = "") -> str:
        digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + self.BODY, hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={digest}{extra}"

    def test_valid_among_several_signatures(self):
        header = self.header(extra=",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39,v1=00")

        verified = verifier.verify(self.STRIPE, secret="whsec_test_secret_value", headers={"Stripe-Signature": header},
                                   body=self.BODY, now=NOW)

        assert verified == verifier.Verified("evt_1NG8Du2eZvKYlo2CUI79vXWy", NOW)
        assert verifier.route(self.STRIPE, headers={}, body=self.BODY).external_id == "cus_9s6XKzkNRiz8i3"

    def test_stale(self):
        header = self.header(timestamp=NOW - 600)

        with pytest.raises(verifier.Rejected, match="stale_timestamp"):
            verifier.verify(self.STRIPE, secret="whsec_test_secret_value", headers={"Stripe-Signature": header},
                            body=self.BODY, now=NOW)

    def test_only_v1_counts(self):
        header = self.header().replace("v1=", "v0=")

        with pytest.raises(verifier.Rejected, match="missing_signature"):
            verifier.verify(self.STRIPE, secret="whsec_test_secret_value", headers={"Stripe-Signature": header},
                            body=self.BODY, now=NOW)


class TestSlackScheme:
    """https://api.slack.com/authentication/verifying-requests-from-slack: `v0=` hex over `v0:<ts>:<body>`."""

    SLACK = catalog_declaration("slack")
    BODY = b'{"type":"event_callback","event_id":"Ev01","event":{"type":"user_change","user":{"id":"U123","updated":1764640000}}}'

    def test_valid(self):
        digest = hmac.new(SECRET.encode(), f"v0:{NOW}:".encode() + self.BODY, hashlib.sha256).hexdigest()
        headers = {"X-Slack-Signature": f"v0={digest}", "X-Slack-Request-Timestamp": str(NOW)}

        assert verifier.verify(self.SLACK, secret=SECRET, headers=headers, body=self.BODY, now=NOW).event_id == "Ev01"
        assert verifier.route(self.SLACK, headers=headers, body=self.BODY).external_id == "U123"


class TestStandardWebhooks:
    DECLARATION = webhook_verification.parse({"scheme": "standard_webhooks", "routes": [
        {"entity": "Contact", "externalIdField": "data.id", "recordField": "data"}]})
    BODY = b'{"type":"contact.updated","data":{"id":"c1","name":"Ada"}}'

    def signed(self, secret: str, *, timestamp: datetime | None = None) -> dict:
        moment = timestamp or datetime.now(UTC)
        return {"webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "webhook-timestamp": str(int(moment.timestamp())),
                "webhook-signature": Webhook(secret).sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", moment, self.BODY.decode())}

    def test_valid_with_a_generated_secret(self):
        secret = verifier.generate_secret("standard_webhooks")
        now = datetime.now(UTC).timestamp()

        verified = verifier.verify(self.DECLARATION, secret=secret, headers=self.signed(secret), body=self.BODY, now=now)

        assert verified.event_id == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
        assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32

    def test_another_secret(self):
        headers = self.signed(verifier.generate_secret("standard_webhooks"))

        with pytest.raises(verifier.Rejected, match="bad_signature"):
            verifier.verify(self.DECLARATION, secret=verifier.generate_secret("standard_webhooks"), headers=headers,
                            body=self.BODY, now=datetime.now(UTC).timestamp())

    def test_stale(self):
        secret = verifier.generate_secret("standard_webhooks")
        old = datetime.fromtimestamp(datetime.now(UTC).timestamp() - 600, UTC)

        with pytest.raises(verifier.Rejected, match="stale_timestamp"):
            verifier.verify(self.DECLARATION, secret=secret, headers=self.signed(secret, timestamp=old), body=self.BODY,
                            now=datetime.now(UTC).timestamp())

    @pytest.mark.parametrize("signature", ["v1", "v1,!!!", "nonsense", "v1,AAAA v2"])
    def test_malformed_signatures_are_refused(self, signature):
        secret = verifier.generate_secret("standard_webhooks")
        headers = self.signed(secret) | {"webhook-signature": signature}

        with pytest.raises(verifier.Rejected, match="bad_signature"):
            verifier.verify(self.DECLARATION, secret=secret, headers=headers, body=self.BODY,
                            now=datetime.now(UTC).timestamp())

    def test_non_utf8_body_is_a_bad_signature(self):
        secret = verifier.generate_secret("standard_webhooks")

        with pytest.raises(verifier.Rejected, match="bad_signature"):
            verifier.verify(self.DECLARATION, secret=secret, headers=self.signed(secret), body=b"\xff\xfe",
                            now=datetime.now(UTC).timestamp())

    def test_usable_secret(self):
        assert verifier.usable_secret("standard_webhooks", verifier.generate_secret("standard_webhooks"))
        assert not verifier.usable_secret("standard_webhooks", "whsec_!!!not-base64!!!")
        assert verifier.usable_secret("hmac_sha256", "anything-goes-here")
