"""Entity sync definitions: the contract schema and the save-time cross-field rules, through the hub's API."""

from __future__ import annotations

import pytest
from connexion.json_schema import Draft4RequestValidator
from jsonschema import Draft4Validator

from persistence import bootstrap, providers, sync_definitions
from persistence.errors import InvalidInput
from server.app import load_spec
from tests import factories
from tests.assertions import assert_error

BASE = "/api/v1/admin/integrations"
FIELDS = [{"name": "email", "type": "string"}, {"name": "name", "type": "string"}]


def definition(**overrides) -> dict:
    """A valid cursor-paged definition with writes; overrides replace top-level keys (None removes one)."""
    sync = {
        "source": "https://example.com/docs/contacts",
        "path": "/contacts",
        "itemsPath": "data.items",
        "idField": "id",
        "updatedAtField": "updatedAt",
        "titleField": "email",
        "searchableFields": ["email", "name"],
        "deletedField": "deleted",
        "paging": {"type": "cursor", "cursorParam": "cursor", "limitParam": "limit", "pageSize": 100,
                   "nextCursorPath": "nextCursor"},
        "incremental": {"param": "updated_since", "format": "rfc3339"},
        "write": {"create": {"method": "POST", "path": "/contacts"},
                  "update": {"method": "PATCH", "path": "/contacts/{id}"},
                  "delete": {"method": "DELETE", "path": "/contacts/{id}"}},
    }
    sync.update(overrides)
    return {key: value for key, value in sync.items() if value is not None}


def entities(sync: dict) -> list[dict]:
    return [{"name": "Contact", "displayName": "Contacts", "fields": FIELDS, "sync": sync}]


@pytest.fixture(scope="module")
def provider_create_validator():
    return Draft4RequestValidator(load_spec()["components"]["schemas"]["ProviderCreate"],
                                  format_checker=Draft4Validator.FORMAT_CHECKER)


