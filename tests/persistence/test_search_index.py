"""The search index follows the records store, and one query syntax finds the same records on both databases.

Records are written with `persistence.records.upsert` / `tombstone_unseen` (every data path
writes through them); integrations and providers are made through the API.
Also home of the seeding helpers the search handler tests share.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlmodel import select

from persistence import records, search_index, search_query
from persistence.db import engine, transaction
from persistence.errors import Conflict, InvalidInput, NotFound
from persistence.models import SearchDocument
from persistence.records import Item
from tests import factories

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def note_entity(name: str = "Note", *, title: str = "title", searchable: tuple[str, ...] = ("title", "body")) -> dict:
    """An `availableEntities` item with a sync definition whose title and searchable fields are given."""
    fields = [{"name": field, "type": "string"} for field in dict.fromkeys([title, *searchable, "owner"])]
    return {"name": name, "displayName": f"{name}s", "fields": fields,
            "sync": {"path": f"/{name.lower()}s", "itemsPath": "data", "idField": "id", "titleField": title,
                     "searchableFields": list(searchable), "paging": {"type": "none"}}}


def search_provider(client, super_admin, **overrides) -> dict:
    """A catalog provider with two indexable entities: Note (title + body) and Deal (name + stage)."""
    entities = [note_entity(), note_entity("Deal", title="name", searchable=("name", "stage")),
                note_entity("Memo")]
    return factories.create_provider(client, super_admin, availableEntities=entities,
                                     searchableEntities=["Note", "Deal"], **overrides)


def searchable_integration(client, admin, provider: dict, **overrides) -> dict:
    """Enable `provider` for `admin`'s tenant with search on for Note and Deal."""
    body = {"searchEnabled": True, "searchableEntities": ["Note", "Deal"]} | overrides
    return factories.enable_integration(client, admin, provider["id"], **body)


def put(integration: dict, entity: str, *items: tuple, owner_key: str = "tenant",
        user_id: str | None = None, deleted: bool = False, updated_at: datetime | None = None) -> records.Changes:
    """Store `(external id, data)` or `(external id, data, provider updated at)` items as a sync page would."""
    with transaction() as session:
        return records.upsert(
            session, tenant_id=uuid.UUID(integration["tenantId"]), integration_id=uuid.UUID(integration["id"]),
            owner_key=owner_key, user_id=uuid.UUID(user_id) if user_id else None, entity=entity,
            items=[Item(item[0], item[1], item[2] if len(item) > 2 else updated_at, deleted) for item in items], now=NOW)


def find(integration: dict, text: str, *, every_owner: bool = True, owner_key: str | None = None,
         integrations: list[dict] | None = None, **filters) -> search_index.Found:
    """Search as a tenant admin (or, with every_owner False, as the user `owner_key`)."""
    ids = [uuid.UUID(item["id"]) for item in (integrations or [integration])]
    with transaction() as session:
        scope = search_index.scope(session, tenant_id=uuid.UUID(integration["tenantId"]), integration_ids=ids,
                                   every_owner=every_owner, owner_key=owner_key)
        return search_index.search(session, tenant_id=uuid.UUID(integration["tenantId"]), within=scope.searchable,
                                   query=search_query.parse(text), **filters)


def ids(found: search_index.Found) -> list[str]:
    return [hit.record.external_id for hit in found.hits]


def documents(integration: dict) -> list[SearchDocument]:
    with transaction() as session:
        return list(session.exec(select(SearchDocument).where(
            SearchDocument.integration_id == uuid.UUID(integration["id"]))).all())


@pytest.fixture
def provider(client, super_admin) -> dict:
    return search_provider(client, super_admin)


@pytest.fixture
def notes(client, tenant_admin, provider) -> dict:
    """An integration with search on and five notes and two deals."""
    integration = searchable_integration(client, tenant_admin, provider)
    put(integration, "Note",
        ("n1", {"id": "n1", "title": "Quarterly report", "body": "Numbers for the board"}),
        ("n2", {"id": "n2", "title": "Meeting minutes", "body": "The quarterly numbers were discussed"}),
        ("n3", {"id": "n3", "title": "Acme Labs visit", "body": "Met the Globex people there"}),
        ("n4", {"id": "n4", "title": "Labs of Acme", "body": "A different order of words"}),
        ("n5", {"id": "n5", "title": "Émile's notes", "body": "Café <b>Acme</b> & co, jane@initech.example.com"}))
    put(integration, "Deal", ("d1", {"id": "d1", "name": "Acme renewal", "stage": "won"}),
        ("d2", {"id": "d2", "name": "Initech expansion", "stage": "lost"}))
    return integration


