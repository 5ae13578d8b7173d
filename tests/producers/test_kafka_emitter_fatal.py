"""A librdkafka producer that turns fatal (as one did in CI after a broker restart: idempotence
sequence desynchronization) must not cost events: the emitter builds a new producer and the spool
replays through it. The broker is real; only the client's fatal state is injected, by wrapping the
real producer so that, after some records, it behaves as librdkafka documents a fatal producer:
queued records come back purged, every produce() raises the fatal error, error_cb reports it."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from keytrail.producers import kafka_emitter as kafka_emitter_module
from keytrail.producers.kafka_emitter import KafkaEmitter
from tests.producers.conftest import read_topic, topic_events
from tests.producers.test_kafka_emitter import _fields, both_modes

pytestmark = pytest.mark.integration

FATAL = KafkaError(KafkaError._FATAL, "injected: sequence desynchronization with broker", fatal=True)


class TurnsFatal:
    """A real producer that becomes fatal after `after` produce() calls (the first instance only)."""

    def __init__(self, real: Any, error_cb: Any, after: int) -> None:
        self.real, self.error_cb, self.after = real, error_cb, after
        self.calls = 0
        self.fatal = False
        self.reported = False

    def produce(self, *args: Any, **kwargs: Any) -> None:
        if self.fatal:
            raise KafkaException(FATAL)
        self.calls += 1
        self.real.produce(*args, **kwargs)
        if self.calls >= self.after:
            self.fatal = True
            self.real.purge(in_queue=True, in_flight=False, blocking=False)

    def poll(self, timeout: float = 0) -> int:
        served = self.real.poll(timeout)
        if self.fatal and not self.reported:
            self.reported = True
            self.error_cb(FATAL)
        return served

    def __len__(self) -> int:
        return len(self.real)

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        return self.real.list_topics(*args, **kwargs)

    def purge(self, *args: Any, **kwargs: Any) -> None:
        self.real.purge(*args, **kwargs)

    def flush(self, *args: Any, **kwargs: Any) -> int:
        return self.real.flush(*args, **kwargs)


@both_modes
def test_a_producer_that_turns_fatal_is_replaced_and_nothing_is_lost(
    kafka_bootstrap, usage_topic, tmp_path, monkeypatch, envelopes
):
    made: list[Any] = []
    real_make = kafka_emitter_module.make_producer

    def make(config: dict[str, Any]) -> Any:
        producer = real_make(config)
        if not made:  # only the first producer breaks; its replacement is healthy
            producer = TurnsFatal(producer, config["error_cb"], after=3 if envelopes else 300)
        made.append(producer)
        return producer

    monkeypatch.setattr(kafka_emitter_module, "make_producer", make)
    emitter = KafkaEmitter(
        kafka_bootstrap, topic=usage_topic, spool_dir=tmp_path / "spool", linger_ms=5, envelopes=envelopes
    )
    try:
        for n in range(3000):
            emitter.emit(_fields(n))
        assert emitter.flush(120) == 0, f"still pending: {emitter.counters}"
        counters = emitter.counters
    finally:
        emitter.close(timeout=30)
    assert made[0].fatal, "the injected fault fired"
    assert emitter.producer_restarts == 1 and len(made) == 2
    assert (counters.emitted, counters.delivered, counters.failed, counters.dropped) == (3000, 3000, 0, 0)

    events = topic_events(read_topic(kafka_bootstrap, usage_topic))
    assert {e.request_id for e in events} == {str(n) for n in range(3000)}, "every event arrived"
    # Purged records never reached the broker here, so none is there twice.
    assert max(Counter(e.event_id for e in events).values()) == 1
    per_key = defaultdict(list)
    for event in events:
        per_key[event.key_id].append(int(event.request_id))
    assert all(order == sorted(order) for order in per_key.values()), "per-key order held"
