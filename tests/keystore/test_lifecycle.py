"""The whole key lifecycle, on SQLite and on real PostgreSQL."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from keytrail.keystore import (
    InvalidKeyRequest,
    KeyAlreadyRotated,
    KeyFilter,
    KeyNotFound,
    KeySort,
    KeyStateConflict,
)
from keytrail.keystore.key_format import parse_key
from keytrail.keystore.tables import api_keys, key_lifecycle_events
from keytrail.schemas.keys import KeyStatus
from keytrail.schemas.last_used import LastUsed
from keytrail.schemas.lifecycle import LifecycleAction
from keytrail.schemas.usage import Outcome


def stored_text(store) -> str:
    """Everything the database holds about keys and their events, as one string."""
    with store.engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(select(api_keys))]
        rows += [dict(row._mapping) for row in connection.execute(select(key_lifecycle_events))]
    return json.dumps(rows, default=str)


def test_lifecycle_create_verify_rotate_grace_revoke(store, clock, sink, project):
    record, secret = store.create_key("billing worker", project, owner="team-pay", scopes=["orders:read"])
    random_part = parse_key(secret).random

    # shown once: the database, the records and the events hold only hash, prefix and hint
    assert random_part not in stored_text(store)
    listed = store.list_keys(KeyFilter(project_id=project))
    assert [key.id for key in listed] == [record.id]
    assert listed[0].masked == f"kt_live_…{secret[-4:]}"
    assert random_part not in listed[0].model_dump_json()
    assert all(random_part not in event.model_dump_json() for event in sink.events)
    assert listed[0].last_used_at is None

    assert store.verify(secret, scope="orders:read").outcome is Outcome.OK

    rotation = store.rotate(record.id, grace="1h", actor="alice")
    assert rotation.successor.rotated_from == record.id
    assert rotation.previous.grace_until == clock.now + timedelta(hours=1)
    assert rotation.successor.scopes == ["orders:read"] and rotation.successor.owner == "team-pay"
    assert rotation.secret != secret

    clock.advance(minutes=59)
    assert store.verify(secret, scope="orders:read").outcome is Outcome.OK
    assert store.verify(rotation.secret, scope="orders:read").outcome is Outcome.OK

    clock.advance(minutes=2)
    old_after_grace = store.verify(secret)
    assert old_after_grace.outcome is Outcome.REVOKED and old_after_grace.key_id == record.id
    assert store.verify(rotation.secret).outcome is Outcome.OK
    report = store.sweep()
    assert report.grace_ended == [record.id]
    assert store.get(record.id).status is KeyStatus.REVOKED

    store.revoke(rotation.successor.id, actor="alice", reason="leaked in a log")
    assert store.verify(rotation.secret).outcome is Outcome.REVOKED

    actions = [(event.key_id, event.action) for event in sink.events]
    assert actions == [
        (record.id, LifecycleAction.CREATED),
        (record.id, LifecycleAction.ROTATED),
        (rotation.successor.id, LifecycleAction.CREATED),
        (record.id, LifecycleAction.REVOKED),
        (rotation.successor.id, LifecycleAction.REVOKED),
    ]
    revoke_event = sink.events[-1]
    assert revoke_event.actor == "alice" and revoke_event.reason == "leaked in a log"
    assert revoke_event.before["status"] == "active" and revoke_event.after["status"] == "revoked"


def test_expiry_sweep_marks_expired_keeps_the_key_and_renew_brings_it_back(store, clock, sink, project):
    record, secret = store.create_key("nightly export", project, expires_in="7d")
    assert record.expires_at == clock.now + timedelta(days=7)

    clock.advance(days=7)
    assert store.verify(secret).outcome is Outcome.EXPIRED  # before any sweep
    report = store.sweep()
    assert report.expired == [record.id]
    assert store.sweep().changed == 0  # a second sweep finds nothing left to do
    expired = store.get(record.id)
    assert expired.status is KeyStatus.EXPIRED
    assert [
        key.id for key in store.list_keys(KeyFilter(project_id=project, statuses=(KeyStatus.EXPIRED,)))
    ] == [record.id]

    renewed = store.renew(record.id, by="90d")
    assert renewed.status is KeyStatus.ACTIVE
    assert renewed.expires_at == clock.now + timedelta(days=90)
    assert store.verify(secret).outcome is Outcome.OK
    assert [event.action for event in sink.events][-2:] == [LifecycleAction.EXPIRED, LifecycleAction.RENEWED]


def test_renew_extends_from_the_current_expiry_when_it_is_still_ahead(store, clock, project):
    record, _ = store.create_key("k", project, expires_in="30d")
    assert store.renew(record.id, by="30d").expires_at == record.expires_at + timedelta(days=30)


def test_renew_expiring_renews_only_active_keys_expiring_within_the_window(store, clock, project):
    soon, _ = store.create_key("soon", project, expires_in="7d")
    later, _ = store.create_key("later", project, expires_in="90d")
    never, _ = store.create_key("never", project, expires_in="never")
    disabled, _ = store.create_key("disabled", project, expires_in="1d")
    store.disable(disabled.id)

    renewed = store.renew_expiring(14, by="30d", project_id=project)

    assert [key.id for key in renewed] == [soon.id]
    assert store.get(soon.id).expires_at == soon.expires_at + timedelta(days=30)
    assert store.get(later.id).expires_at == later.expires_at
    assert store.get(never.id).expires_at is None


def test_disable_and_enable(store, project, sink):
    record, secret = store.create_key("k", project)
    store.disable(record.id, reason="investigating")
    assert store.verify(secret).outcome is Outcome.DISABLED
    with pytest.raises(KeyStateConflict):
        store.disable(record.id)
    store.enable(record.id)
    assert store.verify(secret).outcome is Outcome.OK
    assert [event.action for event in sink.events][-2:] == [LifecycleAction.DISABLED, LifecycleAction.ENABLED]


def test_a_revoked_key_cannot_be_enabled_renewed_rotated_or_updated(store, project):
    record, _ = store.create_key("k", project, expires_in="30d")
    store.revoke(record.id)
    for action in (
        lambda: store.enable(record.id),
        lambda: store.renew(record.id),
        lambda: store.rotate(record.id),
        lambda: store.update_key(record.id, name="again"),
        lambda: store.revoke(record.id),
    ):
        with pytest.raises(KeyStateConflict):
            action()


def test_an_expired_key_is_renewed_not_enabled(store, clock, project):
    record, _ = store.create_key("k", project, expires_in="1h")
    clock.advance(hours=2)
    store.sweep()
    with pytest.raises(KeyStateConflict, match="renew"):
        store.enable(record.id)


def test_update_changes_only_the_given_fields_and_records_before_and_after(store, sink, project):
    record, secret = store.create_key("k", project, scopes=["a"], quota=100, ip_allowlist=["10.0.0.0/8"])
    updated = store.update_key(record.id, name="renamed", scopes=["a", "b"], quota=None, actor="bob")
    assert updated.name == "renamed"
    assert updated.scopes == ["a", "b"]
    assert updated.quota is None
    assert updated.ip_allowlist == ["10.0.0.0/8"]
    event = sink.events[-1]
    assert event.action is LifecycleAction.UPDATED and event.actor == "bob"
    assert event.before["name"] == "k" and event.after["name"] == "renamed"
    assert store.verify(secret, scope="b", client_ip="10.1.2.3").outcome is Outcome.OK


def test_update_can_set_and_clear_the_expiry(store, clock, project):
    record, secret = store.create_key("k", project)
    until = datetime(2026, 6, 30, tzinfo=UTC)
    assert store.update_key(record.id, expires_at=until).expires_at == until
    assert store.update_key(record.id, expires_at=None).expires_at is None


def test_update_with_nothing_to_change_is_refused(store, project):
    record, _ = store.create_key("k", project)
    with pytest.raises(InvalidKeyRequest):
        store.update_key(record.id)


def test_rotating_twice_is_refused_and_names_the_successor(store, project):
    record, _ = store.create_key("k", project)
    rotation = store.rotate(record.id)
    with pytest.raises(KeyAlreadyRotated) as refused:
        store.rotate(record.id)
    assert refused.value.successor_id == rotation.successor.id
    assert store.rotate(rotation.successor.id).successor.rotated_from == rotation.successor.id


def test_a_key_past_its_expiry_cannot_be_rotated_even_before_the_sweep(store, clock, project):
    record, _ = store.create_key("k", project, expires_in="1h")
    clock.advance(hours=2)
    with pytest.raises(KeyStateConflict, match="renew it first"):
        store.rotate(record.id)
    assert store.list_keys(KeyFilter(project_id=project)) == [store.get(record.id)]  # no successor


def test_rotation_without_grace_revokes_the_old_key_at_once(store, project):
    record, secret = store.create_key("k", project)
    rotation = store.rotate(record.id, grace="0")
    assert rotation.previous.status is KeyStatus.REVOKED
    assert store.verify(secret).outcome is Outcome.REVOKED
    assert store.verify(rotation.secret).outcome is Outcome.OK


def test_rotation_keeps_the_expiry_unless_a_new_one_is_given(store, clock, project):
    record, _ = store.create_key("k", project, expires_in="30d")
    assert store.rotate(record.id).successor.expires_at == record.expires_at
    other, _ = store.create_key("k2", project, expires_in="30d")
    assert store.rotate(other.id, expires_in="90d").successor.expires_at == clock.now + timedelta(days=90)


def test_purge_deletes_only_revoked_or_expired_keys_and_keeps_their_history(store, sink, project):
    record, _ = store.create_key("k", project)
    with pytest.raises(KeyStateConflict, match="revoke it first"):
        store.purge(record.id)
    store.revoke(record.id)
    store.purge(record.id, actor="carol")
    with pytest.raises(KeyNotFound):
        store.get(record.id)
    history = store.lifecycle_events(record.id)
    assert [event.action for event in history] == [
        LifecycleAction.CREATED,
        LifecycleAction.REVOKED,
        LifecycleAction.PURGED,
    ]
    assert sink.events[-1].before["id"] == record.id and sink.events[-1].after is None


def test_expiry_presets_and_custom_dates(store, clock, project):
    for preset, lifetime in [
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("365d", timedelta(days=365)),
    ]:
        record, _ = store.create_key(preset, project, expires_in=preset)
        assert record.expires_at == clock.now + lifetime
    assert store.create_key("n", project, expires_in="never")[0].expires_at is None
    custom, _ = store.create_key("custom", project, expires_in="2026-12-31")
    assert custom.expires_at == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(InvalidKeyRequest, match="preset"):
        store.create_key("bad", project, expires_in="2w")
    with pytest.raises(InvalidKeyRequest, match="past"):
        store.create_key("past", project, expires_at=clock.now - timedelta(days=1))


def test_invalid_fields_are_refused_with_a_hint(store, project):
    with pytest.raises(InvalidKeyRequest, match="CIDR"):
        store.create_key("k", project, ip_allowlist=["10.0.0.300/8"])
    with pytest.raises(InvalidKeyRequest, match="scope"):
        store.create_key("k", project, scopes=["has space"])
    with pytest.raises(InvalidKeyRequest, match="name"):
        store.create_key("  ", project)
    with pytest.raises(InvalidKeyRequest, match="quota"):
        store.create_key("k", project, quota=-1)


def test_list_filters_and_sorts(store, clock, project):
    used, _ = store.create_key("b-used", project, expires_in="90d")
    clock.advance(minutes=1)
    idle, _ = store.create_key("a-idle", project, expires_in="1d")
    clock.advance(minutes=1)
    never, _ = store.create_key("c-never", project)
    store.apply_last_used(
        [
            LastUsed(
                key_id=used.id,
                project_id=project,
                last_used_at=clock.now,
                last_used_ip="203.0.113.9",
                route="/v1/orders",
                service="orders",
                event_id="e1",
            ),
            LastUsed(
                key_id=idle.id,
                project_id=project,
                last_used_at=clock.now - timedelta(days=40),
                last_used_ip="203.0.113.10",
                route="/v1/orders",
                service="orders",
                event_id="e2",
            ),
        ]
    )

    def ids(**filters):
        return [key.id for key in store.list_keys(KeyFilter(project_id=project, **filters))]

    assert ids() == [never.id, idle.id, used.id]  # newest first
    assert ids(sort=KeySort.NAME, descending=False) == [idle.id, used.id, never.id]
    assert ids(never_used=True) == [never.id]
    assert ids(idle_days=30) == [idle.id]
    assert ids(expiring_within_days=7) == [idle.id]
    assert ids(sort=KeySort.EXPIRES, descending=False) == [idle.id, used.id, never.id]  # never expires: last
    assert ids(sort=KeySort.LAST_USED) == [used.id, idle.id, never.id]  # never used: last
    assert ids(limit=2, offset=1) == [idle.id, used.id]
    store.revoke(never.id)
    assert ids(statuses=(KeyStatus.REVOKED,)) == [never.id]


def test_get_of_an_unknown_key_raises_key_not_found(store):
    with pytest.raises(KeyNotFound) as missing:
        store.get("key_doesnotexist")
    assert missing.value.code == "key_not_found"


def test_keys_carry_the_configured_env(open_store, sqlite_url, project):
    store = open_store(sqlite_url, env="test")
    record, secret = store.create_key("k", project)
    assert secret.startswith("kt_test_") and record.display_prefix == "kt_test_"
    with pytest.raises(ValueError, match="KEYTRAIL_KEY_ENV"):
        open_store(sqlite_url, env="Prod!")
