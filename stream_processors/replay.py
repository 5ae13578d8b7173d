"""Rebuild every derived table and `last_used_at` from the raw usage log.

The raw log (`usage_events`) is the source of truth. Replay truncates the derived ClickHouse
tables, runs the same core over the on-time events in (key, event time) order, writes the
outputs through the same sink, recounts from the log the minutes that hold late events (as the
sink did when each arrived), and re-applies last used to the key store from scratch. The
`secret_exposed` signals stay: they were raised on secrets the stored events no longer hold.
Run it with the worker stopped (in embedded mode the server owns chDB: stop it first).

Marks "expected" (`detector_feedback`, not derived: kept) are taught where they were taught live:
before the key's first event after the mark's `applies_after`, so the marked signal is raised again
and what followed the mark is judged as it was (see `feedback_store`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keytrail.schemas.signals import SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.sql import load_query
from keytrail.sql.backends import ClickHouseBackend
from keytrail.stream_processors.core.aggregate import BatchResult, Detector, UsageAggregator
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors.key_lifecycle import KeyFacts, LifecycleThresholds, LifecycleWatch
from keytrail.stream_processors.detectors.teaching import FeedbackTeacher, MarkedExpected
from keytrail.stream_processors.feedback_store import FeedbackStore
from keytrail.stream_processors.projector import LastUsedProjector, ResettableLastUsedTarget
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from keytrail.stream_processors.state_stores import InMemoryStates

DERIVED_TABLES = ("key_usage_minute", "key_last_used", "signals")
"""Everything the stream derives from the raw log (rollup views follow these tables)."""

KEPT_SIGNAL_KINDS = (SignalKind.SECRET_EXPOSED.value,)
"""Signals the raw log cannot give again: the stream raised them on the secret it then redacted
from the event, so the stored event no longer holds it. Replay keeps them."""



@dataclass
class ReplayReport:
    """What a replay did."""

    keys: int = 0
    events: int = 0
    minutes: int = 0
    signals: int = 0
    last_used_applied: int = 0


def replay(
    clickhouse: ClickHouseBackend,
    keystore: ResettableLastUsedTarget | None,
    *,
    allowed_lateness_s: int,
    detectors: list[Detector],
    keys_per_chunk: int = 500,
    progress: Callable[[ReplayReport], None] = lambda _report: None,
    lifecycle: LifecycleThresholds | None = None,
) -> ReplayReport:
    """Drop derived state and recompute it from `usage_events`; returns counts.

    Use the stream's allowed lateness: in event-time order no stored on-time event is late,
    and minutes close exactly where they closed in the stream.

    With `lifecycle` (the alert rules' idle / never-used / expiring days) and a key store that
    lists its keys, the watermark at the end of the log (its newest event time minus the allowed
    lateness) evaluates every key of the store, as the stream's watermark did: keys idle at the
    end, never used, or whose expiry window the log passed get the same signals again.
    """
    for table in DERIVED_TABLES:
        if table == "signals":
            kept = ", ".join(f"'{kind}'" for kind in KEPT_SIGNAL_KINDS)  # enum values of the contract, not input
            clickhouse.command(f"ALTER TABLE signals DELETE WHERE kind NOT IN ({kept}) SETTINGS mutations_sync = 2")
            continue
        clickhouse.command(f"TRUNCATE TABLE IF EXISTS {table}")
    if keystore is not None:
        keystore.reset_last_used()
    sink = ClickHouseSink(clickhouse)
    projector = LastUsedProjector(keystore) if keystore is not None else None
    report = ReplayReport()
    teacher = FeedbackTeacher(detectors)
    marks = _marks_by_key(clickhouse, teacher)
    query = load_query("replay_usage_events")
    late_query = load_query("replay_late_minutes")
    after_key = ""
    used: dict[str, tuple[int, str]] = {}
    newest_ms = 0
    while True:
        rows = clickhouse.query(query, {"after_key": after_key, "max_keys": keys_per_chunk})
        if not rows:
            if lifecycle is not None and hasattr(keystore, "list_keys") and newest_ms:
                signals = _lifecycle_at_the_end(keystore, lifecycle, newest_ms - allowed_lateness_s * 1000, used)
                sink.write_batch(BatchResult(signals=signals))
                report.signals += len(signals)
            return report
        # Fresh state per chunk: keys never span chunks, so nothing is lost between them.
        core = UsageAggregator(allowed_lateness_s, detectors)
        states = InMemoryStates()
        events = [KeyUsageEvent.model_validate(row) for row in rows]
        for due, phase in _phases(events, marks):
            for key_id, mark in due:
                state = states.get(key_id)
                if state is not None:
                    teacher.teach(state, mark)
            result = core.process(phase, states)
            result.accepted, result.late = [], []  # the raw log is the input, not an output
            sink.write_batch(result)
            if projector is not None:
                report.last_used_applied += projector.apply(result.last_used)
            report.minutes += len(result.minutes)
            report.signals += len(result.signals)
        # The stream recounted each late event's minute from the audit trail (late events included).
        late = clickhouse.query(late_query, {"keys": sorted({row["key_id"] for row in rows})})
        sink.recount_minutes([row["key_id"] for row in late], [int(row["minute"]) for row in late])
        for key_id, state in states.items():
            if state.last_used_ms > 0:
                used[key_id] = (state.last_used_ms, state.last_used_ip)
            newest_ms = max(newest_ms, state.watermark_ms)
        report.keys += len(states)
        report.events += len(events)
        after_key = rows[-1]["key_id"]
        progress(report)


def _lifecycle_at_the_end(keystore: object, thresholds: LifecycleThresholds, watermark_ms: int,
                          used: dict[str, tuple[int, str]]) -> list:
    """Idle / never-used / expiring of every key of the store at the log's final watermark."""
    watch = LifecycleWatch(thresholds)
    facts = []
    for record in keystore.list_keys():  # type: ignore[attr-defined]
        key = KeyFacts.of(record)
        if key.key_id in used:  # the log's last use (the key store's may be newer: live use since)
            last_ms, ip = used[key.key_id]
            key = KeyFacts(key.key_id, key.project_id, key.active, key.created_ms, key.expires_ms, last_ms, ip)
        facts.append(key)
    watch.load(facts)
    return watch.advance(watermark_ms, used.get)


def _marks_by_key(clickhouse: ClickHouseBackend, teacher: FeedbackTeacher) -> dict[str, list[MarkedExpected]]:
    """Every stored mark a detector learns from, per key, in the order they are taught."""
    found: dict[str, list[MarkedExpected]] = {}
    for stored in FeedbackStore(clickhouse).inserted_since(0):
        if teacher.detector_for(stored.feedback.kind) is not None:
            found.setdefault(stored.feedback.key_id, []).append(stored.mark)
    for marks in found.values():
        marks.sort(key=lambda mark: mark.order)
    return found


def _phases(
    events: list[KeyUsageEvent], marks: dict[str, list[MarkedExpected]]
) -> list[tuple[list[tuple[str, MarkedExpected]], list[KeyUsageEvent]]]:
    """The chunk cut where marks apply: (marks to teach first, events) per phase, each key's order kept.

    Phase 0 holds every event of keys without marks and each marked key's events up to its first mark's
    point; a mark is taught before the phase holding the key's first event after its point (never, if
    the key has none: live, it would not have been taught either).
    """
    if not marks or not any(event.key_id in marks for event in events):
        return [([], events)]
    phases: list[tuple[list[tuple[str, MarkedExpected]], list[KeyUsageEvent]]] = [([], [])]
    position: dict[str, tuple[int, int]] = {}  # key -> (phase index, marks taught so far)
    for event in events:
        key_marks = marks.get(event.key_id)
        if not key_marks:
            phases[0][1].append(event)
            continue
        phase, taught = position.get(event.key_id, (0, 0))
        at = epoch_ms(event.occurred_at)
        due = []
        while taught < len(key_marks) and key_marks[taught].applies_after_ms < at:
            due.append(key_marks[taught])
            taught += 1
        if due:
            phase += 1
            if phase == len(phases):
                phases.append(([], []))
            phases[phase][0].extend((event.key_id, mark) for mark in due)
        position[event.key_id] = (phase, taught)
        phases[phase][1].append(event)
    return phases
