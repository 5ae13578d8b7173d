"""KafkaEmitter's envelopes on a real broker: exactly the emitted events come back, grouped by
partition, within the count, size and linger limits, with every guarantee kept per event."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from keytrail.producers.kafka_emitter import KafkaEmitter
from keytrail.schemas.envelope import COUNT_HEADER, ENVELOPE_HEADER, UsageEnvelope
from keytrail.schemas.partitioning import partition_for
from tests.e2e.pipeline_processes import wait_until
from tests.factories import usage_event
from tests.infra.ports import free_port
from tests.producers.conftest import PARTITIONS, read_topic, topic_events

pytestmark = pytest.mark.integration

KEYS = [f"key_env{n}" for n in range(23)]


def _fields(n: int, key_id: str | None = None) -> dict:
    return {
        "key_id": key_id or KEYS[n % len(KEYS)],
        "project_id": "proj_env",
        "service": "orders",
        "method": "GET",
        "route": "/v1/orders/{order_id}",
        "status": 200,
        "outcome": "ok",
        "latency_ms": 2.5,
        "client_ip": "10.0.0.9",
        "request_id": str(n),
    }


def test_decoding_the_records_gives_back_exactly_the_emitted_events(kafka_bootstrap, usage_topic, tmp_path):
    emitted = [
        usage_event(KEYS[n % len(KEYS)], seconds=n, event_id=uuid.uuid4(), request_id=f"req-{n}")
        for n in range(3000)
    ]
    with KafkaEmitter(kafka_bootstrap, topic=usage_topic, spool_dir=tmp_path / "spool") as emitter:
        for event in emitted:
            emitter.emit(event)
        assert emitter.flush(30) == 0
        counters = emitter.counters
    assert (counters.emitted, counters.delivered, counters.spooled) == (3000, 3000, 0)
    messages = read_topic(kafka_bootstrap, usage_topic)
    received = []
    for message in messages:
        headers = dict(message.headers())
        assert headers[ENVELOPE_HEADER] == b"1"
        envelope = UsageEnvelope.model_validate_json(message.value())
        assert headers[COUNT_HEADER] == str(len(envelope.events)).encode()
        assert message.key() == envelope.events[0].key_id.encode()
        assert {partition_for(e.key_id, PARTITIONS) for e in envelope.events} == {message.partition()}
        received += envelope.events
    assert sorted(received, key=lambda e: e.request_id) == sorted(emitted, key=lambda e: e.request_id)
    for key in KEYS:  # and each key's events in the order they were emitted
        assert [e for e in received if e.key_id == key] == [e for e in emitted if e.key_id == key]


def test_envelopes_close_at_the_event_count_and_linger_holds_the_rest_until_flush(
    kafka_bootstrap, usage_topic, tmp_path
):
    with KafkaEmitter(
        kafka_bootstrap, topic=usage_topic, spool_dir=tmp_path / "spool", linger_ms=600_000
    ) as emitter:
        for n in range(1200):
            emitter.emit(_fields(n, key_id="key_one"))
        wait_until(lambda: emitter.counters.delivered == 1000, 30, "the two full envelopes")
        assert emitter.records == (2, 1000)
        assert emitter.pending() == 200, "the open envelope lingers (10 minutes here)"
        assert emitter.flush(30) == 0, "flush sends the open envelope at once"
        assert emitter.records == (3, 1200)
    counts = [
        len(UsageEnvelope.model_validate_json(m.value()).events)
        for m in read_topic(kafka_bootstrap, usage_topic)
    ]
    assert counts == [500, 500, 200]


def test_a_short_linger_delivers_without_flush(kafka_bootstrap, usage_topic, tmp_path):
    with KafkaEmitter(
        kafka_bootstrap, topic=usage_topic, spool_dir=tmp_path / "spool", linger_ms=20
    ) as emitter:
        for n in range(40):
            emitter.emit(_fields(n))
        wait_until(lambda: emitter.counters.delivered == 40, 30, "linger to send the open envelopes")
        records, events = emitter.records
    assert events == 40 and records <= 40


def test_no_envelope_passes_the_size_limit(kafka_bootstrap, usage_topic, tmp_path):
    limit = 4096
    with KafkaEmitter(
        kafka_bootstrap, topic=usage_topic, spool_dir=tmp_path / "spool", envelope_bytes=limit
    ) as emitter:
        for n in range(2000):
            emitter.emit({**_fields(n), "user_agent": "agent/" + "z" * (n % 300)})
        assert emitter.flush(30) == 0
    messages = read_topic(kafka_bootstrap, usage_topic)
    assert all(len(m.value()) <= limit for m in messages)
    assert max(int(dict(m.headers())[COUNT_HEADER]) for m in messages) > 1
    assert sorted(int(e.request_id) for e in topic_events(messages)) == list(range(2000))


def test_a_spool_left_by_an_earlier_process_is_replayed_once_as_envelopes(
    kafka_bootstrap, usage_topic, tmp_path
):
    spool_dir = tmp_path / "spool"
    down = KafkaEmitter(f"127.0.0.1:{free_port()}", topic=usage_topic, spool_dir=spool_dir)
    wait_until(lambda: down.spooling, 60, "the emitter to find no broker")
    for n in range(1500):
        down.emit(_fields(n))
    down.close(timeout=0)
    assert down.counters.spooled == 1500 and down.counters.dropped == 0

    with KafkaEmitter(kafka_bootstrap, topic=usage_topic, spool_dir=spool_dir) as successor:
        assert successor.pending() == 1500, "the inherited spool counts as pending"
        assert successor.flush(60) == 0
        assert successor.counters.replayed == 1500
    messages = read_topic(kafka_bootstrap, usage_topic)
    assert all(dict(m.headers())[ENVELOPE_HEADER] == b"1" for m in messages)
    assert len(messages) <= 1500 // 100
    seen = Counter(e.request_id for e in topic_events(messages))
    assert set(seen) == {str(n) for n in range(1500)} and max(seen.values()) == 1


def _small_topic(bootstrap: str, name: str, max_message_bytes: int) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"max.message.bytes": str(max_message_bytes)}
    for future in admin.create_topics([NewTopic(name, 2, 1, config=config)]).values():
        future.result(30)
    return name


def test_envelopes_too_large_for_the_topic_are_halved_until_they_fit_and_nothing_is_lost(
    kafka_bootstrap, unique, tmp_path
):
    topic = _small_topic(kafka_bootstrap, f"keytrail.usage.v1.small-{unique}", 3000)
    with KafkaEmitter(
        kafka_bootstrap,
        topic=topic,
        spool_dir=tmp_path / "spool",
        compression="none",
        producer_overrides={"batch.size": 2500},  # the broker's limit is per record batch
    ) as emitter:
        for n in range(400):
            emitter.emit(_fields(n, key_id="key_big"))
        assert emitter.flush(60) == 0
        counters = emitter.counters
    assert (counters.delivered, counters.failed, counters.dropped) == (400, 0, 0)
    messages = read_topic(kafka_bootstrap, topic)
    # A replay batch whose envelopes were partly too large is sent again whole: at least once,
    # and the pipeline deduplicates by event_id.
    assert {int(e.request_id) for e in topic_events(messages)} == set(range(400))
    assert all(len(m.value()) < 3000 for m in messages)


def test_events_too_large_even_alone_are_counted_as_failed_one_by_one(
    kafka_bootstrap, unique, tmp_path, caplog
):
    topic = _small_topic(kafka_bootstrap, f"keytrail.usage.v1.tiny-{unique}", 200)
    with KafkaEmitter(
        kafka_bootstrap, topic=topic, spool_dir=tmp_path / "spool", compression="none"
    ) as emitter:
        for n in range(40):
            emitter.emit(_fields(n, key_id="key_big"))
        assert emitter.flush(90) == 0
        counters = emitter.counters
    assert (counters.delivered, counters.failed, counters.dropped) == (0, 40, 0)
    assert counters.emitted == counters.delivered + counters.failed + counters.dropped
    assert "refused" in caplog.text and "too large" in caplog.text


def test_envelopes_librdkafka_refuses_as_too_large_are_halved_too(kafka_bootstrap, usage_topic, tmp_path):
    with KafkaEmitter(
        kafka_bootstrap,
        topic=usage_topic,
        spool_dir=tmp_path / "spool",
        compression="none",
        producer_overrides={"message.max.bytes": 5000, "batch.size": 4000},
    ) as emitter:
        for n in range(300):
            emitter.emit(_fields(n, key_id="key_big"))
        assert emitter.flush(60) == 0
        counters = emitter.counters
    assert (counters.delivered, counters.failed, counters.dropped) == (300, 0, 0)
    messages = read_topic(kafka_bootstrap, usage_topic)
    assert {int(e.request_id) for e in topic_events(messages)} == set(range(300))
    assert all(len(m.value()) <= 5000 for m in messages)
