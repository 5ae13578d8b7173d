"""Route a "this was expected" mark to the detector that raised the signal, once per key.

The detector is found by the signal's kind among the detectors the core runs; it learns only if it
implements `TeachableDetector` (see `feedback.py`). Each key's state remembers which marks it has
learnt from (under `FEEDBACK_SLOT`), so a mark delivered twice (a restart, a re-read) is taught once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from keytrail.stream_processors.core.state import KeyState
from keytrail.stream_processors.detectors.feedback import DetectorFeedback, TeachableDetector

FEEDBACK_SLOT = "feedback"
"""The teacher's own memory in `state.detector_state`: `[applies_after_ms, [feedback ids at that time]]`
of the newest mark taught (marks are taught in that order per key)."""


@dataclass(frozen=True, slots=True)
class MarkedExpected:
    """A stored mark: its id, the event time after which it applies, and what the detector learns from."""

    feedback_id: str
    applies_after_ms: int
    """Event time: the mark is taught before the key's first event after this (the key's newest event
    when the mark was made), live and in a replay alike."""
    feedback: DetectorFeedback

    @property
    def order(self) -> tuple[int, str]:
        return self.applies_after_ms, self.feedback_id


class FeedbackTeacher:
    """Teaches marks to the detectors that raised them."""

    def __init__(self, detectors: Iterable[object]) -> None:
        self.by_kind: dict[str, TeachableDetector] = {}
        for detector in detectors:
            if isinstance(detector, TeachableDetector):
                for kind in detector.kinds:
                    self.by_kind.setdefault(str(kind), detector)

    def detector_for(self, kind: str) -> TeachableDetector | None:
        """The detector that learns from marks on signals of `kind` (None: no detector does)."""
        return self.by_kind.get(kind)

    @staticmethod
    def already_taught(state: KeyState, mark: MarkedExpected) -> bool:
        slot = state.detector_state.get(FEEDBACK_SLOT)
        if not slot:
            return False
        after, ids = slot
        return mark.applies_after_ms < after or (mark.applies_after_ms == after and mark.feedback_id in ids)

    def teach(self, state: KeyState, mark: MarkedExpected) -> bool:
        """Teach one mark to the key's state; True if the detector learnt something.

        A mark taught before (same id, or older than the newest taught) changes nothing.
        """
        if self.already_taught(state, mark):
            return False
        slot = state.detector_state.get(FEEDBACK_SLOT)
        if slot and slot[0] == mark.applies_after_ms:
            slot[1].append(mark.feedback_id)
            del slot[1][:-4]
        else:
            state.detector_state[FEEDBACK_SLOT] = [mark.applies_after_ms, [mark.feedback_id]]
        detector = self.detector_for(mark.feedback.kind)
        return detector is not None and bool(detector.teach(state, mark.feedback))
