"""apply_last_used(): the projector's write path; monotonic, idempotent, batched."""

from datetime import timedelta

from keytrail.schemas.last_used import LastUsed


def last_used(key_id, project, at, ip="203.0.113.1", event_id="e"):
    return LastUsed(
        key_id=key_id,
        project_id=project,
        last_used_at=at,
        last_used_ip=ip,
        route="/v1/x",
        service="api",
        event_id=event_id,
    )


def test_the_newest_record_per_key_in_a_batch_wins(store, clock, project):
    first, _ = store.create_key("a", project)
    second, _ = store.create_key("b", project)
    t = clock.now
    batch = [
        last_used(first.id, project, t - timedelta(seconds=5), "198.51.100.1", "e1"),
        last_used(first.id, project, t, "198.51.100.2", "e2"),
        last_used(first.id, project, t - timedelta(seconds=1), "198.51.100.3", "e3"),
        last_used(second.id, project, t, "198.51.100.4", "e4"),
    ]
    assert store.apply_last_used(batch) == 2
    assert (store.get(first.id).last_used_at, store.get(first.id).last_used_ip) == (t, "198.51.100.2")
    assert store.get(second.id).last_used_ip == "198.51.100.4"


def test_applying_the_same_batch_again_changes_nothing(store, clock, project):
    record, _ = store.create_key("a", project)
    batch = [last_used(record.id, project, clock.now)]
    assert store.apply_last_used(batch) == 1
    assert store.apply_last_used(batch) == 0
    assert store.get(record.id).last_used_at == clock.now


def test_an_older_late_record_never_moves_last_used_back(store, clock, project):
    record, _ = store.create_key("a", project)
    newest = clock.now
    store.apply_last_used([last_used(record.id, project, newest, "198.51.100.9")])
    assert (
        store.apply_last_used([last_used(record.id, project, newest - timedelta(hours=1), "198.51.100.1")])
        == 0
    )
    stored = store.get(record.id)
    assert (stored.last_used_at, stored.last_used_ip) == (newest, "198.51.100.9")
    assert store.apply_last_used([last_used(record.id, project, newest + timedelta(milliseconds=1))]) == 1


def test_records_for_unknown_keys_or_the_wrong_project_are_ignored(store, clock, project):
    record, _ = store.create_key("a", project)
    batch = [last_used("key_unknown", project, clock.now), last_used(record.id, "someone-else", clock.now)]
    assert store.apply_last_used(batch) == 0
    assert store.get(record.id).last_used_at is None


def test_an_empty_batch_changes_nothing(store):
    assert store.apply_last_used([]) == 0


def test_last_used_does_not_emit_lifecycle_events(store, clock, sink, project):
    record, _ = store.create_key("a", project)
    before = len(sink.events)
    store.apply_last_used([last_used(record.id, project, clock.now)])
    assert len(sink.events) == before


def test_a_large_batch_is_applied_in_one_call(store, clock, project):
    records = [store.create_key(f"k{index}", project)[0] for index in range(50)]
    batch = [
        last_used(record.id, project, clock.now + timedelta(seconds=index))
        for index, record in enumerate(records)
    ]
    assert store.apply_last_used(batch) == 50
    assert store.get(records[-1].id).last_used_at == clock.now + timedelta(seconds=49)


def test_reset_then_replay_rebuilds_the_same_last_used(store, clock, project):
    record, _ = store.create_key("a", project)
    batch = [last_used(record.id, project, clock.now, "198.51.100.7")]
    store.apply_last_used(batch)
    before = store.get(record.id)
    assert store.reset_last_used() == 1
    assert store.get(record.id).last_used_at is None
    assert store.apply_last_used(batch) == 1
    assert store.get(record.id) == before