class TestQueryLanguage:
    def test_words_phrases_or_exclusions_and_prefixes_render_for_both_engines(self):
        query = search_query.parse('acme "Labs visit" globex OR initech -umbrella quart*')

        assert query.fts5() == '("acme" AND "labs visit" AND ("globex" OR "initech") AND "quart"*) NOT "umbrella"'
        assert query.tsquery() == "'acme' & ( 'labs' <-> 'visit' ) & ('globex' | 'initech') & 'quart':* & !( 'umbrella' )"

    def test_punctuation_splits_words_as_the_index_does(self):
        query = search_query.parse("Jane@Acme.com Émile")

        assert query.fts5() == '"jane acme com" AND "emile"'

    @pytest.mark.parametrize("text,message", [
        ("", "query: enter at least one word to search for"),
        ("   ", "query: enter at least one word to search for"),
        ('"acme', 'query: a quoted phrase is not closed (unbalanced ")'),
        ("or acme", "query: `or` needs a term on each side"),
        ("acme or", "query: `or` needs a term on each side"),
        ("acme or or globex", "query: `or` needs a term on each side"),
        ("acme or -globex", "query: `or` cannot join an excluded term"),
        ("-acme", "query: enter at least one word to search for (exclusions alone find nothing)"),
        ("!!! ... *", "query: enter at least one word to search for (exclusions alone find nothing)"),
        ("a*", "query: a prefix needs at least 2 characters before *"),
        (" ".join(["w"] * 17), "query: at most 16 terms"),
        ('"' + " ".join(["w"] * 9) + '"', "query: a phrase has at most 8 words"),
        ("x" * 257, "query: at most 256 characters"),
    ])
    def test_bad_syntax_is_invalid_input(self, text, message):
        with pytest.raises(InvalidInput) as raised:
            search_query.parse(text)

        assert (raised.value.message, raised.value.details) == (message, {"field": "query"})

    @hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=st.one_of(st.text(max_size=60), st.lists(st.sampled_from(
        list('ab Éz9_-*"().:|&!\'\\<>@\t') + [" or ", " OR ", "NOT", "NEAR", "AND", "^", "{", ":*", "<->"]),
        max_size=20).map("".join)))
    def test_any_input_parses_or_is_refused_and_runs_on_the_database(self, app, text):
        """Fuzz: parse either raises InvalidInput or yields a query both engines accept (no database error)."""
        try:
            query = search_query.parse(text)
        except InvalidInput:
            return
        with engine().connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT to_tsvector('simple', 'a b') @@ to_tsquery('simple', :q)"),
                             {"q": query.tsquery()})
            else:
                conn.execute(sa.text("SELECT count(*) FROM search_fts WHERE search_fts MATCH :q"), {"q": query.fts5()})


class TestRanking:
    def test_a_title_match_ranks_above_a_body_match(self, notes):
        found = find(notes, "quarterly")

        assert ids(found) == ["n1", "n2"]
        assert found.hits[0].score > found.hits[1].score > 0

    def test_a_phrase_needs_the_words_in_order(self, notes):
        assert sorted(ids(find(notes, "acme labs"))) == ["n3", "n4"]
        assert ids(find(notes, '"acme labs"')) == ["n3"]

    def test_an_excluded_word_removes_its_records(self, notes):
        assert sorted(ids(find(notes, "acme"))) == ["d1", "n3", "n4", "n5"]
        assert sorted(ids(find(notes, "acme -globex"))) == ["d1", "n4", "n5"]
        assert sorted(ids(find(notes, 'acme -"labs visit"'))) == ["d1", "n4", "n5"]

    def test_or_finds_either_side(self, notes):
        assert sorted(ids(find(notes, "globex or initech"))) == ["d2", "n3", "n5"]

    def test_a_prefix_matches_the_words_it_starts(self, notes):
        assert sorted(ids(find(notes, "quart*"))) == ["n1", "n2"]
        assert ids(find(notes, "quart")) == []

    def test_accents_case_and_punctuation_do_not_matter(self, notes):
        assert ids(find(notes, "EMILE")) == ["n5"]
        assert ids(find(notes, "cafe")) == ["n5"]
        assert ids(find(notes, "jane@initech.example.com")) == ["n5"]
        assert ids(find(notes, "initech example")) == ["n5"]


