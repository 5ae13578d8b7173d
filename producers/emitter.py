"""The emitter protocol every transport implements, and the counters it reports."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from keytrail.schemas.usage import KeyUsageEvent


@dataclass(frozen=True, slots=True)
class EmitterCounters:
    """What an emitter did with the events handed to it, since it was created.

    - `emitted`: events accepted by `emit()` (valid and not refused after `close()`).
    - `delivered`: events the destination acknowledged (broker ack, HTTP 200, sink call returned),
      including those replayed from the spool.
    - `spooled`: events written to the on-disk spool (the destination was down or the local queue
      was full).
    - `replayed`: spooled events delivered later (also counted in `delivered`).
    - `dropped`: events lost because the spool bound (or the in-memory bound) was hit, the spool
      could not be written, or `emit()` was called after `close()`. Always logged.
    - `failed`: events the destination refused for good (for example an HTTP 400/401, an event
      the console rejected, or a broker refusing the record). Always logged.
    - `invalid`: events `emit()` refused because they break the contract (not in `emitted`).
      Logged, or raised by emitters created with `strict=True`.

    Once everything is flushed, `emitted == delivered + dropped + failed`; events still pending
    (queued, in flight or spooled) make up any difference.
    """

    emitted: int = 0
    delivered: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    failed: int = 0
    invalid: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain mapping (for logs, metrics and JSON)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class CounterSet:
    """Mutable counters shared by an emitter's threads (each update under one small lock)."""

    __slots__ = ("_lock", "emitted", "delivered", "spooled", "replayed", "dropped", "failed", "invalid")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.emitted = self.delivered = self.spooled = self.replayed = self.dropped = self.failed = 0
        self.invalid = 0

    def add(self, **amounts: int) -> None:
        """Increase some counters atomically."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> EmitterCounters:
        """A consistent copy."""
        with self._lock:
            return EmitterCounters(
                self.emitted,
                self.delivered,
                self.spooled,
                self.replayed,
                self.dropped,
                self.failed,
                self.invalid,
            )


@runtime_checkable
class UsageEmitter(Protocol):
    """Where a service sends its usage events. `emit()` never blocks and never raises on the
    request path because of the destination; invalid events are counted (`invalid`) and logged,
    or raised as `InvalidEvent` by emitters created with `strict=True`."""

    def emit(self, event: KeyUsageEvent | Mapping[str, Any]) -> None:
        """Queue one event (a `KeyUsageEvent` or a mapping of its fields)."""
        ...

    def flush(self, timeout: float | None = None) -> int:
        """Wait until queued events are delivered; returns how many are still pending."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within `timeout`, keep the rest (spool), release resources."""
        ...

    @property
    def counters(self) -> EmitterCounters:
        """What happened to the emitted events so far."""
        ...
