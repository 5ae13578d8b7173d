"""The last-used projector: pushes `last_used_at` from the stream into the key store.

Coalesces per key (newest wins), applies monotonic batched updates, and retries while the
key store is down; Kafka offsets are committed only after the key store accepted the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from pydantic import ValidationError

from keytrail.schemas.last_used import LastUsed

log = logging.getLogger(__name__)


class LastUsedTarget(Protocol):
    """What the projector writes to: the key store."""

    def apply_last_used(self, records: list[LastUsed]) -> int:
        """Monotonic update of last_used_at/ip; returns rows changed."""
        ...


class ResettableLastUsedTarget(LastUsedTarget, Protocol):
    """A key store that can also forget every last used, for a rebuild from the log."""

    def reset_last_used(self) -> int:
        """Set last_used_at/ip to null on every key; returns rows changed."""
        ...


def coalesce_newest(records: Iterable[LastUsed]) -> list[LastUsed]:
    """One record per key: the newest by (last_used_at, event_id)."""
    newest: dict[str, LastUsed] = {}
    for record in records:
        current = newest.get(record.key_id)
        if current is None or (record.last_used_at, record.event_id) > (current.last_used_at, current.event_id):
            newest[record.key_id] = record
    return list(newest.values())


class LastUsedProjector:
    """Applies LastUsed records to the key store; blocks and retries while it is unreachable."""

    def __init__(
        self,
        target: LastUsedTarget,
        *,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = target
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self.applied = 0
        self.retries = 0

    def apply(self, records: Iterable[LastUsed]) -> int:
        batch = coalesce_newest(records)
        if not batch:
            return 0
        delay = 0.1
        while True:
            try:
                changed = self.target.apply_last_used(batch)
                self.applied += changed
                return changed
            except Exception as exc:  # the store's driver errors vary by backend; all mean "retry"
                self.retries += 1
                log.warning("key store update failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)


def run_kafka_projector(
    bootstrap: str,
    projector: LastUsedProjector,
    *,
    group_id: str = "keytrail-projector",
    batch_size: int = 1000,
    poll_seconds: float = 0.05,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Consume `keytrail.last-used.v1` and apply it until `should_stop()`; commits after each applied batch."""
    from confluent_kafka import Consumer

    from keytrail.schemas.topics import Topics

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([Topics.LAST_USED.value])
    applied = batches = 0
    apply_seconds = lag_s = 0.0
    logged_at = time.monotonic()
    try:
        while not should_stop():
            if time.monotonic() - logged_at >= 10.0:
                log.info("projector progress: batches=%d records=%d apply=%.2fs lag=%.2fs",
                         batches, applied, apply_seconds, lag_s)
                logged_at = time.monotonic()
            messages = consumer.consume(num_messages=batch_size, timeout=poll_seconds)
            records = []
            for message in messages:
                if message.error():
                    log.warning("projector consume error: %s", message.error())
                    continue
                try:
                    records.append(LastUsed.model_validate_json(message.value()))
                except ValidationError:
                    log.error("skipping malformed last-used record at offset %s", message.offset())
            if records:
                started = time.perf_counter()
                projector.apply(records)
                apply_seconds += time.perf_counter() - started
                applied += len(records)
                batches += 1
                lag_s = time.time() - max(record.last_used_at for record in records).timestamp()
            if messages:
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()
