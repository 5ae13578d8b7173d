"""The Kafka lifecycle sink publishes to keytrail.keys.v1, keyed by key_id, on a real broker."""

import uuid

import pytest

from keytrail.keystore import KafkaLifecycleSink, KeyStore
from keytrail.schemas.lifecycle import KeyLifecycleEvent, LifecycleAction
from tests.keystore.conftest import SECRET


@pytest.mark.integration
def test_lifecycle_events_reach_kafka_keyed_by_key_id(kafka_bootstrap, sqlite_url, project):
    from confluent_kafka import Consumer

    topic = f"keytrail.keys.v1.test-{uuid.uuid4().hex[:8]}"
    sink = KafkaLifecycleSink(kafka_bootstrap, topic=topic, delivery_timeout_seconds=30)
    with KeyStore.open(sqlite_url, SECRET, lifecycle_sink=sink) as store:
        record, _ = store.create_key("k", project)
        store.revoke(record.id, actor="erin")
        assert store.publish_pending_events() == 0  # both were acknowledged by the broker
    sink.close()

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received = []
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                received.append(message)
            if len(received) == 2:
                break
    finally:
        consumer.close()
    assert [message.key() for message in received] == [record.id.encode()] * 2
    events = [KeyLifecycleEvent.model_validate_json(message.value()) for message in received]
    assert [event.action for event in events] == [LifecycleAction.CREATED, LifecycleAction.REVOKED]
    assert events[1].actor == "erin"
