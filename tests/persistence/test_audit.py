"""persistence.audit: secret redaction and entries written in the caller's transaction."""

from __future__ import annotations

import copy
import uuid

import pytest
from sqlmodel import select

from persistence import audit
from persistence.db import transaction
from persistence.models import AuditEntry

pytestmark = pytest.mark.usefixtures("app")  # the app fixture configures the database engine

SECRET_KEYS = ["password", "secret", "token", "apiKey", "api_key", "credentials", "authorization",
               "Authorization", "API_KEY", "api-key", "clientSecret", "accessToken", "refresh_token", "newPassword"]


class _Rollback(Exception):
    """Raised inside a transaction to roll it back."""


def entries_for(resource_id: str) -> list[AuditEntry]:
    with transaction() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.resource_id == resource_id)).all())


def actor(**overrides) -> audit.Actor:
    fields = {"user_id": uuid.uuid4(), "role": "super_admin", "tenant_id": None, "request_id": "test-req-0001",
              "ip": "127.0.0.1"} | overrides
    return audit.Actor(**fields)


class TestRedact:
    @pytest.mark.parametrize("key", SECRET_KEYS)
    def test_replaces_secret_value_at_top_level(self, key):
        assert audit.redact({key: "hunter2", "name": "Ada"}) == {key: audit.REDACTED, "name": "Ada"}

    @pytest.mark.parametrize("key", SECRET_KEYS)
    def test_replaces_secret_value_in_nested_dicts(self, key):
        value = {"outer": {"inner": {key: "hunter2", "keep": 1}}}

        assert audit.redact(value) == {"outer": {"inner": {key: audit.REDACTED, "keep": 1}}}

    @pytest.mark.parametrize("key", SECRET_KEYS)
    def test_replaces_secret_value_in_dicts_inside_lists(self, key):
        value = {"items": [{key: "hunter2", "id": 1}, [{key: "again", "id": 2}], "plain"]}

        assert audit.redact(value) == {"items": [{key: audit.REDACTED, "id": 1}, [{key: audit.REDACTED, "id": 2}], "plain"]}

    def test_replaces_a_secret_value_that_is_itself_a_structure(self):
        value = {"credentials": {"user": "ada", "pass": "hunter2"}, "tokens": ["a", "b"]}

        assert audit.redact(value) == {"credentials": audit.REDACTED, "tokens": audit.REDACTED}

    def test_replaces_a_secret_value_whatever_its_type(self):
        value = {"password": None, "token": 12345, "secret": ["x"], "apiKey": {"k": "v"}}

        assert audit.redact(value) == {key: audit.REDACTED for key in value}

    def test_leaves_other_keys_and_values(self):
        value = {
            "name": "Acme",
            "email": "ada@example.com",
            "note": "password reset requested",  # a secret word in a value, not a key
            "count": 3,
            "enabled": True,
            "missing": None,
            "scopes": ["repo", "read:user"],
            "nested": {"category": "crm", "entities": [{"name": "Contact", "fields": [{"name": "email", "type": "string"}]}]},
        }

        assert audit.redact(value) == value

    def test_does_not_modify_its_argument(self):
        value = {"password": "hunter2", "nested": [{"token": "t"}]}
        original = copy.deepcopy(value)

        redacted = audit.redact(value)

        assert value == original
        assert redacted is not value and redacted["nested"] is not value["nested"]

    @pytest.mark.parametrize("value", [None, "token", 42, ["password", "secret"]])
    def test_values_without_keys_pass_through(self, value):
        assert audit.redact(value) == value


class TestRecord:
    def test_adds_entry_committed_with_the_callers_transaction(self):
        resource_id = str(uuid.uuid4())
        who = actor(tenant_id=uuid.uuid4(), role="tenant_admin")

        with transaction() as session:
            entry = audit.record(session, tenant_id=who.tenant_id, actor=who, action="provider.update",
                                 resource_type="provider", resource_id=uuid.UUID(resource_id),
                                 changes={"name": "New", "oauth": {"clientSecret": "s3cr3t"}})
            assert entry in session.new

        [stored] = entries_for(resource_id)
        assert (stored.tenant_id, stored.actor_id, stored.actor_role) == (who.tenant_id, who.user_id, "tenant_admin")
        assert (stored.action, stored.resource_type, stored.resource_id) == ("provider.update", "provider", resource_id)
        assert (stored.request_id, stored.ip, stored.outcome) == ("test-req-0001", "127.0.0.1", "success")
        assert stored.changes == {"name": "New", "oauth": {"clientSecret": audit.REDACTED}}
        assert stored.created_at is not None

    def test_entry_is_visible_inside_the_transaction(self):
        resource_id = str(uuid.uuid4())

        with pytest.raises(_Rollback):
            with transaction() as session:
                audit.record(session, tenant_id=None, actor=actor(), action="provider.test", resource_type="provider",
                             resource_id=resource_id, outcome="failure")
                session.flush()
                found = session.exec(select(AuditEntry).where(AuditEntry.resource_id == resource_id)).all()
                assert [(e.action, e.outcome, e.changes) for e in found] == [("provider.test", "failure", None)]
                raise _Rollback

    def test_entry_disappears_when_the_transaction_rolls_back(self):
        resource_id = str(uuid.uuid4())

        with pytest.raises(_Rollback):
            with transaction() as session:
                audit.record(session, tenant_id=None, actor=actor(), action="provider.delete", resource_type="provider",
                             resource_id=resource_id, changes={"provider": "acme"})
                session.flush()
                raise _Rollback

        assert entries_for(resource_id) == []

    def test_does_not_commit_on_its_own(self):
        resource_id = str(uuid.uuid4())

        with pytest.raises(_Rollback):
            with transaction() as session:
                audit.record(session, tenant_id=None, actor=actor(), action="provider.create", resource_type="provider",
                             resource_id=resource_id)
                assert entries_for(resource_id) == []  # another session sees nothing yet
                raise _Rollback

        assert entries_for(resource_id) == []

    def test_empty_changes_are_stored_as_null(self):
        resource_id = str(uuid.uuid4())

        with transaction() as session:
            audit.record(session, tenant_id=None, actor=actor(user_id=None, role=None, request_id=None, ip=None),
                         action="auth.login", resource_type="user", resource_id=resource_id, changes={})

        [stored] = entries_for(resource_id)
        assert (stored.changes, stored.actor_id, stored.request_id) == (None, None, None)
