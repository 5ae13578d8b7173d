"""A detector's finding as a Signal: deterministic id, bounded evidence, a message within the contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from keytrail.schemas.signals import Severity, Signal, SignalKind, signal_id_for
from keytrail.stream_processors.core.clock import from_epoch_ms
from keytrail.stream_processors.detectors.event_time import iso_text

MAX_EVIDENCE_ITEMS = 20
"""At most this many entries per evidence list (IPs, networks, routes, ...)."""
MAX_EVIDENCE_CHARS = 200
MAX_MESSAGE_CHARS = 1000
"""The Signal contract's limit."""


def clip(text: str, limit: int = 120) -> str:
    """`text`, shortened with an ellipsis when longer than `limit` (routes can be 512 characters)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_signal(
    *,
    key_id: str,
    project_id: str,
    kind: SignalKind,
    severity: Severity,
    score: float,
    observed: float,
    expected: float,
    window_start_ms: int,
    window_ms: int,
    detected_at_ms: int,
    evidence: Mapping[str, Sequence[str]],
    message: str,
) -> Signal:
    """The Signal; its id depends only on the key, the kind and the window start."""
    bounded = {
        name: [clip(str(item), MAX_EVIDENCE_CHARS) for item in list(items)[:MAX_EVIDENCE_ITEMS]]
        for name, items in evidence.items()
        if items
    }
    return Signal(
        signal_id=signal_id_for(key_id, kind.value, iso_text(window_start_ms)),
        key_id=key_id,
        project_id=project_id or "unknown",
        kind=kind,
        severity=severity,
        score=round(max(score, 0.0), 3),
        observed=round(observed, 3),
        expected=round(expected, 3),
        window_start=from_epoch_ms(window_start_ms),
        window_end=from_epoch_ms(window_start_ms + window_ms),
        detected_at=from_epoch_ms(detected_at_ms),
        evidence=bounded,
        message=clip(message, MAX_MESSAGE_CHARS),
    )
