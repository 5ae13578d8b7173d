"""Where key lifecycle events go: one small protocol, one class per transport."""

import logging
import threading
from typing import Any, Protocol, runtime_checkable

from keytrail.schemas.lifecycle import KeyLifecycleEvent
from keytrail.schemas.topics import Topics

log = logging.getLogger(__name__)


@runtime_checkable
class LifecycleSink(Protocol):
    """Receives every admin action on a key; `publish` raises if the event was not accepted."""

    def publish(self, event: KeyLifecycleEvent) -> None:
        """Deliver one event (at least once; consumers deduplicate by `event_id`)."""
        ...


class InMemoryLifecycleSink:
    """Keeps events in a list: the in-process transport for the embedded runner and tests."""

    def __init__(self) -> None:
        self.events: list[KeyLifecycleEvent] = []
        self._lock = threading.Lock()

    def publish(self, event: KeyLifecycleEvent) -> None:
        """Append the event."""
        with self._lock:
            self.events.append(event)


class LifecycleDeliveryFailed(RuntimeError):
    """Kafka did not acknowledge a lifecycle event; it stays in the outbox for the next attempt."""


class KafkaLifecycleSink:
    """Publishes to `keytrail.keys.v1`, keyed by key_id, waiting for the broker's acknowledgement.

    Admin actions are rare, so each publish is flushed: an event is only marked published in the
    outbox once Kafka has it.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = Topics.KEYS.value,
        delivery_timeout_seconds: float = 10.0,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": int(delivery_timeout_seconds * 1000),
        }
        config.update(producer_config or {})
        self._producer = Producer(config)
        self._topic = topic
        self._timeout = delivery_timeout_seconds

    def publish(self, event: KeyLifecycleEvent) -> None:
        """Produce the event JSON and wait until the broker acknowledges it."""
        errors: list[str] = []

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        self._producer.produce(
            self._topic,
            key=event.key_id.encode(),
            value=event.model_dump_json().encode(),
            on_delivery=on_delivery,
        )
        remaining = self._producer.flush(self._timeout)
        if remaining or errors:
            reason = errors[0] if errors else "timed out waiting for the broker"
            raise LifecycleDeliveryFailed(
                f"lifecycle event {event.event_id} not delivered to {self._topic}: {reason}"
            )

    def close(self) -> None:
        """Flush anything still buffered."""
        self._producer.flush(self._timeout)
