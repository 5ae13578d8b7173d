"""One signal per key, detector and window.

Windows are aligned on event time (multiples of the window length since the epoch), so the
same incident seen again — redelivered, replayed, or cut into other batches — falls in the same
window and gets the same signal id. A detector remembers the end of the last window in which it
raised a signal under `"x"` in its memory; nothing else is needed.
"""

from __future__ import annotations

from typing import Any

from keytrail.stream_processors.detectors.event_time import window_of


def claim_window(memory: dict[str, Any], at_ms: int, window_ms: int) -> int | None:
    """Start of `at_ms`'s window if this detector has not raised a signal in it (or a later one); marks it."""
    start = window_of(at_ms, window_ms)
    if start < memory.get("x", 0):
        return None
    memory["x"] = start + window_ms
    return start


def window_open(memory: dict[str, Any], at_ms: int, window_ms: int) -> bool:
    """Whether a signal at `at_ms` would be raised (without claiming the window)."""
    return window_of(at_ms, window_ms) >= memory.get("x", 0)