class TestSaveTimeRules:
    def test_valid_definition_is_stored_and_returned(self, client, super_admin):
        body = factories.provider_body(availableEntities=entities(definition()))

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert response.status_code == 201, response.text
        assert response.json()["availableEntities"] == body["availableEntities"]

    @pytest.mark.parametrize(
        ("sync", "message", "field"),
        [
            (definition(paging={"type": "cursor", "nextCursorPath": "next"}), "paging type cursor needs cursorParam",
             "paging.cursorParam"),
            (definition(paging={"type": "cursor", "cursorParam": "c"}),
             "paging type cursor needs exactly one of nextCursorPath, nextCursorHeader, nextCursorItemField", "paging.nextCursorPath"),
            (definition(paging={"type": "cursor", "cursorParam": "c", "nextCursorPath": "n", "nextCursorHeader": "X-Next"}),
             "paging type cursor needs exactly one of nextCursorPath, nextCursorHeader, nextCursorItemField", "paging.nextCursorPath"),
            (definition(paging={"type": "offset", "offsetParam": "offset", "pageSize": 10}), "paging type offset needs limitParam",
             "paging.limitParam"),
            (definition(paging={"type": "page", "pageParam": "page"}), "paging type page needs pageSize", "paging.pageSize"),
            (definition(paging={"type": "none", "cursorParam": "c"}), "cursorParam does not apply to paging type none",
             "paging.cursorParam"),
            (definition(write={"update": {"method": "PATCH", "path": "/contacts"}}), "path must contain {id}",
             "write.update.path"),
            (definition(write={"delete": {"method": "DELETE", "path": "/contacts/{key}"}}), "path must contain {id}",
             "write.delete.path"),
            (definition(write={"create": {"method": "POST", "path": "/contacts/{id}"}}),
             "path may hold only the {id} placeholder, and only in update and delete requests", "write.create.path"),
            (definition(searchableFields=["email", "phone"]),
             "searchableFields must name fields of entity 'Contact'; 'phone' is not one", "searchableFields[1]"),
            (definition(path="/a/%2e%2e/admin"), "path must not contain '.' or '..' segments", "path"),
            (definition(updatedAtField=None, updatedAtFormat="unix_seconds"), "updatedAtFormat needs an updatedAtField",
             "updatedAtFormat"),
        ],
        ids=["cursor-param", "cursor-source-none", "cursor-source-two", "offset-limit", "page-size", "none-extra",
             "update-id", "delete-id", "create-id", "searchable", "dot-dot", "format-without-field"],
    )
    def test_cross_field_rule_answers_400_naming_the_field(self, client, super_admin, sync, message, field):
        body = factories.provider_body(availableEntities=entities(sync))

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message=message,
                     details={"field": f"availableEntities[0].sync.{field}"})

    @pytest.mark.parametrize("path", ["https://evil.example/x", "//evil.example/x", "contacts", "/contacts?all=1", "/a\\b"],
                             ids=["absolute", "scheme-relative", "relative", "query", "backslash"])
    def test_path_outside_api_base_url_is_refused_by_the_schema(self, client, super_admin, path):
        body = factories.provider_body(availableEntities=entities(definition(path=path)))

        response = client.post(BASE, json=body, headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR")
        assert "path" in response.json()["error"]["message"]

    def test_patch_is_checked_too(self, client, super_admin):
        created = factories.create_provider(client, super_admin)
        broken = entities(definition(write={"update": {"method": "PUT", "path": "/contacts"}}))

        response = client.patch(f"{BASE}/{created['category']}/{created['id']}", json={"availableEntities": broken},
                                headers=super_admin.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="path must contain {id}",
                     details={"field": "availableEntities[0].sync.write.update.path"})
        unchanged = client.get(f"{BASE}/{created['category']}/{created['id']}", headers=super_admin.headers).json()
        assert unchanged["availableEntities"] == created["availableEntities"]


class TestRules:
    def test_the_path_rule_holds_without_the_schema(self):
        # Seed data does not pass the request validator: the function refuses a host on its own.
        with pytest.raises(InvalidInput) as caught:
            sync_definitions.validate_entity_definitions(entities(definition(path="//evil.example/x")))
        assert caught.value.details == {"field": "availableEntities[0].sync.path"}

    def test_entities_without_sync_pass(self):
        sync_definitions.validate_entity_definitions([{"name": "Contact", "displayName": "Contacts"}])

    def test_parse_gives_the_typed_definition(self):
        parsed = sync_definitions.definitions(entities(definition()))["Contact"]

        assert parsed.paging == sync_definitions.Paging(type="cursor", cursor_param="cursor", limit_param="limit",
                                                        page_size=100, next_cursor_path="nextCursor")
        assert parsed.incremental == sync_definitions.Incremental("updated_since", "rfc3339", False)
        assert parsed.update == sync_definitions.WriteRequest("PATCH", "/contacts/{id}")
        assert (parsed.items_path, parsed.searchable_fields, parsed.updated_at_format) == ("data.items", ("email", "name"), "rfc3339")


class TestCatalog:
    def test_sandbox_entries_are_valid_provider_create_bodies(self, provider_create_validator):
        documents = bootstrap.sandbox_documents("http://127.0.0.1:8100", client_id="c", client_secret="s")
        assert {document["authType"] for document in documents} == {"oauth2", "api_key", "basic", "custom"}
        for document in documents:
            assert [error.message for error in provider_create_validator.iter_errors(document)] == []
            sync_definitions.validate_entity_definitions(document["availableEntities"])
            assert {entity["name"] for entity in document["availableEntities"] if "sync" in entity} == {"Account", "Contact"}

    def test_at_least_six_real_providers_carry_definitions_with_their_source(self):
        with_sync = {}
        for entry in bootstrap.catalog_entries():
            for entity in entry["available_entities"]:
                if "sync" in entity:
                    with_sync[(entry["provider"], entity["name"])] = entity["sync"]["source"]

        assert len({provider for provider, _ in with_sync}) >= 6
        assert all(source.startswith("https://") for source in with_sync.values())
        assert {("github", "Issue"), ("hubspot", "Contact"), ("stripe", "Customer"), ("zendesk", "Ticket")} <= set(with_sync)
