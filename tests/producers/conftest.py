"""Helpers for the producer tests: a fresh topic per test on the shared broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4


def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)
    return name


@pytest.fixture
def usage_topic(kafka_bootstrap, unique) -> str:
    """A usage topic of this test only (4 partitions), so tests never read each other's events."""
    return create_topic(kafka_bootstrap, f"keytrail.usage.v1.test-{unique}")


def java_murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner (and Faust's tables) picks for `key`."""
    m, h = 0x5BD1E995, 0x9747B28C ^ len(key)
    whole = len(key) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = key[whole:]
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list:
    """Every message on `topic` now, partition by partition in offset order (no consumer group:
    partitions are assigned directly and read up to their high watermark)."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions if ends[p] > 0])
        by_partition: dict[int, list] = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while any(len(by_partition[p]) < ends[p] for p in partitions) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    by_partition[message.partition()].append(message)
        return [m for p in partitions for m in by_partition[p]]
    finally:
        consumer.close()


def record_events(message) -> list:
    """The KeyUsageEvents one record carries: an envelope's (checked against its headers, validated
    with `UsageEnvelope.model_validate_json`) or the single event's."""
    from keytrail.schemas.envelope import COUNT_HEADER, ENVELOPE_HEADER, UsageEnvelope
    from keytrail.schemas.usage import KeyUsageEvent

    headers = dict(message.headers() or [])
    if headers.get(ENVELOPE_HEADER) != b"1":
        return [KeyUsageEvent.model_validate_json(message.value())]
    envelope = UsageEnvelope.model_validate_json(message.value())
    assert headers[COUNT_HEADER] == str(len(envelope.events)).encode(), "keytrail-count matches the events"
    assert message.key() == envelope.events[0].key_id.encode(), "an envelope is keyed by its first key_id"
    return list(envelope.events)


def topic_events(messages) -> list:
    """Every event of `messages`, in record order (each partition in offset order)."""
    return [event for message in messages for event in record_events(message)]
