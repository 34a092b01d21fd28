"""The sandbox as a realistic peer, over real loopback HTTP: writes, changed-since with deletions, every
paging style, fault injection, signed change notifications, and the seeded `sandbox_crm` definitions
walked with connectors.sync_definitions."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from connectors.sandbox import SandboxConfig, SandboxServer
from connectors.sandbox.faults import Faults
from connectors.sync_definitions import (
    extract_items,
    first_request,
    is_deleted,
    item_id,
    next_request,
)
from persistence.sync_definitions import SyncDefinition, definitions, parse_definition
from tests.connectors.sandbox.test_sandbox import (
    API_KEY,
    bearer,
    connect,
    page_through,
    refresh,
)

WAIT_SECONDS = 10  # generous bound for background deliveries; tests poll, they do not time anything


@pytest.fixture
def peer():
    """A sandbox with 30 accounts (60 contacts)."""
    with SandboxServer(SandboxConfig(records=30)) as server:
        yield server


@pytest.fixture
def http(peer):
    with httpx.Client(base_url=peer.base_url, headers=API_KEY, timeout=10) as client:
        yield client


def walk(client: httpx.Client, definition, base_url: str, *, since: datetime | None = None) -> tuple[list[dict], int]:
    """Walk a list to its end with the definition; return (items, pages)."""
    request, items, pages = first_request(definition, base_url, since=since), [], 0
    while request is not None:
        response = client.get(request.url, params=request.params)
        assert response.status_code == 200, response.text
        page = extract_items(definition, response.json())
        items.extend(page)
        pages += 1
        request = next_request(definition, request, response, page)
    return items, pages


def style_definition(style: str, kind: str = "contacts") -> SyncDefinition:
    """A definition of the sandbox's `/paged/<style>/<kind>` endpoint (`/<kind>` for cursor), page size 7."""
    paging = {
        "cursor": ({"type": "cursor", "cursorParam": "cursor", "limitParam": "limit", "pageSize": 7, "nextCursorPath": "nextCursor"}, "data"),
        "offset": ({"type": "offset", "offsetParam": "offset", "limitParam": "limit", "pageSize": 7}, "data"),
        "page": ({"type": "page", "pageParam": "page", "limitParam": "per_page", "pageSize": 7}, "result.items"),
        "link_header": ({"type": "link_header", "limitParam": "limit", "pageSize": 7}, ""),
        "last_id": ({"type": "cursor", "cursorParam": "starting_after", "limitParam": "limit", "pageSize": 7,
                     "nextCursorItemField": "id", "hasMorePath": "has_more"}, "data"),
        "none": ({"type": "none"}, "records"),
    }[style]
    path = f"/{kind}" if style == "cursor" else f"/paged/{style}/{kind}"
    return parse_definition({"name": kind, "sync": {"path": path, "itemsPath": paging[1], "idField": "id", "updatedAtField": "updatedAt",
                                                    "deletedField": "deleted", "paging": paging[0],
                                                    "incremental": {"param": "updated_since", "format": "rfc3339"}}})


