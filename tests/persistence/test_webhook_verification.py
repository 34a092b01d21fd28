"""Incoming-webhook declarations of providers: the save-time rules, directly and through the hub's API."""

from __future__ import annotations

import pytest

from persistence import bootstrap, webhook_verification
from persistence.errors import InvalidInput
from tests import factories
from tests.assertions import assert_error

BASE = "/api/v1/admin/integrations"

ENTITIES = [{"name": "Contact", "displayName": "Contacts",
             "sync": {"path": "/contacts", "itemsPath": "data", "idField": "id", "paging": {"type": "none"},
                      "fetch": {"method": "GET", "path": "/contacts/{id}"}}},
            {"name": "Note", "displayName": "Notes",
             "sync": {"path": "/notes", "itemsPath": "data", "idField": "id", "paging": {"type": "none"}}},
            {"name": "Plain", "displayName": "Plain"}]


def hmac_declaration(**overrides) -> dict:
    declaration = {"scheme": "hmac_sha256", "signatureHeader": "X-Signature", "eventIdHeader": "X-Event-Id",
                   "routes": [{"entity": "Contact", "externalIdField": "id"}]}
    declaration.update(overrides)
    return {key: value for key, value in declaration.items() if value is not None}


class TestDeclarationRules:
    @pytest.mark.parametrize("declaration", [
        hmac_declaration(),
        hmac_declaration(signedPayload="{timestamp}.{body}", timestampHeader="X-Timestamp"),
        hmac_declaration(signatureKey="v1", timestampKey="t", signedPayload="{timestamp}.{body}"),
        hmac_declaration(eventIdHeader=None, eventIdField="id", routes=[
            {"entity": "Note", "externalIdField": "id", "recordField": "note", "matchField": "kind", "matchValue": "note"}]),
        {"scheme": "standard_webhooks", "routes": [{"entity": "Contact", "externalIdField": "id"}]},
        bootstrap.SANDBOX_WEBHOOK_VERIFICATION | {"routes": [{"entity": "Contact", "externalIdField": "data.id"}]},
    ])
    def test_valid(self, declaration):
        webhook_verification.validate(declaration, ENTITIES)

    @pytest.mark.parametrize("declaration, field", [
        (hmac_declaration(signatureHeader=None), "signatureHeader"),
        (hmac_declaration(signaturePrefix="sha256=", signatureKey="v1"), "signaturePrefix"),
        (hmac_declaration(signedPayload="{body}.{timestamp}"), "signedPayload"),
        (hmac_declaration(signedPayload="{timestamp}{timestamp}{body}", timestampHeader="X-T"), "signedPayload"),
        (hmac_declaration(signedPayload="{timestamp}.{body}"), "signedPayload"),
        (hmac_declaration(timestampHeader="X-Timestamp"), "signedPayload"),
        (hmac_declaration(signedPayload="{timestamp}.{body}", timestampHeader="X-T", timestampKey="t"), "signedPayload"),
        (hmac_declaration(signedPayload="{timestamp}.{body}", timestampKey="t"), "timestampKey"),
        (hmac_declaration(eventIdHeader=None), "eventIdHeader"),
        (hmac_declaration(eventIdField="id"), "eventIdHeader"),
        ({"scheme": "standard_webhooks", "signatureHeader": "X-S", "routes": []}, "signatureHeader"),
        (hmac_declaration(routes=[{"entity": "Unknown", "externalIdField": "id"}]), "routes[0].entity"),
        (hmac_declaration(routes=[{"entity": "Plain", "externalIdField": "id", "recordField": "x"}]), "routes[0].entity"),
        (hmac_declaration(routes=[{"entity": "Note", "externalIdField": "id"}]), "routes[0].recordField"),
        (hmac_declaration(routes=[{"entity": "Contact", "externalIdField": "id", "matchValue": "x"}]), "routes[0].matchValue"),
        (hmac_declaration(routes=[{"entity": "Contact", "externalIdField": "id", "matchField": "x"}]), "routes[0].matchValue"),
        (hmac_declaration(routes=[{"entity": "Contact", "externalIdField": "id", "matchField": "x", "matchHeader": "X",
                                   "matchValue": "y"}]), "routes[0].matchValue"),
    ])
    def test_refused(self, declaration, field):
        with pytest.raises(InvalidInput) as raised:
            webhook_verification.validate(declaration, ENTITIES)

        assert raised.value.details == {"field": f"webhookVerification.{field}"}


class TestThroughTheApi:
    def test_a_valid_declaration_is_stored_and_returned(self, client, super_admin):
        body = factories.provider_body(availableEntities=ENTITIES, webhookVerification=hmac_declaration())

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert response.status_code == 201, response.text
        assert response.json()["webhookVerification"] == body["webhookVerification"]
        assert response.json()["availableEntities"] == ENTITIES

    def test_a_broken_rule_is_400_naming_the_field(self, client, super_admin):
        body = factories.provider_body(availableEntities=ENTITIES,
                                       webhookVerification=hmac_declaration(routes=[{"entity": "Note", "externalIdField": "id"}]))

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details={"field": "webhookVerification.routes[0].recordField"})

    def test_an_update_is_checked_against_the_stored_entities(self, client, super_admin):
        created = factories.create_provider(client, super_admin, availableEntities=ENTITIES)

        refused = client.patch(f"{BASE}/{created['category']}/{created['id']}", headers=super_admin.headers,
                               json={"webhookVerification": hmac_declaration(routes=[{"entity": "Plain", "externalIdField": "id"}])})
        removed = client.patch(f"{BASE}/{created['category']}/{created['id']}", headers=super_admin.headers,
                               json={"webhookVerification": None})

        assert_error(refused, 400, "VALIDATION_ERROR", details={"field": "webhookVerification.routes[0].entity"})
        assert removed.status_code == 200 and removed.json()["webhookVerification"] is None

    @pytest.mark.parametrize("declaration", [
        {"scheme": "hmac_sha256", "routes": []},
        hmac_declaration(scheme="md5"),
        hmac_declaration(toleranceSeconds=0),
        hmac_declaration(signatureHeader="X Bad Header"),
        hmac_declaration(unknown=True),
    ])
    def test_the_schema_refuses(self, client, super_admin, declaration):
        body = factories.provider_body(availableEntities=ENTITIES, webhookVerification=declaration)

        assert_error(client.post(BASE, json=body, headers=super_admin.headers), 400, "VALIDATION_ERROR")

    def test_a_fetch_path_needs_its_id(self, client, super_admin):
        entities = [dict(ENTITIES[0], sync=dict(ENTITIES[0]["sync"], fetch={"method": "GET", "path": "/contacts"}))]

        response = client.post(BASE, json=factories.provider_body(availableEntities=entities), headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", details={"field": "availableEntities[0].sync.fetch.path"})

    def test_every_shipped_declaration_is_valid(self):
        for entry in bootstrap.catalog_entries():
            webhook_verification.validate(entry.get("webhook_verification"), entry["available_entities"])
        documents = bootstrap.sandbox_documents("http://127.0.0.1:1", client_id="c", client_secret="s")
        for document in documents:
            webhook_verification.validate(document["webhookVerification"], document["availableEntities"])
        shipped = {entry["provider"] for entry in bootstrap.catalog_entries() if entry.get("webhook_verification")}
        assert shipped == {"github", "slack", "stripe"}
