"""Feedback: a person marked a signal (or the alert built on it) as expected; the detector that
raised it learns from that, so the same pattern stops being news for that key.

The contract between the feedback path (CLI, API, dashboard → audit trail → the core) and the
detectors: a detector that can learn from feedback has a `teach(state, feedback)` method and
lists the signal kinds it raises in `kinds`. `teach` changes only `state.detector_state[name]`
(a network, a route, an hour band or a rate level becomes known for that key) and returns
whether it learnt anything. It must be idempotent: the same feedback taught twice (a replay,
a redelivery) leaves the state as taught once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from keytrail.stream_processors.core.state import KeyState


@dataclass(frozen=True, slots=True)
class DetectorFeedback:
    """One "this was expected" mark, taken from the signal it is about."""

    key_id: str
    project_id: str
    kind: str
    """The SignalKind value of the signal that was marked expected."""
    signal_id: str
    window_start_ms: int
    window_end_ms: int
    evidence: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """The signal's evidence (IPs, networks, routes, minutes, ...), as stored with the signal."""
    actor: str = ""
    marked_at_ms: int = 0


@runtime_checkable
class TeachableDetector(Protocol):
    """A detector that learns from feedback on the signals it raised."""

    name: str
    kinds: tuple[str, ...]

    def teach(self, state: KeyState, feedback: DetectorFeedback) -> bool:
        """Learn from `feedback` into `state.detector_state[self.name]`; True if anything changed."""
        ...
