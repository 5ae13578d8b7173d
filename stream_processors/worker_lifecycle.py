"""Idle / never used / expiring in event time in the worker: one `LifecycleWatch` per owned partition.

Each key of the key store belongs to the partition its usage events go to (murmur2 of the key id);
the watch of that partition is advanced with that partition's event watermark after each batch,
so a Kafka replay or a backfill through the topic flags keys at the event time, as the embedded
ingest does. Signals raised before (the signals table) are not raised again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from keytrail.keystore.records import record_from_row
from keytrail.keystore.tables import api_keys
from keytrail.schemas.partitioning import partition_for
from keytrail.schemas.signals import Signal
from keytrail.stream_processors.core.aggregate import BatchResult, StateMapping
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.stream_time import StreamTimes
from keytrail.stream_processors.detectors.key_lifecycle import KeyFacts, LifecycleThresholds, LifecycleWatch

log = logging.getLogger(__name__)

RAISED_LIFECYCLE_SIGNALS = (
    "SELECT DISTINCT toString(signal_id) AS id FROM signals WHERE kind IN ('idle', 'never_used', 'expiring_soon')"
)


class PartitionedLifecycle:
    """The event-time driver of the lifecycle evaluation for the partitions this worker owns."""

    def __init__(self, engine: Engine, partitions: int, thresholds: LifecycleThresholds,
                 raised: Iterable[str] = (), refresh_seconds: float = 60.0) -> None:
        self.engine = engine
        self.partitions = partitions
        self.thresholds = thresholds
        self.refresh_seconds = refresh_seconds
        self.watches: dict[int, LifecycleWatch] = {}
        self._raised = set(raised)
        self._loaded_at: float | None = None

    def refresh_if_due(self, owned: set[int]) -> None:
        """Re-read the key store (blocking: run it in a thread) at most every `refresh_seconds`."""
        now = time.monotonic()
        if self._loaded_at is not None and now - self._loaded_at < self.refresh_seconds and owned <= set(self.watches):
            return
        try:
            with self.engine.connect() as connection:
                records = [record_from_row(row) for row in connection.execute(select(api_keys))]
        except SQLAlchemyError as error:  # no key store yet, or unreachable: keep what we had, retry later
            self._loaded_at = now
            log.warning("key store not readable for the idle / never-used / expiring evaluation (%s); "
                        "retrying in %.0f s", type(error).__name__, self.refresh_seconds)
            for partition in owned - set(self.watches):
                watch = self.watches[partition] = LifecycleWatch(self.thresholds)
                watch.remember(self._raised)
            return
        by_partition: dict[int, list[KeyFacts]] = {partition: [] for partition in owned}
        for record in records:
            partition = partition_for(record.id, self.partitions)
            if partition in by_partition:
                by_partition[partition].append(KeyFacts.of(record))
        watches = {}
        for partition, keys in by_partition.items():
            watch = self.watches.get(partition) or LifecycleWatch(self.thresholds)
            watch.remember(self._raised)
            watch.load(keys)
            watches[partition] = watch
        self.watches = watches
        self._loaded_at = now

    def signals(self, result: BatchResult, states: StateMapping, stream: StreamTimes) -> list[Signal]:
        """The batch's signals without repeats, plus what its partitions' watermarks made due."""
        kept = []
        for signal in result.signals:
            watch = self.watches.get(partition_for(signal.key_id, self.partitions))
            kept.extend(watch.admit([signal]) if watch is not None else [signal])
        for record in result.last_used:
            watch = self.watches.get(partition_for(record.key_id, self.partitions))
            if watch is not None:
                watch.used(record.key_id, epoch_ms(record.last_used_at))

        def last_used(key_id: str) -> tuple[int, str] | None:
            state = states.get(key_id)
            return (state.last_used_ms, state.last_used_ip) if state is not None and state.last_used_ms > 0 else None

        for partition, watch in self.watches.items():
            if partition in stream.partitions:
                kept.extend(watch.advance(stream.event_watermark_ms(partition), last_used))
        return kept