class TestSnippets:
    def test_matched_words_are_marked_and_the_rest_is_escaped(self, notes):
        hit = find(notes, "acme -labs -renewal").hits[0]

        assert hit.record.external_id == "n5"
        assert hit.snippet == "Café &lt;b&gt;<mark>Acme</mark>&lt;/b&gt; &amp; co, jane@initech.example.com"
        assert hit.title == "Émile's notes"

    def test_a_title_match_is_shown_from_the_title(self, notes):
        assert find(notes, "quarterly").hits[0].snippet == "<mark>Quarterly</mark> report"

    def test_a_phrase_is_marked_as_one_span(self, notes):
        assert find(notes, '"acme labs"').hits[0].snippet == "<mark>Acme Labs</mark> visit"
        assert find(notes, 'acme labs -globex').hits[0].snippet == "<mark>Labs</mark> of <mark>Acme</mark>"

    def test_a_word_inside_an_address_is_marked(self, notes):
        hit = find(notes, "initech -expansion").hits[0]

        assert hit.snippet == "Café &lt;b&gt;Acme&lt;/b&gt; &amp; co, jane@<mark>initech</mark>.example.com"

    def test_a_long_text_is_cut_around_the_match(self, client, tenant_admin, provider):
        integration = searchable_integration(client, tenant_admin, provider)
        words = [f"w{index}" for index in range(100)]
        put(integration, "Note", ("long", {"title": "Long", "body": " ".join(words[:50] + ["needle"] + words[50:])}))

        snippet = find(integration, "needle").hits[0].snippet

        assert "<mark>needle</mark>" in snippet and snippet.startswith("…") and snippet.endswith("…")
        assert len(snippet.split()) <= search_index.SNIPPET_WORDS + 1


class TestCountsAndPaging:
    def test_counts_group_every_match_by_integration_and_entity(self, client, tenant_admin, provider, notes):
        second = searchable_integration(client, tenant_admin, provider)
        put(second, "Deal", ("x1", {"name": "Acme upsell", "stage": "open"}))

        found = find(notes, "acme", integrations=[notes, second])

        assert found.total == 5
        assert found.by_integration == {notes["id"]: 4, second["id"]: 1}
        assert found.by_entity == {"Note": 3, "Deal": 2}
        assert found.has_more is False

    def test_limit_applies_per_integration_and_offset_skips_the_best(self, client, tenant_admin, provider, notes):
        second = searchable_integration(client, tenant_admin, provider)
        put(second, "Deal", ("x1", {"name": "Acme upsell", "stage": "open"}), ("x2", {"name": "Acme again"}))

        first_page = find(notes, "acme", integrations=[notes, second], limit=1)
        second_page = find(notes, "acme", integrations=[notes, second], limit=1, offset=1)
        last_page = find(notes, "acme", integrations=[notes, second], limit=2, offset=2)

        assert sorted(hit.source.integration.id.hex for hit in first_page.hits) == sorted(
            [uuid.UUID(notes["id"]).hex, uuid.UUID(second["id"]).hex])
        assert first_page.has_more and second_page.has_more and not last_page.has_more
        assert [hit.record.external_id for hit in last_page.hits] == ids(find(notes, "acme", offset=2, limit=2))
        seen = ids(first_page) + ids(second_page) + ids(last_page)
        assert sorted(seen) == ["d1", "n3", "n4", "n5", "x1", "x2"]

    def test_filters_narrow_by_entity_time_and_field_values(self, client, tenant_admin, provider):
        integration = searchable_integration(client, tenant_admin, provider)
        early, late = datetime(2025, 1, 1, tzinfo=timezone.utc), datetime(2025, 6, 1, tzinfo=timezone.utc)
        put(integration, "Deal", ("a", {"name": "Acme one", "stage": "won", "amount": 5, "closed": True}),
            updated_at=early)
        put(integration, "Deal", ("b", {"name": "Acme two", "stage": "lost", "amount": "5", "closed": False}),
            updated_at=late)
        put(integration, "Note", ("c", {"title": "Acme note", "body": "", "meta": {"region": "eu"}}), updated_at=late)

        assert ids(find(integration, "acme", entities={"Note"})) == ["c"]
        assert sorted(ids(find(integration, "acme", modified_from=late))) == ["b", "c"]
        assert ids(find(integration, "acme", modified_until=early + timedelta(days=1))) == ["a"]
        assert ids(find(integration, "acme", custom={"stage": "won"})) == ["a"]
        assert ids(find(integration, "acme", custom={"amount": 5})) == ["a"]
        assert ids(find(integration, "acme", custom={"amount": "5"})) == ["b"]
        assert ids(find(integration, "acme", custom={"closed": False})) == ["b"]
        assert ids(find(integration, "acme", custom={"meta.region": "eu"})) == ["c"]
        assert ids(find(integration, "acme", custom={"meta.region": "us"})) == []


