"""Signals into the alert engine: from a list (embedded) or from Kafka `keytrail.signals.v1` (production)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from pydantic import ValidationError

from keytrail.schemas.signals import Signal
from keytrail.stream_processors.alerting.engine import AlertEngine, CycleReport

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "keytrail-alerting"


def handle_signals(engine: AlertEngine, signals: Iterable[Signal]) -> CycleReport:
    """The embedded path: the signals of one EmbeddedPipeline.ingest batch (use `engine.handle_result` to
    also resolve idle alerts of keys the batch saw used)."""
    return engine.handle_signals(list(signals))


def consume_signals(
    engine: AlertEngine,
    bootstrap: str,
    *,
    group_id: str = DEFAULT_GROUP_ID,
    topic: str | None = None,
    batch_size: int = 500,
    poll_seconds: float = 0.5,
    should_stop: Callable[[], bool] = lambda: False,
    consumer_config: dict | None = None,
) -> None:
    """Consume Signal JSON until `should_stop()`; commits offsets only after the batch was handled.

    At least once: a crash before the commit hands the same signals to the next run, which folds
    them into the alerts they already opened (signal ids are remembered), so nobody is notified twice.
    """
    from confluent_kafka import Consumer

    from keytrail.schemas.topics import Topics

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **(consumer_config or {}),
        }
    )
    consumer.subscribe([topic or Topics.SIGNALS.value])
    engine.start()
    try:
        while not should_stop():
            messages = consumer.consume(num_messages=batch_size, timeout=poll_seconds)
            signals = []
            for message in messages:
                if message.error() or message.value() is None:
                    log.warning("alerting consume error: %s", message.error())
                    continue
                try:
                    signals.append(Signal.model_validate_json(message.value() or b""))
                except ValidationError as exc:
                    log.error(
                        "skipping malformed signal at %s[%s]@%s: %s",
                        message.topic(),
                        message.partition(),
                        message.offset(),
                        exc.errors()[:1],
                    )
            if signals:
                engine.handle_signals(signals)
            if messages:
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()
