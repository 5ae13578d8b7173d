"""EnvelopePacker: events grouped per partition (partition_for), within count, size and linger limits."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keytrail.producers.encoding import UsageEncoder
from keytrail.producers.envelopes import EnvelopePacker, pack
from keytrail.schemas.envelope import COUNT_HEADER, ENVELOPE_HEADER, MAX_ENVELOPE_BYTES, UsageEnvelope
from keytrail.schemas.partitioning import partition_for
from keytrail.schemas.usage import KeyUsageEvent
from tests.producers.conftest import java_murmur2_partition

ENCODER = UsageEncoder()
KEYS = [f"key_pack{n}" for n in range(40)]


def encoded(n: int, key_id: str | None = None, user_agent: str = "pack-test/1.0") -> tuple[bytes, bytes]:
    return ENCODER.encode(
        {
            "key_id": key_id or KEYS[n % len(KEYS)],
            "project_id": "proj_pack",
            "service": "orders",
            "method": "GET",
            "route": "/v1/orders/{order_id}",
            "status": 200,
            "outcome": "ok",
            "latency_ms": 1.5,
            "client_ip": "10.0.0.1",
            "user_agent": user_agent,
            "request_id": f"r{n}",
        }
    )


def test_every_event_of_an_envelope_is_on_the_envelopes_partition_the_java_client_would_pick():
    records = [encoded(n) for n in range(2000)]
    envelopes = pack(records, 8, max_events=100)
    assert sum(e.count for e in envelopes) == 2000
    for envelope in envelopes:
        for key, _ in envelope.events:
            assert partition_for(key.decode(), 8) == envelope.partition
            assert java_murmur2_partition(key, 8) == envelope.partition
        assert envelope.key == envelope.events[0][0]


def test_decoding_an_envelope_gives_back_exactly_its_events_in_order():
    records = [encoded(n) for n in range(300)]
    for envelope in pack(records, 4):
        decoded = UsageEnvelope.model_validate_json(envelope.value)
        assert decoded.events == [KeyUsageEvent.model_validate_json(value) for _, value in envelope.events]
        assert [e.model_dump_json().encode() for e in decoded.events] == [v for _, v in envelope.events]
        assert dict(envelope.headers) == {ENVELOPE_HEADER: b"1", COUNT_HEADER: str(envelope.count).encode()}


def test_an_envelope_closes_at_max_events():
    packer = EnvelopePacker(1, max_events=10, linger=100.0)
    closed = packer.add([encoded(n) for n in range(25)], now=0.0)
    assert [e.count for e in closed] == [10, 10]
    assert len(packer) == 5
    assert [e.count for e in packer.close_all()] == [5]
    assert len(packer) == 0


def test_an_envelope_never_passes_max_bytes():
    records = [encoded(n, user_agent="x" * (n % 400)) for n in range(3000)]
    limit = 8 * 1024
    envelopes = pack(records, 3, max_bytes=limit)
    assert all(len(e.value) <= limit for e in envelopes)
    assert sum(e.count for e in envelopes) == 3000
    # and it is not wasteful: adding the next event of the partition would have passed the limit
    by_partition: dict[int, list] = {}
    for envelope in envelopes:
        by_partition.setdefault(envelope.partition, []).append(envelope)
    for run in by_partition.values():
        for envelope, following in zip(run, run[1:], strict=False):
            assert len(envelope.value) + 1 + len(following.events[0][1]) > limit


def test_the_default_limit_is_512_kib_before_compression():
    big = [encoded(n, key_id="key_one", user_agent="y" * 500) for n in range(2000)]
    envelopes = pack(big, 4)
    assert max(len(e.value) for e in envelopes) <= MAX_ENVELOPE_BYTES
    assert all(e.count <= 500 for e in envelopes)


def test_linger_closes_an_envelope_once_its_first_event_has_waited_long_enough():
    packer = EnvelopePacker(2, max_events=500, linger=0.05)
    first = [encoded(n, key_id="key_a") for n in range(3)]
    assert packer.add(first, now=10.0) == []
    assert packer.due(10.049) == [], "not before linger has passed"
    later = [encoded(n, key_id="key_a") for n in range(3, 5)]
    assert packer.add(later, now=10.04) == []
    (envelope,) = packer.due(10.05)
    assert envelope.events == first + later, "one envelope, in emission order"
    assert packer.due(1_000.0) == [], "nothing left open"
    # the next envelope's linger counts from its own first event
    assert packer.add([encoded(9, key_id="key_a")], now=20.0) == []
    assert packer.due(20.01) == [] and len(packer.due(20.05)) == 1


def test_linger_is_per_partition():
    a, b = "key_a", next(k for k in KEYS if partition_for(k, 2) != partition_for("key_a", 2))
    packer = EnvelopePacker(2, linger=1.0)
    packer.add([encoded(0, key_id=a)], now=0.0)
    packer.add([encoded(1, key_id=b)], now=0.5)
    (only_a,) = packer.due(1.0)
    assert only_a.key == a.encode()
    (only_b,) = packer.due(1.5)
    assert only_b.key == b.encode()


def test_a_new_partition_count_closes_what_was_grouped_under_the_old_one():
    packer = EnvelopePacker(4, linger=10.0)
    packer.add([encoded(n) for n in range(50)], now=0.0)
    closed = packer.set_partitions(8)
    assert sum(e.count for e in closed) == 50 and len(packer) == 0
    assert packer.set_partitions(8) == []
    packer.add([encoded(n) for n in range(50)], now=0.0)
    assert all(partition_for(k.decode(), 8) == e.partition for e in packer.close_all() for k, _ in e.events)


def test_take_events_hands_back_every_buffered_event_in_per_key_order():
    packer = EnvelopePacker(4, linger=10.0)
    records = [encoded(n) for n in range(120)]
    packer.add(records, now=0.0)
    taken = packer.take_events()
    assert sorted(taken) == sorted(records) and len(packer) == 0
    for key in KEYS:
        assert [r for r in taken if r[0] == key.encode()] == [r for r in records if r[0] == key.encode()]


def test_limits_are_checked():
    with pytest.raises(ValueError):
        EnvelopePacker(4, max_events=501)
    with pytest.raises(ValueError):
        EnvelopePacker(4, max_bytes=MAX_ENVELOPE_BYTES + 1)
    with pytest.raises(ValueError):
        EnvelopePacker(0)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.sampled_from(KEYS[:12]), min_size=1, max_size=400),
    partitions=st.integers(1, 12),
    max_events=st.integers(1, 60),
    max_bytes=st.integers(600, 20_000),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_any_stream_any_limits_each_key_keeps_its_events_in_order_and_none_is_lost(
    keys, partitions, max_events, max_bytes, cuts
):
    records = [encoded(n, key_id=key) for n, key in enumerate(keys)]
    packer = EnvelopePacker(partitions, max_events=max_events, max_bytes=max_bytes, linger=1.0)
    out = []
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    for step, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        out += packer.add(records[start:end], now=float(step))
        out += packer.due(float(step))
    out += packer.close_all()
    assert sum(e.count for e in out) == len(records)
    for envelope in out:
        assert 1 <= envelope.count <= max_events
        assert envelope.count == 1 or len(envelope.value) <= max_bytes
        assert {partition_for(k.decode(), partitions) for k, _ in envelope.events} == {envelope.partition}
        assert orjson.loads(envelope.value)["envelope_version"] == 1
    delivered = [record for envelope in out for record in envelope.events]
    for key in set(keys):
        mine = [r for r in records if r[0] == key.encode()]
        assert [r for r in delivered if r[0] == key.encode()] == mine
