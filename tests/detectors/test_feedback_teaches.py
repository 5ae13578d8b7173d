"""Feedback teaches: a signal marked expected makes its network / route known for that key, for good."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from keytrail.schemas.signals import Signal, SignalKind
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors import NewNetworkDetector, NewRouteDetector, default_detectors
from keytrail.stream_processors.detectors.feedback import DetectorFeedback, TeachableDetector
from keytrail.stream_processors.detectors.teaching import FeedbackTeacher, MarkedExpected
from keytrail.stream_processors.feedback_store import FeedbackApplier, InMemoryFeedbackSource
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.scenarios import START, event, steady

PUBLIC_IP = "203.0.113.7"


def mark_of(signal: Signal, applies_after_ms: int, feedback_id: str = "fb-1") -> MarkedExpected:
    return MarkedExpected(
        feedback_id,
        applies_after_ms,
        DetectorFeedback(
            key_id=signal.key_id,
            project_id=signal.project_id,
            kind=signal.kind.value,
            signal_id=signal.signal_id,
            window_start_ms=epoch_ms(signal.window_start),
            window_end_ms=epoch_ms(signal.window_end),
            evidence=signal.evidence,
            actor="test",
        ),
    )


def _process(core, applier, states, events, batch_size=500):  # noqa: ANN001, ANN202
    signals = []
    ordered = sorted(events, key=lambda e: e.occurred_at)
    for begin in range(0, len(ordered), batch_size):
        batch = ordered[begin : begin + batch_size]
        if applier is not None:
            applier.apply(batch, states)
        signals.extend(core.process(batch, states).signals)
    return signals


def _first_public_use(keys):  # noqa: ANN001, ANN202
    """Eight days from one private network, then a first public use (a high new_network signal) per key."""
    history = []
    for key in keys:
        history += steady(key, days=8, every_s=3600, ips=("10.1.1.5",))
        history.append(event(key, START + timedelta(days=8, hours=9), ip=PUBLIC_IP))
    return history


def _renumbering(keys, networks=70):  # noqa: ANN001, ANN202
    """The keys' private network renumbered across many /24s of its /16 (learnt silently, not nomadism)."""
    moved = []
    for key in keys:
        for n in range(networks):
            at = START + timedelta(days=9, hours=n // 6, minutes=10 * (n % 6))
            moved.append(event(key, at, ip=f"10.1.{n + 2}.9"))
    return moved


def test_marked_new_network_no_longer_signals_for_that_key_but_does_for_another():
    core = UsageAggregator(300, [NewNetworkDetector()])
    source = InMemoryFeedbackSource()
    applier = FeedbackApplier(source, core.detectors)
    states = InMemoryStates()
    first = _process(core, applier, states, _first_public_use(["key_a", "key_b"]))
    assert sorted(s.key_id for s in first) == ["key_a", "key_b"]
    marked = next(s for s in first if s.key_id == "key_a")
    source.add(mark_of(marked, applies_after_ms=states["key_a"].watermark_ms))
    again = event("key_a", START + timedelta(days=20, hours=9), ip="203.0.113.99")
    again_b = event("key_b", START + timedelta(days=20, hours=9), ip="203.0.113.99")
    later = _process(core, applier, states, _renumbering(["key_a", "key_b"]) + [again, again_b])
    # Both keys forgot the public network while renumbering (a memory of 64); the taught one kept it.
    assert [(s.key_id, s.evidence["networks"]) for s in later] == [("key_b", ["203.0.113.0/24"])]
    assert applier.taught == 1


def test_without_the_mark_both_keys_signal_again():
    """The same traffic with no feedback: the test above fails if teaching does nothing."""
    core = UsageAggregator(300, [NewNetworkDetector()])
    states = InMemoryStates()
    _process(core, None, states, _first_public_use(["key_a", "key_b"]))
    again = [event(k, START + timedelta(days=20, hours=9), ip="203.0.113.99") for k in ("key_a", "key_b")]
    later = _process(core, None, states, _renumbering(["key_a", "key_b"]) + again)
    assert sorted(s.key_id for s in later) == ["key_a", "key_b"]


def test_teaching_twice_leaves_the_state_as_taught_once():
    core = UsageAggregator(300, [NewNetworkDetector()])
    states = InMemoryStates()
    (signal,) = _process(core, None, states, _first_public_use(["key_a"]))
    teacher = FeedbackTeacher(core.detectors)
    mark = mark_of(signal, states["key_a"].watermark_ms)
    state = states["key_a"]
    assert teacher.teach(state, mark) is True
    once = state.to_bytes()
    assert teacher.teach(state, mark) is False
    assert state.to_bytes() == once
    # The detector's own teach is idempotent too, without the teacher's memory of ids.
    detector = core.detectors[0]
    assert detector.teach(state, mark.feedback) is False
    assert state.to_bytes() == once
    assert state.detector_state["new_network"]["t"] == ["203.0.113"]


def test_a_mark_waits_until_the_key_has_an_event_after_its_point():
    core = UsageAggregator(300, [NewNetworkDetector()])
    source = InMemoryFeedbackSource()
    applier = FeedbackApplier(source, core.detectors)
    states = InMemoryStates()
    (signal,) = _process(core, applier, states, _first_public_use(["key_a"]))
    point = states["key_a"].watermark_ms
    source.add(mark_of(signal, point))
    other_key = [event("key_z", START + timedelta(days=9), ip="10.9.9.9")]
    assert applier.apply(other_key, states) == 0  # no event of key_a: nothing taught yet
    assert "t" not in states["key_a"].detector_state["new_network"]
    assert applier.apply([event("key_a", START + timedelta(days=9), ip="10.1.1.5")], states) == 1
    assert states["key_a"].detector_state["new_network"]["t"] == ["203.0.113"]


def test_marked_new_route_is_known_and_kept():
    detector = NewRouteDetector()
    core = UsageAggregator(300, [detector])
    states = InMemoryStates()
    history = steady("key_r", days=8, every_s=3600)
    history.append(event("key_r", START + timedelta(days=8, hours=9), method="POST", route="/v1/refunds"))
    (signal,) = _process(core, None, states, history)
    assert signal.kind is SignalKind.NEW_ROUTE
    state = states["key_r"]
    assert FeedbackTeacher([detector]).teach(state, mark_of(signal, state.watermark_ms)) is True
    memory = state.detector_state["new_route"]
    assert memory["t"] and memory["t"][0] in memory["r"]


def test_a_route_clipped_in_the_evidence_cannot_be_taught():
    detector = NewRouteDetector()
    core = UsageAggregator(300, [detector])
    states = InMemoryStates()
    history = steady("key_r", days=8, every_s=3600)
    history.append(event("key_r", START + timedelta(days=8, hours=9), route="/v1/" + "x" * 300))
    (signal,) = _process(core, None, states, history)
    assert detector.teach(states["key_r"], mark_of(signal, 0).feedback) is False


def test_the_default_detectors_that_learn_are_found_by_kind():
    teacher = FeedbackTeacher(default_detectors())
    assert isinstance(teacher.detector_for("new_network"), TeachableDetector)
    assert teacher.detector_for("new_route").name == "new_route"
    assert teacher.detector_for("rate_spike").name == "rate_spike"
    assert isinstance(teacher.detector_for("rate_spike"), TeachableDetector)
    assert teacher.detector_for("unusual_hour").name == "unusual_hour"
    assert isinstance(teacher.detector_for("unusual_hour"), TeachableDetector)
    assert teacher.detector_for("denial_burst") is None  # not teachable: the mark is only audited


def test_in_process_a_mark_is_taught_at_the_next_batch_whatever_keys_it_holds():
    core = UsageAggregator(300, [NewNetworkDetector()])
    source = InMemoryFeedbackSource()
    applier = FeedbackApplier(source, core.detectors, owns_every_key=True)
    states = InMemoryStates()
    (signal,) = _process(core, applier, states, _first_public_use(["key_a"]))
    source.add(mark_of(signal, states["key_a"].watermark_ms))
    unseen = mark_of(signal, 0, feedback_id="fb-2")
    source.add(MarkedExpected("fb-2", 0, replace(unseen.feedback, key_id="key_never_seen")))
    assert applier.apply([event("key_z", START + timedelta(days=9), ip="10.9.9.9")], states) == 1
    assert states["key_a"].detector_state["new_network"]["t"] == ["203.0.113"]
    assert list(applier.pending) == ["key_never_seen"]  # no state yet: it waits
