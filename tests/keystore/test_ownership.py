"""The write-scope rule and its owner cache (keytrail.keystore.ownership), on a real SQLite key store."""

from __future__ import annotations

from keytrail.keystore.engine import create_store_engine
from keytrail.keystore.ownership import KeyOwners, lookup_projects, scope_refusals
from keytrail.keystore.store import KeyStore


def test_the_rule_refuses_another_projects_key_and_unknown_keys_where_required():
    owners = {"key_a": "proj-a", "key_b": "proj-b"}
    events = [("key_a", "proj-a"), ("key_b", "proj-a"), ("key_new", "proj-a"), ("key_new", "strict"),
              ("unknown", "strict"), ("key_b", "proj-a")]
    refused = scope_refusals(events, owners, lambda project: project == "strict")
    assert [(r.position, r.code) for r in refused] == [
        (1, "key_not_in_project"), (3, "unknown_key"), (5, "key_not_in_project")]
    assert all("proj-b" not in r.reason for r in refused), "never says who owns the key"


def test_lookups_on_a_store_that_was_never_migrated_know_no_key(tmp_path):
    engine = create_store_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert lookup_projects(engine, ["key_x"]) == {}


def test_known_owners_are_cached_and_unknown_keys_asked_again_after_the_ttl(tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    now = [0.0]
    with KeyStore.open(url, b"ownership-test-secret-0123456789") as store:
        record, _ = store.create_key("a", "proj-a")
        owners = KeyOwners(store.projects_of, negative_ttl_seconds=30, clock=lambda: now[0])
        assert owners.owners([record.id, "key_later"]) == {record.id: "proj-a"}
        assert owners.owners([record.id, "key_later"]) == {record.id: "proj-a"}
        assert owners.lookups == 1, "a known owner and a recent miss are not asked again"
        now[0] = 31.0
        owners.owners([record.id, "key_later"])
        assert owners.lookups == 2, "the miss is asked again after the TTL, the known owner is not"
