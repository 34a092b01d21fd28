"""Operations of tag `catalog` (/api/v1/integrations...): any signed-in user."""

from __future__ import annotations

import base64
import uuid
from urllib.parse import urlsplit

import pytest

from tests import factories
from tests.assertions import ANY_TEXT, assert_error

BASE = "/api/v1/integrations"
NO_TOKEN_MESSAGE = "Authorization header missing or not a Bearer token"


def item_url(provider: dict, *, category: str | None = None) -> str:
    return f"{BASE}/{category or provider['category']}/{provider['id']}"


def listed_ids(client, account: factories.Account, **params) -> list[str]:
    response = client.get(BASE, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return [provider["id"] for provider in response.json()["providers"]]


@pytest.fixture(params=["member", "tenant_admin", "super_admin"])
def any_caller(request) -> factories.Account:
    """Each role in turn: a plain user, a tenant admin, the super admin."""
    return request.getfixturevalue(request.param)


class TestListCatalog:
    def test_lists_only_active_tenant_providers(self, client, super_admin, member):
        term = factories.unique("vis")
        listed = factories.create_provider(client, super_admin, name=f"{term} listed")
        for status, audience in (("active", "system"), ("beta", "tenant"), ("deprecated", "tenant"), ("disabled", "tenant")):
            factories.create_provider(client, super_admin, name=f"{term} {status} {audience}", status=status, audience=audience)

        response = client.get(BASE, params={"search": term}, headers=member.headers)

        assert response.status_code == 200, response.text
        assert response.json() == {"providers": [listed], "total": 1, "limit": 50, "offset": 0, "hasMore": False,
                                   "nextOffset": None, "nextCursor": None}

    def test_provider_leaves_the_catalog_when_made_system_or_inactive(self, client, super_admin, member):
        term = factories.unique("move")
        to_system = factories.create_provider(client, super_admin, name=f"{term} a")
        to_beta = factories.create_provider(client, super_admin, name=f"{term} b")
        assert listed_ids(client, member, search=term) == [to_system["id"], to_beta["id"]]

        client.patch(f"/api/v1/admin/integrations/crm/{to_system['id']}/audience", json={"audience": "system"},
                     headers=super_admin.headers).raise_for_status()
        client.patch(f"/api/v1/admin/integrations/crm/{to_beta['id']}/status", json={"status": "beta"},
                     headers=super_admin.headers).raise_for_status()

        assert listed_ids(client, member, search=term) == []

    @pytest.mark.parametrize("field", ["name", "displayName", "provider", "description"])
    def test_search_matches_each_field_case_insensitively(self, client, super_admin, member, field):
        term = factories.unique("ci")
        value = f"k_{term}" if field == "provider" else f"Text {term} text"
        match = factories.create_provider(client, super_admin, **{field: value})
        factories.create_provider(client, super_admin, name=f"{term[:-1]}")  # all but the last character: no match

        assert listed_ids(client, member, search=term.upper()) == [match["id"]]
        assert listed_ids(client, member, search=term.lower()) == [match["id"]]

    def test_search_treats_percent_literally(self, client, super_admin, member):
        term = factories.unique("pct")
        literal = factories.create_provider(client, super_admin, name=f"{term}%off")
        factories.create_provider(client, super_admin, name=f"{term}50off")

        assert listed_ids(client, member, search=f"{term}%off") == [literal["id"]]

    def test_search_treats_underscore_literally(self, client, super_admin, member):
        term = factories.unique("usc")
        literal = factories.create_provider(client, super_admin, name=f"{term}_x")
        factories.create_provider(client, super_admin, name=f"{term}ax")

        assert listed_ids(client, member, search=f"{term}_x") == [literal["id"]]

    def test_search_treats_backslash_literally(self, client, super_admin, member):
        term = factories.unique("bsl")
        literal = factories.create_provider(client, super_admin, name=f"{term}\\x")
        factories.create_provider(client, super_admin, name=f"{term}x")

        assert listed_ids(client, member, search=f"{term}\\x") == [literal["id"]]

    def test_filters_by_category(self, client, super_admin, member):
        term = factories.unique("cat")
        storage = factories.create_provider(client, super_admin, name=f"{term} s", category="storage")
        factories.create_provider(client, super_admin, name=f"{term} c", category="crm")

        assert listed_ids(client, member, search=term, category="storage") == [storage["id"]]

    def test_paginates_and_sorts(self, client, super_admin, member):
        term = factories.unique("pg")
        created = [factories.create_provider(client, super_admin, name=f"{term} {i}") for i in range(3)]

        response = client.get(BASE, params={"search": term, "limit": 2, "sortOrder": "desc"}, headers=member.headers)

        assert response.status_code == 200, response.text
        assert response.json() == {"providers": [created[2], created[1]], "total": 3, "limit": 2, "offset": 0,
                                   "hasMore": True, "nextOffset": 2, "nextCursor": ANY_TEXT}
        assert listed_ids(client, member, search=term, limit=2, offset=2, sortOrder="desc") == [created[0]["id"]]

    def test_seeded_catalog_has_at_least_15_providers(self, client, member):
        response = client.get(BASE, params={"limit": 100}, headers=member.headers)

        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] >= 15
        assert len(page["providers"]) >= 15
        assert all(p["audience"] == "tenant" and p["status"] == "active" for p in page["providers"])

    @pytest.mark.parametrize(("key", "category", "authorization_url", "token_url"), [
        ("github", "data_source", "https://github.com/login/oauth/authorize", "https://github.com/login/oauth/access_token"),
        ("slack", "communication", "https://slack.com/oauth/v2/authorize", "https://slack.com/api/oauth.v2.access"),
    ])
    def test_seeded_oauth_provider_has_real_https_urls(self, client, member, key, category, authorization_url, token_url):
        response = client.get(BASE, params={"search": key, "category": category, "limit": 100}, headers=member.headers)

        assert response.status_code == 200, response.text
        [provider] = [p for p in response.json()["providers"] if p["provider"] == key]
        assert provider["authType"] == "oauth2"
        oauth = provider["oauthConfig"]
        assert (oauth["authorizationUrl"], oauth["tokenUrl"]) == (authorization_url, token_url)
        assert all(urlsplit(url).scheme == "https" and urlsplit(url).hostname
                   for url in (oauth["authorizationUrl"], oauth["tokenUrl"]))
        assert oauth["scopes"]

    def test_every_signed_in_role_can_list(self, client, any_caller):
        response = client.get(BASE, params={"limit": 1}, headers=any_caller.headers)

        assert response.status_code == 200, response.text
        assert response.json()["limit"] == 1

    def test_without_token_is_unauthorized(self, client):
        response = client.get(BASE)

        assert_error(response, 401, "NO_TOKEN", message=NO_TOKEN_MESSAGE, details=None)

    def test_invalid_token_is_unauthorized(self, client):
        response = client.get(BASE, headers={"Authorization": "Bearer not.a.token"})

        assert_error(response, 401, "INVALID_TOKEN")

    def test_unknown_category_is_rejected(self, client, member):
        response = client.get(BASE, params={"category": "marketing"}, headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_status_filter_is_not_offered(self, client, member):
        response = client.get(BASE, params={"status": "beta"}, headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR")



SORTS = [(sort_by, sort_order) for sort_by in ("name", "displayName", "provider", "createdAt", "updatedAt")
         for sort_order in ("asc", "desc")]
NOT_OUR_CURSOR = "cursor is not a cursor this API returned"
OTHER_LISTING = ("cursor belongs to another listing: keep sortBy, sortOrder, category and search "
                 "of the page it came from")


def walk(client, account: factories.Account, **params) -> list[dict]:
    """Every page of a catalog listing: the first (offset) page, then `nextCursor` after `nextCursor`."""
    pages = [client.get(BASE, params=params, headers=account.headers)]
    while True:
        assert pages[-1].status_code == 200, pages[-1].text
        if (cursor := pages[-1].json()["nextCursor"]) is None:
            return [page.json() for page in pages]
        assert len(pages) < 500, "the walk does not end"
        pages.append(client.get(BASE, params=params | {"cursor": cursor}, headers=account.headers))


def walked_ids(pages: list[dict]) -> list[str]:
    return [provider["id"] for page in pages for provider in page["providers"]]


def offset_ids(client, account: factories.Account, path: str = BASE, **params) -> list[str]:
    """Every id of a listing, paged by offset (100 at a time)."""
    ids: list[str] = []
    while True:
        response = client.get(path, params=params | {"limit": 100, "offset": len(ids)}, headers=account.headers)
        assert response.status_code == 200, response.text
        ids += [provider["id"] for provider in response.json()["providers"]]
        if not response.json()["hasMore"]:
            return ids


def tampered(cursor: str) -> str:
    """The cursor with one byte of its payload changed, still well-formed base64url."""
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[5] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.fixture
def listed_five(client, super_admin) -> tuple[str, list[dict]]:
    """A search term and five catalog providers carrying it, ties in name and in displayName
    (broken by id), updatedAt in another order than createdAt; three unlisted ones beside them."""
    term = factories.unique("cur")
    names = [("b", "y"), ("a", "x"), ("b", "x"), ("c", "y"), ("a", "z")]
    created = [factories.create_provider(client, super_admin, name=f"{term} {name}", displayName=f"{term} {display}")
               for name, display in names]
    for status, audience in (("active", "system"), ("beta", "tenant"), ("disabled", "tenant")):
        factories.create_provider(client, super_admin, name=f"{term} a", status=status, audience=audience)
    for index in (3, 0):
        response = client.patch(f"/api/v1/admin/integrations/crm/{created[index]['id']}",
                                json={"description": "touched"}, headers=super_admin.headers)
        assert response.status_code == 200, response.text
        created[index] = response.json()
    return term, created


class TestListCatalogByCursor:
    @pytest.mark.parametrize(("sort_by", "sort_order"), SORTS)
    def test_walk_returns_each_listed_provider_once_in_order(self, client, member, listed_five, sort_by, sort_order):
        term, created = listed_five
        expected = sorted(created, key=lambda p: (p[sort_by], p["id"]), reverse=sort_order == "desc")

        pages = walk(client, member, search=term, limit=2, sortBy=sort_by, sortOrder=sort_order)

        assert [page["providers"] for page in pages] == [expected[0:2], expected[2:4], expected[4:5]]
        assert [(page["total"], page["offset"], page["hasMore"], page["nextOffset"]) for page in pages] == [
            (5, 0, True, 2), (5, 2, True, 4), (5, 4, False, None)]

    @pytest.mark.parametrize(("sort_by", "sort_order"), SORTS)
    def test_walk_of_the_whole_catalog_matches_the_offset_pages(self, client, super_admin, member, listed_five,
                                                               sort_by, sort_order):
        listed = offset_ids(client, super_admin, "/api/v1/admin/integrations", status="active", audience="tenant")

        pages = walk(client, member, limit=25, sortBy=sort_by, sortOrder=sort_order)

        ids = walked_ids(pages)
        assert ids == offset_ids(client, member, sortBy=sort_by, sortOrder=sort_order)
        assert len(ids) == len(set(ids)) == pages[0]["total"]
        assert set(ids) == set(listed)

    def test_walk_can_start_from_any_offset_page(self, client, member, listed_five):
        term, created = listed_five
        expected = sorted(created, key=lambda p: (p["name"], p["id"]))
        start = client.get(BASE, params={"search": term, "limit": 1, "offset": 2}, headers=member.headers).json()

        response = client.get(BASE, params={"search": term, "limit": 5, "cursor": start["nextCursor"]},
                              headers=member.headers)

        assert response.status_code == 200, response.text
        assert response.json() == {"providers": expected[3:], "total": 5, "limit": 5, "offset": 3, "hasMore": False,
                                   "nextOffset": None, "nextCursor": None}

    def test_walk_continues_when_the_cursor_row_leaves_the_catalog(self, client, super_admin, member, listed_five):
        term, created = listed_five
        expected = sorted(created, key=lambda p: (p["name"], p["id"]))
        first = client.get(BASE, params={"search": term, "limit": 2}, headers=member.headers).json()
        client.patch(f"/api/v1/admin/integrations/crm/{expected[1]['id']}/status", json={"status": "beta"},
                     headers=super_admin.headers).raise_for_status()

        response = client.get(BASE, params={"search": term, "limit": 2, "cursor": first["nextCursor"]},
                              headers=member.headers)

        assert response.status_code == 200, response.text
        assert response.json()["providers"] == expected[2:4]

    def test_cursor_of_the_longest_name_fits_the_contract(self, client, super_admin, member):
        term = factories.unique("long")
        name = term + "\x01" * (100 - len(term))  # escaped as \u0001 in the cursor: its longest form
        created = [factories.create_provider(client, super_admin, name=name) for _ in range(2)]

        pages = walk(client, member, search=term, limit=1)

        assert sorted(walked_ids(pages)) == sorted(p["id"] for p in created)
        assert len(pages[0]["nextCursor"]) <= 1024

    @pytest.mark.parametrize("cursor", ["not a cursor", "AAAA", "x", "eyJub3QiOiJzaWduZWQifQ", "%00%ff", "ünïcödé"])
    def test_malformed_cursor_is_rejected(self, client, member, cursor):
        response = client.get(BASE, params={"cursor": cursor}, headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message=NOT_OUR_CURSOR, details={"field": "cursor"})

    @pytest.mark.parametrize("alter", [tampered, lambda cursor: cursor[:-3], lambda cursor: cursor[3:]],
                             ids=["byte changed", "truncated", "head cut"])
    def test_altered_cursor_is_rejected(self, client, member, listed_five, alter):
        term, _ = listed_five
        cursor = client.get(BASE, params={"search": term, "limit": 2}, headers=member.headers).json()["nextCursor"]

        response = client.get(BASE, params={"search": term, "limit": 2, "cursor": alter(cursor)},
                              headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message=NOT_OUR_CURSOR, details={"field": "cursor"})

    @pytest.mark.parametrize("change", [{"sortBy": "displayName"}, {"sortOrder": "desc"}, {"search": "other"},
                                        {"category": "storage"}], ids=lambda change: next(iter(change)))
    def test_cursor_of_another_listing_is_rejected(self, client, member, listed_five, change):
        term, _ = listed_five
        params = {"search": term, "limit": 2}
        cursor = client.get(BASE, params=params, headers=member.headers).json()["nextCursor"]

        response = client.get(BASE, params=params | change | {"cursor": cursor}, headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message=OTHER_LISTING, details={"field": "cursor"})

    def test_cursor_with_offset_is_rejected(self, client, member, listed_five):
        term, _ = listed_five
        cursor = client.get(BASE, params={"search": term, "limit": 2}, headers=member.headers).json()["nextCursor"]

        response = client.get(BASE, params={"search": term, "limit": 2, "offset": 2, "cursor": cursor},
                              headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR", message="cursor and offset cannot be combined",
                     details={"field": "cursor"})

    def test_too_long_cursor_is_rejected(self, client, member):
        response = client.get(BASE, params={"cursor": "A" * 1025}, headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

class TestGetCatalogProvider:
    def test_returns_a_listed_provider(self, client, super_admin, any_caller):
        created = factories.create_provider(client, super_admin)

        response = client.get(item_url(created), headers=any_caller.headers)

        assert response.status_code == 200, response.text
        assert response.json() == created

    @pytest.mark.parametrize(("status", "audience"), [
        ("active", "system"),
        ("beta", "tenant"),
        ("deprecated", "tenant"),
        ("disabled", "tenant"),
    ])
    def test_unlisted_provider_is_not_found(self, client, super_admin, member, status, audience):
        created = factories.create_provider(client, super_admin, status=status, audience=audience)

        response = client.get(item_url(created), headers=member.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)

    def test_wrong_category_is_not_found(self, client, super_admin, member):
        created = factories.create_provider(client, super_admin, category="crm")

        response = client.get(item_url(created, category="storage"), headers=member.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {created['id']} not found", details=None)

    def test_unknown_id_is_not_found(self, client, member):
        unknown = str(uuid.uuid4())

        response = client.get(f"{BASE}/crm/{unknown}", headers=member.headers)

        assert_error(response, 404, "PROVIDER_NOT_FOUND", message=f"Provider {unknown} not found", details=None)

    def test_malformed_id_is_rejected(self, client, member):
        response = client.get(f"{BASE}/crm/12345", headers=member.headers)

        assert_error(response, 400, "VALIDATION_ERROR")

    def test_without_token_is_unauthorized(self, client, super_admin):
        created = factories.create_provider(client, super_admin)

        response = client.get(item_url(created))

        assert_error(response, 401, "NO_TOKEN", message=NO_TOKEN_MESSAGE, details=None)