class TestIndexFollowsTheRecords:
    def test_an_updated_record_is_found_by_its_new_words_only(self, notes):
        put(notes, "Note", ("n1", {"id": "n1", "title": "Annual report", "body": "Numbers for the board"}))

        assert ids(find(notes, "quarterly")) == ["n2"]
        assert ids(find(notes, "annual")) == ["n1"]

    def test_a_deleted_record_disappears(self, notes):
        put(notes, "Note", ("n1", {}), deleted=True)

        assert ids(find(notes, "quarterly")) == ["n2"]
        assert len(documents(notes)) == 6

    def test_records_unseen_by_a_full_refresh_disappear_and_come_back_when_seen_again(self, notes):
        run_id = uuid.uuid4()
        with transaction() as session:
            records.upsert(session, tenant_id=uuid.UUID(notes["tenantId"]), integration_id=uuid.UUID(notes["id"]),
                           owner_key="tenant", user_id=None, entity="Note",
                           items=[Item("n2", {"id": "n2", "title": "Meeting minutes",
                                              "body": "The quarterly numbers were discussed"})],
                           now=NOW, seen_run_id=run_id)
            changes = records.tombstone_unseen(session, tenant_id=uuid.UUID(notes["tenantId"]),
                                               integration_id=uuid.UUID(notes["id"]), owner_key="tenant",
                                               entity="Note", run_id=run_id, now=NOW)
        assert len(changes.deleted) == 4
        assert ids(find(notes, "quarterly")) == ["n2"]
        assert ids(find(notes, "acme")) == ["d1"]

        put(notes, "Note", ("n1", {"id": "n1", "title": "Quarterly report again", "body": ""}))

        assert sorted(ids(find(notes, "quarterly"))) == ["n1", "n2"]

    def test_an_index_write_that_fails_rolls_back_the_record_too(self, notes):
        tenant_id, integration_id = uuid.UUID(notes["tenantId"]), uuid.UUID(notes["id"])
        with pytest.raises(RuntimeError), transaction() as session:
            records.upsert(session, tenant_id=tenant_id, integration_id=integration_id, owner_key="tenant",
                           user_id=None, entity="Note", items=[Item("n9", {"title": "Rolled back"})], now=NOW)
            assert ids_in(session, notes, "rolled") == ["n9"]  # findable inside the writer's transaction
            raise RuntimeError("the sync page failed")

        assert ids(find(notes, "rolled")) == []
        with transaction() as session:
            assert records.find(session, tenant_id=tenant_id, integration_id=integration_id, owner_key="tenant",
                                entity="Note", external_id="n9") is None

    def test_entities_outside_searchable_entities_are_not_indexed(self, notes):
        put(notes, "Memo", ("m1", {"title": "Acme memo", "body": ""}))

        assert "m1" not in ids(find(notes, "acme"))
        assert {row.entity for row in documents(notes)} == {"Note", "Deal"}

    def test_a_record_without_text_has_no_document(self, notes):
        put(notes, "Note", ("empty", {"title": None, "body": True}))

        assert "empty" not in {str(row.record_id) for row in documents(notes)}
        assert len(documents(notes)) == 7


class TestSearchSettings:
    def test_switching_search_on_indexes_the_stored_records_and_off_drops_them(self, client, tenant_admin, provider):
        integration = searchable_integration(client, tenant_admin, provider, searchEnabled=False)
        put(integration, "Note", ("n1", {"title": "Acme kickoff", "body": ""}))
        assert documents(integration) == []

        changed = client.patch(f"/api/v1/tenant/integrations/{integration['id']}", json={"searchEnabled": True},
                               headers=tenant_admin.headers)
        assert changed.status_code == 200, changed.text
        assert ids(find(integration, "acme")) == ["n1"]

        narrowed = client.patch(f"/api/v1/tenant/integrations/{integration['id']}",
                                json={"searchableEntities": ["Deal"]}, headers=tenant_admin.headers)
        assert narrowed.status_code == 200
        assert documents(integration) == []

        off = client.patch(f"/api/v1/tenant/integrations/{integration['id']}",
                           json={"searchEnabled": False, "searchableEntities": ["Note"]}, headers=tenant_admin.headers)
        assert off.status_code == 200
        assert documents(integration) == []

    def test_empty_searchable_entities_take_the_providers(self, client, tenant_admin, provider):
        integration = searchable_integration(client, tenant_admin, provider, searchableEntities=[])
        put(integration, "Deal", ("d1", {"name": "Acme deal"}))
        put(integration, "Memo", ("m1", {"title": "Acme memo"}))

        assert ids(find(integration, "acme")) == ["d1"]

    def test_deleting_the_integration_drops_its_documents(self, client, tenant_admin, notes):
        response = client.delete(f"/api/v1/tenant/integrations/{notes['id']}", headers=tenant_admin.headers)

        assert response.status_code in (200, 204), response.text
        assert documents(notes) == []


