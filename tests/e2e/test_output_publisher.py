"""The worker's batch publisher on a real broker: all acknowledged when deliver() returns, even across an outage."""

from __future__ import annotations

import threading

import pytest

from keytrail.stream_processors.outputs import BatchPublisher, OutputRecord
from tests.e2e.pipeline_processes import wait_until
from tests.producers.conftest import PARTITIONS, create_topic, java_murmur2_partition, read_topic

pytestmark = pytest.mark.integration


def _records(topic: str, count: int) -> list[OutputRecord]:
    return [
        OutputRecord(topic, f"key_{n % 37}".encode(), f'{{"n":{n}}}'.encode(),
                     (("keytrail-reason", f"reason {n}".encode()),) if n % 5 == 0 else ())
        for n in range(count)
    ]


def test_every_record_is_on_the_broker_keyed_and_with_headers_when_deliver_returns(kafka_bootstrap, unique):
    topic = create_topic(kafka_bootstrap, f"keytrail.outputs.test-{unique}")
    publisher = BatchPublisher(kafka_bootstrap)
    try:
        publisher.deliver(_records(topic, 5000))
    finally:
        publisher.close()
    messages = read_topic(kafka_bootstrap, topic)
    assert sorted(m.value() for m in messages) == sorted(r.value for r in _records(topic, 5000))
    for message in messages:
        assert message.partition() == java_murmur2_partition(message.key(), PARTITIONS)
        n = int(message.value()[5:-1])
        expected = [("keytrail-reason", f"reason {n}".encode())] if n % 5 == 0 else None
        assert message.headers() == expected


def test_records_refused_while_the_broker_is_down_are_sent_again_until_acknowledged(kafka_service, unique):
    if not getattr(kafka_service, "restartable", False):
        pytest.skip(f"the Kafka from {getattr(kafka_service, 'origin', '?')} cannot be stopped by the tests")
    bootstrap = kafka_service.bootstrap
    topic = create_topic(bootstrap, f"keytrail.outputs.outage-{unique}")
    publisher = BatchPublisher(bootstrap, retry_pause_s=0.2, **{"message.timeout.ms": 2000})
    records = _records(topic, 1000)
    done = threading.Event()
    try:
        kafka_service.stop()
        delivering = threading.Thread(target=lambda: (publisher.deliver(records), done.set()))
        delivering.start()
        wait_until(lambda: publisher.redelivered > 0, 60, "deliveries to fail while the broker is down")
        assert not done.is_set(), "deliver() returned while nothing could be acknowledged"
        kafka_service.start()  # in this thread: the broker's process dies with the thread that started it
        delivering.join(180)
        assert done.is_set(), "deliver() did not finish after the broker came back"
    finally:
        if not kafka_service.running:
            kafka_service.start()
        publisher.close()
    values = [m.value() for m in read_topic(bootstrap, topic)]
    assert set(values) == {r.value for r in records}, "every record arrived"
