"""A detector's finding as a Signal: deterministic id, bounded evidence, a message within the contract.

Every signal explains itself the same way, whichever detector raised it: its message ends with one
sentence giving the observed and expected figures, the window and the evidence, and its evidence
carries under `timeline` the read-API link to the key's timeline for that window (the requests
behind the finding). Both are built here, so a detector only says why in its own words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from keytrail.schemas.signals import Severity, Signal, SignalKind, signal_id_for
from keytrail.stream_processors.core.clock import from_epoch_ms
from keytrail.stream_processors.detectors.event_time import iso_text
from keytrail.stream_processors.detectors.wording import explanation, window_text

MAX_EVIDENCE_ITEMS = 20
"""At most this many entries per evidence list (IPs, networks, routes, ...)."""
MAX_EVIDENCE_CHARS = 200
MAX_MESSAGE_CHARS = 1000
"""The Signal contract's limit."""
TIMELINE_PATH = "/v1/usage/key_timeline"
"""The read API's canned query listing every request of one key in a window (sql/queries/key_timeline.sql)."""
EXPLANATION_START = "Observed "
"""Every message's last sentence, the explanation, starts with this."""


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
    """The Signal; its id depends only on the key, the kind and the window start.

    `message` is the detector's account of why; the explanation sentence (see the module) is added
    after it, and the timeline link to the evidence.
    """
    bounded = {
        name: [clip(str(item), MAX_EVIDENCE_CHARS) for item in list(items)[:MAX_EVIDENCE_ITEMS]]
        for name, items in evidence.items()
        if items
    }
    observed, expected = round(observed, 3), round(expected, 3)
    window_end_ms = window_start_ms + window_ms
    link = timeline_link(key_id, window_start_ms, window_end_ms)
    sentence = clip(
        explanation(kind.value, observed, expected, window_text(window_start_ms, window_end_ms), bounded, link),
        MAX_MESSAGE_CHARS // 2,
    )
    bounded["timeline"] = [link]
    detail = message.strip()
    if detail and detail[-1] not in ".!?":
        detail += "."
    message = f"{clip(detail, MAX_MESSAGE_CHARS - len(sentence) - 1)} {sentence}" if detail else sentence
    return Signal(
        signal_id=signal_id_for(key_id, kind.value, iso_text(window_start_ms)),
        key_id=key_id,
        project_id=project_id or "unknown",
        kind=kind,
        severity=severity,
        score=round(max(score, 0.0), 3),
        observed=observed,
        expected=expected,
        window_start=from_epoch_ms(window_start_ms),
        window_end=from_epoch_ms(window_end_ms),
        detected_at=from_epoch_ms(detected_at_ms),
        evidence=bounded,
        message=clip(message, MAX_MESSAGE_CHARS),
    )


def timeline_link(key_id: str, start_ms: int, end_ms: int) -> str:
    """`/v1/usage/key_timeline?key_id=…&since=…&until=…`: the key's requests in [start, end)."""
    query = urlencode({"key_id": key_id, "since": iso_text(start_ms), "until": iso_text(end_ms)}, safe=":")
    return f"{TIMELINE_PATH}?{query}"


def explanation_of(message: str) -> str:
    """The explanation sentence of a signal's message (its last sentence, see the module)."""
    at = message.rfind(" " + EXPLANATION_START)
    return message[at + 1 :] if at >= 0 else message if message.startswith(EXPLANATION_START) else ""
