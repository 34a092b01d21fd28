"""Reading provider answers with a sync definition: items, next page per paging type, changed-since values.

Built on real httpx.Response objects as the providers' documentation shows them; the walks over
real HTTP are in tests/connectors/sandbox/test_sandbox_peer.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from connectors.sync_definitions import (
    DefinitionMismatch,
    PageRequest,
    extract_items,
    first_request,
    incremental_value,
    is_deleted,
    item_id,
    next_request,
    parse_updated_at,
)
from persistence import bootstrap
from persistence.sync_definitions import Incremental, definitions

CATALOG = {entry["provider"]: definitions(entry["available_entities"]) for entry in bootstrap.catalog_entries()}
MOMENT = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=timezone.utc)


def answer(body=None, *, headers=None, url="https://api.example/x") -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers, request=httpx.Request("GET", url))


class TestIncrementalValue:
    def test_rfc3339_is_utc_with_z_to_the_second(self):
        moment = MOMENT.astimezone(timezone(timedelta(hours=2)))
        assert incremental_value(Incremental("since", "rfc3339"), moment) == "2025-03-04T05:06:07Z"

    def test_unix_seconds_round_down(self):
        assert incremental_value(Incremental("start_time", "unix_seconds"), MOMENT) == str(int(MOMENT.timestamp()))

    def test_naive_datetime_is_refused(self):
        with pytest.raises(ValueError):
            incremental_value(Incremental("since", "rfc3339"), datetime(2025, 1, 1))


class TestFirstRequest:
    def test_github_issues_since_and_page_size(self):
        request = first_request(CATALOG["github"]["Issue"], "https://api.github.com", since=MOMENT)
        assert request == PageRequest("https://api.github.com/issues",
                                      {"filter": "all", "state": "all", "per_page": "100", "since": "2025-03-04T05:06:07Z"})

    def test_zendesk_required_start_time_is_the_epoch_on_a_full_refresh(self):
        request = first_request(CATALOG["zendesk"]["Ticket"], "https://acme.zendesk.com/api/v2")
        assert request == PageRequest("https://acme.zendesk.com/api/v2/incremental/tickets/cursor.json",
                                      {"per_page": "1000", "start_time": "0"})

    def test_offset_starts_at_zero(self):
        assert first_request(CATALOG["pipedrive"]["Person"], "https://api.pipedrive.com/v1/").params == {"limit": "100", "start": "0"}


class TestExtractItems:
    def test_dotted_path(self):
        assert extract_items(CATALOG["hubspot"]["Contact"], {"results": [{"id": "1"}]}) == [{"id": "1"}]

    def test_top_level_array(self):
        assert extract_items(CATALOG["github"]["Issue"], [{"id": 1}, {"id": 2}]) == [{"id": 1}, {"id": 2}]

    def test_null_is_an_empty_page(self):
        assert extract_items(CATALOG["pipedrive"]["Person"], {"success": True, "data": None}) == []

    @pytest.mark.parametrize("body", [{"other": []}, {"data": {"id": 1}}, {"data": [1, 2]}], ids=["absent", "object", "scalars"])
    def test_wrong_shape_is_a_mismatch(self, body):
        with pytest.raises(DefinitionMismatch):
            extract_items(CATALOG["stripe"]["Customer"], body)


class TestNextRequest:
    def test_hubspot_cursor_in_the_body(self):
        definition = CATALOG["hubspot"]["Contact"]
        request = first_request(definition, "https://api.hubapi.com")
        response = answer({"results": [{"id": "1"}], "paging": {"next": {"after": "NTI1Cg"}}})
        assert next_request(definition, request, response, [{"id": "1"}]).params["after"] == "NTI1Cg"
        assert next_request(definition, request, answer({"results": [{"id": "1"}]}), [{"id": "1"}]) is None

    def test_stripe_last_item_id_until_has_more_is_false(self):
        definition = CATALOG["stripe"]["Customer"]
        request = first_request(definition, "https://api.stripe.com/v1")
        items = [{"id": "cus_1"}, {"id": "cus_2"}]
        following = next_request(definition, request, answer({"data": items, "has_more": True}), items)
        assert following.params == {"limit": "100", "starting_after": "cus_2"}
        assert next_request(definition, request, answer({"data": items, "has_more": False}), items) is None

    def test_zendesk_drops_start_time_for_the_cursor_and_stops_at_end_of_stream(self):
        definition = CATALOG["zendesk"]["Ticket"]
        request = first_request(definition, "https://acme.zendesk.com/api/v2", since=MOMENT)
        items = [{"id": 1}]
        following = next_request(definition, request, answer({"tickets": items, "after_cursor": "abc", "end_of_stream": False}), items)
        assert following.params == {"per_page": "1000", "cursor": "abc"}
        assert next_request(definition, request, answer({"tickets": items, "after_cursor": "abc", "end_of_stream": True}), items) is None

    def test_slack_empty_next_cursor_ends(self):
        definition = CATALOG["slack"]["User"]
        request = first_request(definition, "https://slack.com/api")
        items = [{"id": "U1"}]
        assert next_request(definition, request, answer({"members": items, "response_metadata": {"next_cursor": ""}}), items) is None

    def test_pipedrive_offset_advances_while_more_items(self):
        definition = CATALOG["pipedrive"]["Person"]
        request = first_request(definition, "https://api.pipedrive.com/v1")
        items = [{"id": 1}, {"id": 2}]
        more = {"data": items, "additional_data": {"pagination": {"more_items_in_collection": True}}}
        assert next_request(definition, request, answer(more), items).params == {"limit": "100", "start": "2"}
        done = {"data": items, "additional_data": {"pagination": {"more_items_in_collection": False}}}
        assert next_request(definition, request, answer(done), items) is None

    def test_github_link_header_is_followed_and_must_stay_on_origin(self):
        definition = CATALOG["github"]["Issue"]
        request = first_request(definition, "https://api.github.com")
        items = [{"id": 1}]
        link = {"Link": '<https://api.github.com/issues?page=2&per_page=100>; rel="next", <https://api.github.com/issues?page=9>; rel="last"'}
        assert next_request(definition, request, answer(items, headers=link), items) == PageRequest(
            "https://api.github.com/issues", {"page": "2", "per_page": "100"})
        assert next_request(definition, request, answer(items), items) is None
        foreign = {"Link": '<https://evil.example/issues?page=2>; rel="next"'}
        with pytest.raises(DefinitionMismatch):
            next_request(definition, request, answer(items, headers=foreign), items)

    def test_empty_page_ends_every_walk(self):
        definition = CATALOG["hubspot"]["Contact"]
        request = first_request(definition, "https://api.hubapi.com")
        assert next_request(definition, request, answer({"results": [], "paging": {"next": {"after": "x"}}}), []) is None


class TestItemFields:
    def test_updated_at_formats_deleted_flag_and_id(self):
        intercom, hubspot = CATALOG["intercom"]["Contact"], CATALOG["hubspot"]["Contact"]
        assert parse_updated_at(intercom, {"updated_at": 1741064767}) == datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
        assert parse_updated_at(hubspot, {"updatedAt": "2025-03-04T05:06:07.123Z"}) == datetime(2025, 3, 4, 5, 6, 7, 123000,
                                                                                               tzinfo=timezone.utc)
        assert parse_updated_at(CATALOG["stripe"]["Customer"], {"created": 1}) is None
        assert (is_deleted(hubspot, {"archived": True}), is_deleted(hubspot, {"archived": False}), is_deleted(hubspot, {})) == (True, False, False)
        assert item_id(CATALOG["zendesk"]["Ticket"], {"id": 42}) == "42"
        with pytest.raises(DefinitionMismatch):
            parse_updated_at(hubspot, {"updatedAt": "2025-03-04 05:06:07"})
        with pytest.raises(DefinitionMismatch):
            item_id(hubspot, {"name": "no id"})
