"""The shared machinery of the batching transports (HTTP, in-process): a bounded in-memory queue,
one sender thread, retries with backoff, and an optional on-disk spool with in-order replay.

`emit()` serialises the event (the same bytes Kafka would get) and appends it to the queue; it
never waits for the destination. The sender thread takes up to `batch_size` events every
`flush_interval` (or as soon as a batch is full) and calls the transport's `_deliver`. A batch the
destination cannot take right now is retried with exponential backoff; after `retries` attempts
it goes to the spool (when there is one), together with everything queued behind it, and new
events follow it there until the spool is replayed. Without a spool (in-process), such a batch is
dropped: counted and logged. When the queue is full (`max_queue`), new events go to the spool,
or are dropped (counted, logged) without one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keytrail.producers.emitter import EmitterCounters
from keytrail.producers.encoding import UsageEncoder, shared_encoder
from keytrail.producers.spool import DiskSpool
from keytrail.producers.throttled_log import ThrottledLog
from keytrail.schemas.codec import InvalidEvent
from keytrail.schemas.usage import KeyUsageEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the destination did with one batch.

    `retry=True`: nothing was taken (destination unreachable, 5xx); send the whole batch again.
    Otherwise `delivered` events were taken (duplicates included) and `failed` refused for good.
    """

    delivered: int = 0
    failed: int = 0
    retry: bool = False
    reason: str = ""


