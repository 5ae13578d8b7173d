"""InProcessEmitter: usage events to a callable in this process, in batches.

For the embedded default (`EmbeddedPipeline.ingest`) and for tests. Events are serialised by
`emit()` exactly as for Kafka, then parsed back into `KeyUsageEvent`s in the sender thread, so
what the sink receives is what any other transport would have carried.

There is no spool: if the sink keeps raising, a batch is retried with backoff and then dropped
(counted and logged), and a full queue drops new events (counted and logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from keytrail.producers.batching import BatchingEmitter, Delivery
from keytrail.producers.encoding import UsageEncoder
from keytrail.schemas.codec import InvalidEvent, decode_usage_event
from keytrail.schemas.usage import KeyUsageEvent

log = logging.getLogger(__name__)


class InProcessEmitter(BatchingEmitter):
    """Calls `sink(list_of_events)` with batches of `KeyUsageEvent`s.

    `background=False` runs no thread: events are handed over on `flush()` (handy in tests).
    """

    name = "in-process"

    def __init__(
        self,
        sink: Callable[[Sequence[KeyUsageEvent]], Any],
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        strict: bool = False,
        encoder: UsageEncoder | None = None,
        background: bool = True,
    ) -> None:
        self.sink = sink
        super().__init__(
            spool=None,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue=max_queue,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            strict=strict,
            encoder=encoder,
            background=background,
        )

    def _deliver(self, values: list[bytes]) -> Delivery:
        events: list[KeyUsageEvent] = []
        refused = 0
        reason = ""
        for value in values:
            try:
                events.append(decode_usage_event(value))
            except InvalidEvent as error:  # only if a clock jumped between emit and now
                refused += 1
                reason = reason or f"{error.code}: {error.reason}"
        if events:
            try:
                self.sink(events)
            except Exception as error:  # noqa: BLE001 - any sink failure is retried, then counted
                return Delivery(retry=True, reason=f"{type(error).__name__}: {error}")
        return Delivery(delivered=len(events), failed=refused, reason=reason)