class TestWhoSeesWhat:
    def test_another_tenants_integration_is_not_searched(self, client, other_tenant_admin, provider, notes):
        other = searchable_integration(client, other_tenant_admin, provider)
        put(other, "Note", ("o1", {"title": "Acme secret", "body": ""}))

        with transaction() as session:
            scope = search_index.scope(session, tenant_id=uuid.UUID(notes["tenantId"]),
                                       integration_ids=[uuid.UUID(other["id"]), uuid.UUID(notes["id"])],
                                       every_owner=True, owner_key=None)
        assert [item.integration.id for item in scope.searchable] == [uuid.UUID(notes["id"])]
        assert scope.not_indexed == [{"integrationId": other["id"], "reason": "not_found"}]

    def test_a_user_sees_only_their_own_records_of_user_scoped_integrations(self, client, tenant_admin, provider,
                                                                            notes):
        scoped = searchable_integration(client, tenant_admin, provider, userScoped=True)
        me, someone = str(uuid.uuid4()), str(uuid.uuid4())
        put(scoped, "Note", ("mine", {"title": "Acme mine"}), owner_key=me, user_id=me)
        put(scoped, "Note", ("theirs", {"title": "Acme theirs"}), owner_key=someone, user_id=someone)

        as_user = find(notes, "acme", every_owner=False, owner_key=me, integrations=[notes, scoped])
        as_admin = find(notes, "acme", integrations=[notes, scoped])
        as_admin_for_me = find(notes, "acme", owner_key=me, integrations=[notes, scoped])

        assert ids(as_user) == ["mine"] and as_user.by_integration == {scoped["id"]: 1}
        assert sorted(ids(as_admin)) == ["d1", "mine", "n3", "n4", "n5", "theirs"]
        assert sorted(ids(as_admin_for_me)) == ["d1", "mine", "n3", "n4", "n5"]

    def test_one_integration_out_of_reach_or_switched_off(self, client, tenant_admin, provider, notes):
        off = searchable_integration(client, tenant_admin, provider, searchEnabled=False)
        tenant_id = uuid.UUID(notes["tenantId"])
        with transaction() as session:
            with pytest.raises(Conflict):
                search_index.one(session, tenant_id=tenant_id, integration_id=uuid.UUID(off["id"]),
                                 every_owner=True, owner_key=None)
            with pytest.raises(NotFound):  # a plain user reaches user-scoped integrations only
                search_index.one(session, tenant_id=tenant_id, integration_id=uuid.UUID(notes["id"]),
                                 every_owner=False, owner_key=str(uuid.uuid4()))
            with pytest.raises(NotFound):
                search_index.one(session, tenant_id=uuid.uuid4(), integration_id=uuid.UUID(notes["id"]),
                                 every_owner=True, owner_key=None)


class TestEngineObjects:
    def test_the_objects_left_out_of_the_model_comparison_exist(self, app):
        with engine().connect() as conn:
            inspector = sa.inspect(conn)
            if conn.dialect.name == "postgresql":
                columns = {column["name"] for column in inspector.get_columns("search_documents")}
                indexes = {index["name"] for index in inspector.get_indexes("search_documents")}
                assert "search_vector" in columns and "ix_search_documents_vector" in indexes
            else:
                tables = set(inspector.get_table_names())
                assert {"search_fts", "search_fts_data", "search_fts_idx", "search_fts_docsize",
                        "search_fts_config"} <= tables
                excluded = {name for name in tables if not search_index.in_models(name, "table", {})}
                assert excluded == {"search_fts", "search_fts_data", "search_fts_idx", "search_fts_docsize",
                                    "search_fts_config"}


def ids_in(session, integration: dict, text: str) -> list[str]:
    scope = search_index.scope(session, tenant_id=uuid.UUID(integration["tenantId"]),
                               integration_ids=[uuid.UUID(integration["id"])], every_owner=True, owner_key=None)
    found = search_index.search(session, tenant_id=uuid.UUID(integration["tenantId"]), within=scope.searchable,
                                query=search_query.parse(text))
    return [hit.record.external_id for hit in found.hits]
