"""The test services work: Kafka and Postgres answer, survive a restart and keep their data."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from .clickhouse import clickhouse_server_url
from .selection import KafkaService, PostgresService, kafka_service, postgres_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke_kafka() -> Iterator[KafkaService]:
    """A broker of this module's own: the tests below stop and restart it."""
    with kafka_service() as service:
        yield service


@pytest.fixture(scope="module")
def smoke_postgres() -> Iterator[PostgresService]:
    """A Postgres of this module's own: the tests below stop and restart it."""
    with postgres_service() as service:
        yield service


def produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    # Keep strings, not KafkaError objects: one freed after its Producer leaves a stray
    # TypeError set (confluent-kafka 2.16.1), which breaks the next unrelated call.
    errors: list[str | None] = []
    producer.produce(
        topic,
        key=key,
        value=value,
        on_delivery=lambda err, msg: errors.append(None if err is None else str(err)),
    )
    assert producer.flush(30) == 0, "message not delivered within 30 s"
    assert errors == [None]


def delivered_within(bootstrap: str, topic: str, seconds: float) -> bool:
    """Whether a message reaches the broker within ``seconds``."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "message.timeout.ms": int(seconds * 1000), "log_level": 0}
    )
    delivered: list[bool] = []
    producer.produce(topic, value=b"x", on_delivery=lambda err, msg: delivered.append(err is None))
    producer.flush(seconds + 5)
    return delivered == [True]


def consume_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0
) -> list[tuple[bytes | None, bytes | None]]:
    """Read ``topic`` from the beginning with a fresh group until ``expected`` messages arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"smoke-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[tuple[bytes | None, bytes | None]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            received.append((message.key(), message.value()))
    finally:
        consumer.close()
    return received


def test_kafka_round_trip_survives_a_broker_outage(smoke_kafka: KafkaService) -> None:
    topic = f"keytrail.smoke.{uuid.uuid4().hex[:8]}"
    produce(smoke_kafka.bootstrap, topic, b"key_1", b'{"hello": "kafka"}')
    assert consume_all(smoke_kafka.bootstrap, topic, expected=1) == [(b"key_1", b'{"hello": "kafka"}')]

    if not smoke_kafka.restartable:
        pytest.skip(f"Kafka from {smoke_kafka.origin} cannot be restarted by the tests")
    bootstrap = smoke_kafka.bootstrap
    smoke_kafka.stop()
    try:
        assert not delivered_within(bootstrap, topic, seconds=2), "a stopped broker accepted a message"
    finally:
        smoke_kafka.start()
    assert smoke_kafka.bootstrap == bootstrap
    assert consume_all(smoke_kafka.bootstrap, topic, expected=1) == [(b"key_1", b'{"hello": "kafka"}')]


def test_postgres_keeps_data_across_a_restart(smoke_postgres: PostgresService) -> None:
    with psycopg.connect(smoke_postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE smoke (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO smoke VALUES (1, 'kept')")
        assert conn.execute("SELECT note FROM smoke WHERE id = 1").fetchone() == ("kept",)

    if not smoke_postgres.restartable:
        pytest.skip(f"Postgres from {smoke_postgres.origin} cannot be restarted by the tests")
    smoke_postgres.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(smoke_postgres.dsn, connect_timeout=2)
    smoke_postgres.start()
    with psycopg.connect(smoke_postgres.dsn) as conn:
        assert conn.execute("SELECT note FROM smoke WHERE id = 1").fetchone() == ("kept",)


def test_postgres_creates_databases_reachable_by_url(smoke_postgres: PostgresService) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    url = smoke_postgres.create_database("keytrail_smoke")
    assert url.startswith("postgresql+psycopg://") and url.endswith("/keytrail_smoke")
    assert smoke_postgres.create_database("keytrail_smoke") == url  # idempotent
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_database()")).scalar() == "keytrail_smoke"
    finally:
        engine.dispose()


def test_clickhouse_target_says_why_when_absent() -> None:
    target = clickhouse_server_url()
    assert target.url is not None or target.reason


def test_cluster_ids_never_look_like_a_command_line_option():
    """One id in 64 used to start with '-', which `kafka-storage format` rejects."""
    from tests.infra.kafka import random_cluster_id

    ids = [random_cluster_id() for _ in range(3000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
