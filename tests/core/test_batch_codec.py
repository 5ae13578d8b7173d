"""Bulk decoding (envelopes, JSON Lines) gives every event the verdict it gets alone.

`decode_batch` and `decode_lines` take shortcuts (one msgspec call per envelope or per 500
lines, regex checks once per distinct value); these tests hold them to the one-event decoder:
same events accepted with equal values, same events refused with the same reason, and a bad
event never costs its neighbours.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keytrail.schemas.batch_codec import RETENTION_DAYS, TOO_OLD_REASON, decode_batch, decode_lines
from keytrail.schemas.codec import InvalidEvent, decode_usage_event, encode_usage_event
from keytrail.schemas.envelope import encode_envelope
from tests.factories import usage_event

SECRET = "kt_live_" + "A" * 24 + "_abcd"

MUTATIONS: list[tuple[str, object]] = [
    ("key_id", SECRET),
    ("key_id", "bad key"),
    ("key_id", "-leading-dash"),
    ("key_id", "key\n"),
    ("project_id", "proj a"),
    ("project_id", ""),
    ("method", "get"),
    ("method", "GET\n"),
    ("client_ip", "999.1.1.1"),
    ("client_ip", "2001:DB8:0:0:0:0:0:1"),
    ("client_ip", "::ffff:10.0.0.1"),
    ("occurred_at", "2026-01-01T10:00:00"),
    ("occurred_at", "2026-01-01T10:00:00.123456+02:00"),
    ("occurred_at", "2026-01-01T10:00:00.999999Z"),
    ("occurred_at", "2999-01-01T00:00:00Z"),
    ("occurred_at", "1970-01-01T00:00:00Z"),
    ("status", 1000),
    ("status", "200"),
    ("outcome", "weird"),
    ("latency_ms", -1),
    ("request_bytes", 2**60),
    ("route", ""),
    ("user_agent", "x" * 600),
    ("unknown_field", 1),
    ("event_id", "not-a-uuid"),
    ("schema_version", 2),
]


def _line(seed: int, mutation: int | None) -> bytes:
    event = usage_event(f"key_{seed % 7}", seconds=seed, event_id=uuid.UUID(int=seed + 1, version=4))
    data = orjson.loads(encode_usage_event(event))
    if mutation is not None:
        name, value = MUTATIONS[mutation]
        data[name] = value
    return orjson.dumps(data)


def _alone(payload: bytes) -> tuple[str, object]:
    try:
        event = decode_usage_event(payload)
    except InvalidEvent as invalid:
        return ("refused", invalid.code, invalid.reason)
    if event.occurred_at < datetime.now(UTC) - timedelta(days=RETENTION_DAYS):
        return ("refused", "beyond_retention", TOO_OLD_REASON)  # the pipeline's rule, beyond the contract's
    return ("accepted", tuple(getattr(event, name) for name in _FIELDS))


_FIELDS = ("event_id", "occurred_at", "key_id", "project_id", "service", "method", "route", "status", "outcome",
           "latency_ms", "request_bytes", "response_bytes", "client_ip", "user_agent", "request_id")

lines_strategy = st.lists(
    st.tuples(st.integers(0, 10_000), st.one_of(st.none(), st.integers(0, len(MUTATIONS) - 1))),
    min_size=1, max_size=60,
)


def _verdicts_of(batch, payloads: list[bytes], index_of) -> list[tuple]:
    verdicts: list[tuple | None] = [None] * len(payloads)
    for event, position in zip(batch.events, batch.positions, strict=True):
        verdicts[index_of(position, event)] = ("accepted", tuple(getattr(event, name) for name in _FIELDS))
    for refused in batch.rejected:
        verdicts[index_of((refused.partition, refused.offset), refused)] = ("refused", refused.code, refused.reason)
    return verdicts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_strategy)
def test_json_lines_in_bulk_match_one_by_one(specs):
    payloads = [_line(seed, mutation) for seed, mutation in specs]
    batch = decode_lines(payloads, list(range(len(payloads))))
    verdicts = _verdicts_of(batch, payloads, lambda position, _item: position[1])
    assert verdicts == [_alone(p) for p in payloads]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_strategy, st.integers(1, 25))
def test_envelopes_match_one_by_one(specs, envelope_size):
    payloads = [_line(seed, mutation) for seed, mutation in specs]
    records = [(encode_envelope(payloads[i:i + envelope_size]), 3, i) for i in range(0, len(payloads), envelope_size)]
    batch = decode_batch(records)
    # An accepted event's place: its envelope's offset plus its rank among that envelope's accepted events.
    expected = [_alone(p) for p in payloads]
    accepted = [v for v in expected if v[0] == "accepted"]
    assert [("accepted", tuple(getattr(e, n) for n in _FIELDS)) for e in batch.events] == accepted
    refused = [(i, v) for i, v in enumerate(expected) if v[0] == "refused"]
    assert sorted((r.offset + r.index, ("refused", r.code, r.reason)) for r in batch.rejected) == refused
    assert all(r.partition == 3 for r in batch.rejected)
    assert all(p[0] == 3 for p in batch.positions)


def test_a_bad_event_in_an_envelope_costs_only_itself():
    good = [_line(i, None) for i in range(5)]
    bad = _line(99, 0)  # a secret as key id
    batch = decode_batch([(encode_envelope(good[:2] + [bad] + good[2:]), 0, 41)])
    assert len(batch.events) == 5 and batch.positions == [(0, 41)] * 5
    (refused,) = batch.rejected
    assert (refused.offset, refused.index, refused.code) == (41, 2, "schema_violation")
    assert SECRET not in refused.reason


def test_single_records_and_envelopes_mix():
    lines = [_line(i, None) for i in range(4)]
    batch = decode_batch([(lines[0], 0, 1), (encode_envelope(lines[1:3]), 0, 2), (lines[3], 0, 3), (b"{", 0, 4)])
    assert [str(e.event_id) for e in batch.events] == [str(uuid.UUID(int=i + 1, version=4)) for i in range(4)]
    assert batch.positions == [(0, 1), (0, 2), (0, 2), (0, 3)]
    assert [(r.offset, r.code) for r in batch.rejected] == [(4, "bad_json")]
    assert (batch.records, batch.envelopes) == (4, 1)


def test_not_an_envelope_is_refused_whole():
    batch = decode_batch([(b'{"envelope_version":1,"events":"nope"}', 2, 9)])
    assert not batch.events
    assert [(r.code, r.offset, r.index) for r in batch.rejected] == [("bad_envelope", 9, None)]


def test_times_are_normalised_like_the_model():
    moment = datetime(2026, 1, 1, 12, 0, 0, 123999, tzinfo=timezone_plus_two())
    data = orjson.loads(encode_usage_event(usage_event()))
    data["occurred_at"] = moment.isoformat()
    (event,) = decode_lines([orjson.dumps(data)], [1]).events
    assert event.occurred_at == datetime(2026, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def timezone_plus_two():
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_an_event_older_than_the_audit_trail_keeps_is_refused_with_its_reason():
    data = orjson.loads(encode_usage_event(usage_event()))
    data["occurred_at"] = "1970-01-01T00:00:00Z"
    batch = decode_lines([orjson.dumps(data), _line(1, None)], [1, 2])
    assert len(batch.events) == 1
    (refused,) = batch.rejected
    assert (refused.offset, refused.code) == (1, "beyond_retention") and "400 days" in refused.reason


def test_each_event_keeps_its_place_in_its_envelope():
    lines = [_line(i, None) for i in range(5)]
    batch = decode_batch([(lines[0], 0, 1), (encode_envelope(lines[1:4]), 0, 2), (lines[4], 0, 3)])
    assert batch.indexes == [None, 0, 1, 2, None]
    lax = decode_batch([(encode_envelope([lines[0], _line(98, 0), lines[1]]), 0, 7)])  # judged one by one
    assert lax.indexes == [0, 2] and lax.positions == [(0, 7)] * 2


def test_an_out_of_scope_event_inside_an_envelope_is_refused_with_its_place():
    """Another project's key inside an envelope: dead-lettered with the envelope's offset and its
    index (as a malformed event is), its neighbours kept with their own places."""
    from keytrail.stream_processors.write_scope import refuse_out_of_scope

    events = [usage_event("key_mine", seconds=i, event_id=uuid.UUID(int=i + 1, version=4)) for i in range(3)]
    events[1] = usage_event("key_theirs", seconds=1, event_id=uuid.UUID(int=9, version=4))
    batch = decode_batch([(encode_envelope([encode_usage_event(e) for e in events]), 2, 55)])
    (refused,) = refuse_out_of_scope(batch, {"key_mine": "proj_a", "key_theirs": "proj_other"}, lambda _p: False)
    assert (refused.partition, refused.offset, refused.index) == (2, 55, 1)
    assert [e.key_id for e in batch.events] == ["key_mine", "key_mine"] and batch.indexes == [0, 2]