class BatchingEmitter:
    """Base class of `HttpEmitter` and `InProcessEmitter`; subclasses implement `_deliver`."""

    name = "batching"

    def __init__(
        self,
        *,
        spool: DiskSpool | None = None,
        batch_size: int = 1000,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        strict: bool = False,
        encoder: UsageEncoder | None = None,
        background: bool = True,
    ) -> None:
        if batch_size < 1 or max_queue < batch_size:
            raise ValueError("batch_size must be at least 1 and max_queue at least batch_size")
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.strict = strict
        self._encoder = encoder or shared_encoder()
        self._losses = ThrottledLog(log)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one delivery at a time (thread or flush in the caller)
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._in_flight = 0
        self._spooling = spool is not None and not spool.empty
        self._closed = False
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._next_replay = 0.0
        self._replay_backoff = backoff
        self._emitted = self._delivered = self._spooled = self._replayed = 0
        self._dropped = self._failed = self._invalid = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, name=f"keytrail-{self.name}-sender", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ the request path

    def emit(self, event: KeyUsageEvent | Mapping[str, Any]) -> None:
        """Queue one event; never waits for the destination."""
        try:
            if type(event) is dict:
                record = self._encoder.encode(event)
            else:
                record = self._encoder.encode_any(event)
        except InvalidEvent as error:
            with self._lock:
                self._invalid += 1
            if self.strict:
                raise
            self._losses.warning(
                "invalid", "refused an invalid usage event (%s): %s", error.code, error.reason
            )
            return
        with self._lock:
            self._emitted += 1
            if self._closed:
                self._lose(1, "emitted after close()")
            elif self._spooling:
                self._spool_locked([record])
            elif len(self._queue) >= self.max_queue:
                if self.spool is not None:
                    self._start_spooling("the sender is behind (queue full)")
                    self._spool_locked([record])
                else:
                    self._lose(1, f"the in-memory queue is full ({self.max_queue} events)")
            else:
                self._queue.append(record)
                if len(self._queue) == self.batch_size:
                    self._wake.set()

    def _lose(self, count: int, why: str) -> None:
        """Count and log a loss (caller holds `_lock`)."""
        self._dropped += count
        self._losses.error(
            "dropped", "%d usage event(s) DROPPED: %s; %d dropped so far", count, why, self._dropped
        )

    def _spool_locked(self, records: list[tuple[bytes, bytes]]) -> None:
        assert self.spool is not None
        kept = self.spool.append_many(records)
        self._spooled += kept
        if kept < len(records):
            self._lose(
                len(records) - kept,
                f"the spool at {self.spool.directory} is full ({self.spool.max_bytes} bytes)",
            )

    def _start_spooling(self, why: str) -> None:
        if not self._spooling:
            self._spooling = True
            self._next_replay = time.monotonic() + self._replay_backoff
            log.warning(
                "usage events (%s) now go to the spool at %s: %s", self.name, self.spool.directory, why
            )  # type: ignore[union-attr]

    # ------------------------------------------------------------------ sending

    def _deliver(self, values: list[bytes]) -> Delivery:
        """Hand a batch of contract JSON documents to the destination."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the sender must survive anything
                log.exception("usage sender (%s) hit an unexpected error", self.name)
                self._stopping.wait(self.backoff)

    def _step(self) -> bool:
        """Send what is due: the spool while spooling, else queued batches. True when it made progress."""
        with self._send_lock:
            if self._spooling:
                return self._replay_once()
            progressed = False
            while not self._stopping.is_set():
                with self._lock:
                    if not self._queue or self._spooling:
                        return progressed
                    batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                    self._in_flight = len(batch)
                outcome = self._deliver_with_retries(batch)
                with self._lock:
                    self._in_flight = 0
                    if outcome is None:  # destination unreachable: this batch and all behind it wait on disk
                        if self.spool is not None:
                            self._start_spooling("the destination is unreachable")
                            behind = list(self._queue)
                            self._queue.clear()
                            self._spool_locked(batch + behind)
                        else:
                            self._lose(len(batch), "the destination is unreachable and there is no spool")
                        return progressed
                    self._account(outcome)
                progressed = True
            return progressed

    def _deliver_with_retries(self, batch: list[tuple[bytes, bytes]]) -> Delivery | None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            outcome = self._deliver([value for _, value in batch])
            if not outcome.retry:
                return outcome
            if attempt < self.retries:
                log.debug(
                    "usage batch (%s) not delivered (%s); retry in %.1f s", self.name, outcome.reason, delay
                )
                if self._stopping.wait(delay):
                    break
                delay = min(delay * 2, self.max_backoff)
            else:
                self._losses.warning(
                    "unreachable", "usage destination (%s) unreachable: %s", self.name, outcome.reason
                )
        return None

    def _account(self, outcome: Delivery, replayed: bool = False) -> None:
        """Count a delivery (caller holds `_lock`)."""
        self._delivered += outcome.delivered
        if replayed:
            self._replayed += outcome.delivered
        if outcome.failed:
            self._failed += outcome.failed
            self._losses.error(
                "refused",
                "the destination (%s) refused %d usage event(s) for good: %s",
                self.name,
                outcome.failed,
                outcome.reason,
            )

    def _replay_once(self) -> bool:
        """One replay attempt of the oldest spooled batch (caller holds `_send_lock`)."""
        assert self.spool is not None
        if time.monotonic() < self._next_replay:
            return False
        batch = self.spool.read(self.batch_size)
        if not batch.records:
            with self._lock:
                if self.spool.empty:
                    self._spooling = False
                    self._replay_backoff = self.backoff
                    log.info("usage events (%s) are delivered directly again (spool replayed)", self.name)
            return True
        outcome = self._deliver([value for _, value in batch.records])
        if outcome.retry:
            self._next_replay = time.monotonic() + self._replay_backoff
            self._replay_backoff = min(self._replay_backoff * 2, self.max_backoff)
            self._losses.warning(
                "unreachable", "usage destination (%s) still unreachable: %s", self.name, outcome.reason
            )
            return False
        self._replay_backoff = self.backoff
        self._next_replay = 0.0
        if self.spool.commit(batch):
            with self._lock:
                self._account(outcome, replayed=True)
        self._wake.set()  # more to replay: do not wait for the next interval
        return True

    # ------------------------------------------------------------------ flush, close, counters

    @property
    def spooling(self) -> bool:
        """True while new events go to the spool."""
        return self._spooling

    @property
    def counters(self) -> EmitterCounters:
        """What happened to the emitted events so far."""
        with self._lock:
            return EmitterCounters(
                emitted=self._emitted,
                delivered=self._delivered,
                spooled=self._spooled,
                replayed=self._replayed,
                dropped=self._dropped,
                failed=self._failed,
                invalid=self._invalid,
            )

    def pending(self) -> int:
        """Events not yet delivered (queued, being sent, or spooled)."""
        with self._lock:
            return len(self._queue) + self._in_flight + (len(self.spool) if self.spool is not None else 0)

    def flush(self, timeout: float | None = None) -> int:
        """Deliver what is queued (and spooled) within `timeout`; returns how many are still pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._thread is None:
                self._step()
            else:
                self._wake.set()
            pending = self.pending()
            if pending == 0 or (deadline is not None and time.monotonic() >= deadline):
                return pending
            time.sleep(0.01 if self._thread is not None else min(0.05, self._replay_backoff))

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what can be delivered within `timeout`; spool the rest (or count it as dropped
        when there is no spool). Later `emit()` calls are dropped (counted)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._send_lock, self._lock:
            left = list(self._queue)
            self._queue.clear()
            if left:
                if self.spool is not None:
                    self._spool_locked(left)
                else:
                    self._lose(len(left), "not delivered before close()")
        if self.spool is not None:
            self.spool.close()
        self._close_transport()
        log.info("usage emitter (%s) closed: %s", self.name, self.counters.as_dict())

    def _close_transport(self) -> None:
        """Release the transport's resources."""

    def __enter__(self) -> BatchingEmitter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
