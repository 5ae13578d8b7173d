"""What a hole in the worker's commit holds, asked of a real broker: messages or only markers."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from keytrail.stream_processors.faust_commit import offsets_holding_messages, read_offset_range
from tests.e2e.pipeline_processes import wait_until
from tests.producers.conftest import create_topic

pytestmark = pytest.mark.integration


def high_watermark(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keytrail-test-watermark"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_real_messages_are_found_and_transaction_markers_are_not(kafka_bootstrap, unique):
    topic = create_topic(kafka_bootstrap, f"keytrail.test-holes-{unique}", partitions=1)
    plain = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(3):
        plain.produce(topic, value=f"plain-{n}".encode(), partition=0)  # offsets 0, 1, 2
    assert plain.flush(30) == 0
    transactional = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"holes-{unique}"})
    transactional.init_transactions(30)
    transactional.begin_transaction()
    for n in range(2):
        transactional.produce(topic, value=f"tx-{n}".encode(), partition=0)  # offsets 3, 4
    transactional.commit_transaction(30)  # its commit marker takes offset 5, written just after
    wait_until(lambda: high_watermark(kafka_bootstrap, topic) == 6, 30, "the transaction marker")
    plain.produce(topic, value=b"after", partition=0)  # offset 6
    assert plain.flush(30) == 0

    assert offsets_holding_messages(kafka_bootstrap, topic, 0, 0, 7) == {0, 1, 2, 3, 4, 6}
    assert offsets_holding_messages(kafka_bootstrap, topic, 0, 5, 6) == set(), "the marker holds no message"
    assert offsets_holding_messages(kafka_bootstrap, topic, 0, 2, 4) == {2, 3}
    assert read_offset_range(kafka_bootstrap, topic, 0, 2, 7) == [(2, b"plain-2"), (3, b"tx-0"), (4, b"tx-1"),
                                                                 (6, b"after")]
