"""The process-wide emitter behind `keytrail.emit()`.

A service that only wants to record usage calls `keytrail.emit(event)`; the first call builds an
emitter from the settings (`KEYTRAIL_*`: Kafka in production mode, HTTP to the console in embedded
mode) unless `keytrail.configure(emitter)` chose one first. `emit()` keeps every guarantee of the
emitter behind it: it never blocks or raises because of the destination.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any

from keytrail.producers.emitter import UsageEmitter
from keytrail.schemas.usage import KeyUsageEvent

_lock = threading.Lock()
_emitter: UsageEmitter | None = None


def configure(emitter: UsageEmitter) -> UsageEmitter | None:
    """Make `emitter` the one `emit()` uses; returns the previous one (not closed)."""
    global _emitter
    with _lock:
        previous, _emitter = _emitter, emitter
    return previous


def default_emitter() -> UsageEmitter:
    """The emitter `emit()` uses, built from the settings on first use."""
    global _emitter
    emitter = _emitter
    if emitter is not None:
        return emitter
    with _lock:
        if _emitter is None:
            from keytrail.producers.factory import emitter_from_settings

            _emitter = emitter_from_settings()
            atexit.register(close)
        return _emitter


def emit(event: KeyUsageEvent | Mapping[str, Any]) -> None:
    """Queue one usage event (a `KeyUsageEvent` or a mapping of its fields) on the default emitter."""
    (_emitter or default_emitter()).emit(event)


def close(timeout: float | None = 10.0) -> None:
    """Deliver what the default emitter holds (the rest stays in its spool) and forget it."""
    global _emitter
    with _lock:
        emitter, _emitter = _emitter, None
    if emitter is not None:
        emitter.close(timeout)