class TestWrites:
    def test_create_update_delete_and_changed_since_shows_the_deletion(self, http, peer):
        before = datetime.now(timezone.utc).replace(microsecond=0)
        created = http.post("/contacts", json={"accountId": "acc_0001", "firstName": "Grace", "email": "g@example.com"})
        assert created.status_code == 201
        assert created.headers["location"] == "/contacts/con_0061"
        assert created.json() == {"id": "con_0061", "accountId": "acc_0001", "firstName": "Grace", "email": "g@example.com",
                                  "updatedAt": created.json()["updatedAt"]}
        updated = http.patch("/contacts/con_0061", json={"lastName": "Hopper"})
        assert updated.status_code == 200
        assert updated.json()["lastName"] == "Hopper"
        assert updated.json()["updatedAt"] > created.json()["updatedAt"]  # bumped even within the same second
        assert http.delete("/contacts/con_0002").status_code == 204

        assert http.get("/contacts/con_0002").status_code == 404
        assert http.get("/contacts/con_0061").json() == updated.json()
        live = page_through(http, "/contacts", {}, limit=100)
        assert "con_0002" not in {record["id"] for record in live} and len(live) == 60
        changed = page_through(http, "/contacts", {}, limit=100, updated_since=before.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert sorted(record["id"] for record in changed) == ["con_0002", "con_0061"]
        deleted = next(record for record in changed if record["id"] == "con_0002")
        assert deleted["deleted"] is True and deleted["deletedAt"] == deleted["updatedAt"]

    @pytest.mark.parametrize(
        ("method", "path", "body", "status", "message"),
        [
            ("post", "/accounts", {}, 400, "name is required"),
            ("post", "/accounts", {"name": "X", "owner": "me"}, 400, "owner is not a writable field; writable: name, industry, website"),
            ("post", "/contacts", {"accountId": "acc_9999"}, 400, "accountId acc_9999 is not an existing account"),
            ("patch", "/accounts/acc_0001", {"name": 7}, 400, "name must be a non-empty string of at most 200 characters"),
            ("patch", "/accounts/acc_0001", {}, 400, "Give at least one field to change"),
            ("patch", "/accounts/acc_9999", {"name": "X"}, 404, "No account acc_9999"),
            ("delete", "/contacts/con_9999", None, 404, "No contact con_9999"),
        ],
        ids=["missing-name", "unknown-field", "unknown-account", "not-a-string", "empty", "unknown-id", "delete-unknown"],
    )
    def test_bad_writes(self, http, method, path, body, status, message):
        response = http.request(method.upper(), path, json=body)
        assert response.status_code == status
        assert response.json() == {"error": "invalid_request" if status == 400 else "not_found", "message": message}

    def test_writes_need_the_write_scope(self, peer):
        with httpx.Client(base_url=peer.base_url, timeout=10) as client:
            token = connect(client, peer, scope="crm.read")
            response = client.post("/accounts", json={"name": "X"}, headers=bearer(token["access_token"]))
        assert response.status_code == 403
        assert response.json() == {"error": "insufficient_scope", "message": "This operation needs the 'crm.write' scope"}


class TestPagingStyles:
    @pytest.mark.parametrize("style", ["cursor", "offset", "page", "link_header", "last_id", "none"])
    def test_every_style_walks_to_the_end_without_duplicates(self, http, peer, style):
        definition = style_definition(style)
        items, pages = walk(http, definition, peer.base_url)

        ids = [item_id(definition, item) for item in items]
        assert sorted(ids) == [f"con_{index:04d}" for index in range(1, 61)]
        assert pages == (1 if style == "none" else 9)  # 60 items by 7: 8 full pages and a short one
        assert [(item["updatedAt"], item["id"]) for item in items] == sorted((item["updatedAt"], item["id"]) for item in items)

    @pytest.mark.parametrize("style", ["cursor", "offset", "page", "link_header", "last_id", "none"])
    def test_every_style_serves_changed_since_with_deletions(self, http, peer, style):
        since = datetime.now(timezone.utc).replace(microsecond=0)
        http.patch("/contacts/con_0005", json={"firstName": "Changed"})
        http.delete("/contacts/con_0009")
        definition = style_definition(style)

        items, _ = walk(http, definition, peer.base_url, since=since)

        assert sorted(item["id"] for item in items) == ["con_0005", "con_0009"]
        assert {item["id"]: is_deleted(definition, item) for item in items} == {"con_0005": False, "con_0009": True}


class TestFaults:
    def test_every_nth_request_answers_429_with_retry_after(self, http):
        http.post("/_control/faults", json={"rateLimitEvery": 3, "retryAfter": 7})
        statuses = [http.get("/me") for _ in range(6)]
        assert [response.status_code for response in statuses] == [200, 200, 429, 200, 200, 429]
        assert statuses[2].headers["retry-after"] == "7"
        assert statuses[2].json() == {"error": "rate_limit_exceeded", "message": "Injected rate limit; retry in 7 s"}

    def test_5xx_bursts_every_nth_request(self, http):
        http.post("/_control/faults", json={"errorEvery": 4, "errorBurst": 2, "errorStatus": 502})
        assert [http.get("/me").status_code for _ in range(8)] == [200, 200, 200, 502, 502, 200, 200, 502]

    def test_fail_next_and_reset(self, http):
        assert http.post("/_control/faults", json={"failNext": 2}).json()["failNext"] == 2
        assert [http.get("/me").status_code for _ in range(3)] == [503, 503, 200]
        http.post("/_control/faults", json={"errorEvery": 1})
        assert http.delete("/_control/faults").json() == Faults().to_json()
        assert http.get("/me").status_code == 200
        assert http.get("/health").status_code == 200

    def test_added_latency_is_reported_and_applied(self, http, peer):
        assert http.post("/_control/faults", json={"latencyMs": 50}).json()["latencyMs"] == 50
        assert peer.state.faults.latency_seconds() == 0.05
        assert http.get("/me").status_code == 200

    def test_401_forces_a_token_refresh(self, http, peer):
        token = connect(http, peer)
        http.post("/_control/faults", json={"unauthorizedEvery": 2})
        first = http.get("/me", headers=bearer(token["access_token"]))
        second = http.get("/me", headers=bearer(token["access_token"]))
        assert (first.status_code, second.status_code) == (200, 401)
        assert second.json() == {"error": "unauthorized", "message": "The access token expired"}
        renewed = refresh(http, token["refresh_token"])
        assert renewed.status_code == 200
        assert http.get("/me", headers=bearer(renewed.json()["access_token"])).status_code == 200

    def test_a_request_still_sleeping_an_old_latency_is_waited_for(self, http, peer):
        token = connect(http, peer)
        http.post("/_control/faults", json={"latencyMs": 400})
        with ThreadPoolExecutor(1) as pool:
            straggler = pool.submit(http.get, "/me", headers=bearer(token["access_token"]))
            time.sleep(0.1)  # it is asleep in the sandbox now
            assert peer.state.faults.wait_until_idle(0.01) is False
            assert peer.state.faults.wait_until_idle(5) is True
            assert straggler.result(5).status_code == 200
        http.post("/_control/faults", json={"unauthorizedEvery": 2})
        # Counted under the new plan, the straggler would have been the first and this answer's 200 a 401.
        assert [http.get("/me", headers=bearer(token["access_token"])).status_code for _ in range(2)] == [200, 401]

    def test_faults_set_at_start(self):
        with SandboxServer(SandboxConfig(faults=Faults(rate_limit_every=2))) as server, \
                httpx.Client(base_url=server.base_url, headers=API_KEY) as client:
            assert [client.get("/me").status_code for _ in range(2)] == [200, 429]

    @pytest.mark.parametrize(("body", "message"), [({"latencyMs": 99999}, "latencyMs must be an integer between 0 and 30000"),
                                                   ({"errorStatus": 404}, "errorStatus must be an integer between 500 and 599"),
                                                   ({"chaos": 1}, "unknown field chaos")])
    def test_bad_fault_plan_answers_400(self, http, body, message):
        response = http.post("/_control/faults", json=body)
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_request", "message": message}


class Receiver:
    """A real HTTP receiver on loopback recording every POST (headers and raw body)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int) -> list:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


class TestNotifications:
    def test_each_change_is_posted_signed(self, http, receiver):
        registered = http.post("/_control/webhooks", json={"url": receiver.url, "secret": "whsec-test"})
        assert registered.status_code == 201
        assert set(registered.json()) == {"id", "url", "createdAt"}
        http.patch("/accounts/acc_0003", json={"name": "Renamed"})
        http.delete("/accounts/acc_0004")

        (headers, body), (_, second) = receiver.wait_for(2)[:2]

        timestamp, signature = headers["X-Sandbox-Timestamp"], headers["X-Sandbox-Signature"]
        expected = hmac.new(b"whsec-test", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected)
        assert abs(int(timestamp) - time.time()) < 300
        event = json.loads(body)
        assert set(event) == {"id", "type", "entity", "data", "occurred_at"}
        assert (event["id"], event["type"], event["entity"]) == (headers["X-Sandbox-Event-Id"], "account.updated", "accounts")
        assert event["data"]["name"] == "Renamed" and event["occurred_at"] == event["data"]["updatedAt"]
        assert json.loads(second)["type"] == "account.deleted" and json.loads(second)["data"]["deleted"] is True
        assert hmac.new(b"wrong", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest() != signature

    def test_unregistered_receiver_gets_nothing(self, http, receiver):
        subscription = http.post("/_control/webhooks", json={"url": receiver.url, "secret": "s"}).json()
        assert http.delete(f"/_control/webhooks/{subscription['id']}").status_code == 204
        assert http.get("/_control/webhooks").json() == {"subscriptions": [], "deliveries": []}
        http.post("/accounts", json={"name": "Quiet"})
        assert http.delete(f"/_control/webhooks/{subscription['id']}").status_code == 404

    @pytest.mark.parametrize("body", [{"url": "ftp://x/y", "secret": "s"}, {"url": "http://127.0.0.1/h", "secret": ""}, {"url": "http://x"}])
    def test_bad_registration_answers_400(self, http, body):
        assert http.post("/_control/webhooks", json=body).status_code == 400


class TestSeededDefinitions:
    def test_sandbox_crm_definitions_walk_the_sandbox(self, client, super_admin, http, peer):
        response = client.get("/api/v1/admin/integrations", params={"search": "sandbox_crm", "limit": 100},
                              headers=super_admin.headers)
        assert response.status_code == 200
        seeded = next(provider for provider in response.json()["providers"] if provider["provider"] == "sandbox_crm")
        crm = definitions(seeded["availableEntities"])
        assert set(crm) == {"Account", "Contact"}
        since = datetime.now(timezone.utc).replace(microsecond=0)

        accounts, pages = walk(http, crm["Account"], peer.base_url)
        contacts, _ = walk(http, crm["Contact"], peer.base_url)
        assert sorted(item_id(crm["Account"], item) for item in accounts) == [f"acc_{i:04d}" for i in range(1, 31)]
        assert len({item["id"] for item in contacts}) == len(contacts) == 60
        assert pages == 1  # page size 100

        write = crm["Contact"]
        created = http.request(write.create.method, write.create.path, json={"accountId": "acc_0001", "email": "n@example.com"}).json()
        http.request(write.update.method, write.update.path.format(id="con_0007"), json={"email": "new@example.com"})
        http.request(write.delete.method, write.delete.path.format(id="con_0008"))
        changed, _ = walk(http, write, peer.base_url, since=since)
        assert {item["id"]: is_deleted(write, item) for item in changed} == {created["id"]: False, "con_0007": False, "con_0008": True}
