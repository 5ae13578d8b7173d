"""Marks "this signal was expected" in ClickHouse's `detector_feedback`, and their way back into the core.

Writers (CLI, API) record a mark with `FeedbackStore.record`; the worker and the embedded ingest hold
a `FeedbackApplier` and call `apply(events, states)` once at the start of every batch: it reads new
marks from a `FeedbackSource` and teaches each one to its key's state before the batch's events, as
soon as the batch holds an event of that key newer than the mark's `applies_after` (event time).

Replay: a mark applies after the key's newest event at the time it was made, so a replay (which runs
each key's events in event-time order, `replay.py`) teaches it at the same point of the key's history:
the marked signal is raised again, what followed the mark is judged as it was. Live, the point is
exact in embedded mode (the mark is taken under the pipeline lock) and exact to one batch in the
worker (a batch in flight while the mark is written is judged untaught).
"""

from __future__ import annotations

import logging
import operator
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC as _UTC
from datetime import datetime
from typing import Any, Protocol

import orjson

from keytrail.schemas.secrets import redact_text
from keytrail.schemas.timestamps import format_utc_millis
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.sql.backends import ClickHouseBackend, ClickHouseError
from keytrail.stream_processors.core.aggregate import StateMapping
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.teaching import FeedbackTeacher, MarkedExpected

FEEDBACK_NAMESPACE = uuid.UUID("0c7f3a57-2b8e-4d6a-9a43-5f0e6c1d2b18")
log = logging.getLogger(__name__)
_KEY_ID = operator.attrgetter("key_id")
_EVER = 1 << 62
"""Stands for "after every mark's point" when a mark is taught without looking at the batch."""
READ_SLACK_MS = 10_000
"""A reader re-reads this far behind the newest `inserted_at` it saw (inserts still in flight)."""


def feedback_id_for(project_id: str, signal_id: str) -> str:
    """Deterministic: marking the same signal twice gives the same feedback."""
    return str(uuid.uuid5(FEEDBACK_NAMESPACE, f"{project_id}|{signal_id}"))


def _ch_time(ms: int) -> str:
    return format_utc_millis(datetime.fromtimestamp(ms / 1000, tz=_UTC))[:-1].replace("T", " ")


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=_UTC)
        return epoch_ms(moment.astimezone(_UTC))
    text = str(value).replace(" ", "T")
    if not text.endswith("Z") and "+" not in text[10:]:
        text += "+00:00"
    return epoch_ms(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(_UTC))


@dataclass(frozen=True, slots=True)
class StoredFeedback:
    """One row of `detector_feedback`."""

    mark: MarkedExpected
    alert_id: str
    reason: str
    inserted_at_ms: int

    @property
    def feedback(self) -> DetectorFeedback:
        return self.mark.feedback

    def public(self) -> dict[str, Any]:
        """What the CLI and the API show."""
        fb = self.feedback
        return {
            "feedback_id": self.mark.feedback_id,
            "signal_id": fb.signal_id,
            "alert_id": self.alert_id,
            "key_id": fb.key_id,
            "project_id": fb.project_id,
            "kind": fb.kind,
            "actor": fb.actor,
            "reason": self.reason,
            "marked_at": format_utc_millis(datetime.fromtimestamp(fb.marked_at_ms / 1000, tz=_UTC)),
            "applies_after": format_utc_millis(datetime.fromtimestamp(self.mark.applies_after_ms / 1000, tz=_UTC)),
        }


_COLUMNS = (
    "feedback_id, project_id, key_id, signal_id, alert_id, kind, window_start, window_end, evidence, actor, "
    "reason, marked_at, applies_after, inserted_at"
)


def _from_row(row: dict[str, Any]) -> StoredFeedback:
    evidence = orjson.loads(row["evidence"] or "{}")
    feedback = DetectorFeedback(
        key_id=row["key_id"],
        project_id=row["project_id"],
        kind=row["kind"],
        signal_id=row["signal_id"],
        window_start_ms=_ms(row["window_start"]),
        window_end_ms=_ms(row["window_end"]),
        evidence={name: tuple(values) for name, values in evidence.items()},
        actor=row["actor"],
        marked_at_ms=_ms(row["marked_at"]),
    )
    mark = MarkedExpected(row["feedback_id"], _ms(row["applies_after"]), feedback)
    return StoredFeedback(mark, row["alert_id"], row["reason"], _ms(row["inserted_at"]))


class FeedbackStore:
    """The `detector_feedback` table (chDB or a server), and the lookups a mark needs."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    def signal(self, signal_id: str, project_id: str | None) -> dict[str, Any] | None:
        """A stored signal by id, only inside `project_id` (None: any project)."""
        try:
            uuid.UUID(signal_id)
        except ValueError:
            return None
        rows = self.backend.query(
            "SELECT toString(signal_id) AS signal_text, key_id, project_id, kind, window_start, window_end, "
            "detected_at, evidence, message FROM signals FINAL WHERE signal_id = {signal_id:UUID} "
            "AND ({project:String} = '' OR project_id = {project:String}) LIMIT 1",
            {"signal_id": signal_id, "project": project_id or ""},
        )
        if not rows:
            return None
        row = dict(rows[0])
        row["signal_id"] = row.pop("signal_text")
        return row

    def newest_event_ms(self, key_id: str) -> int:
        """Event time of the key's newest stored event (0 if none): where a mark made now applies from."""
        rows = self.backend.query(
            "SELECT toUnixTimestamp64Milli(max(occurred_at)) AS newest, count() AS n FROM usage_events "
            "WHERE key_id = {key_id:String}",
            {"key_id": key_id},
        )
        return int(rows[0]["newest"]) if rows and int(rows[0]["n"]) else 0

    def get(self, feedback_id: str) -> StoredFeedback | None:
        rows = self.backend.query(
            f"SELECT {_COLUMNS} FROM detector_feedback FINAL WHERE feedback_id = {{id:String}} LIMIT 1",
            {"id": feedback_id},
        )
        return _from_row(rows[0]) if rows else None

    def save(self, mark: MarkedExpected, alert_id: str, reason: str) -> None:
        fb = mark.feedback
        row = {
            "feedback_id": mark.feedback_id,
            "project_id": fb.project_id,
            "key_id": fb.key_id,
            "signal_id": fb.signal_id,
            "alert_id": alert_id,
            "kind": fb.kind,
            "window_start": _ch_time(fb.window_start_ms),
            "window_end": _ch_time(fb.window_end_ms),
            "evidence": orjson.dumps({k: list(v) for k, v in fb.evidence.items()}).decode(),
            "actor": fb.actor[:200],
            "reason": reason[:1000],
            "marked_at": _ch_time(fb.marked_at_ms),
            "applies_after": _ch_time(mark.applies_after_ms),
        }
        self.backend.insert_json_rows("detector_feedback", orjson.dumps(row))

    def inserted_since(self, since_ms: int) -> list[StoredFeedback]:
        """Rows ClickHouse received at or after `since_ms` (its own clock), oldest first."""
        rows = self.backend.query(
            f"SELECT {_COLUMNS} FROM detector_feedback FINAL "
            "WHERE inserted_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') ORDER BY inserted_at, feedback_id",
            {"since": since_ms},
        )
        return [_from_row(row) for row in rows]

    def for_key(self, key_id: str) -> list[StoredFeedback]:
        rows = self.backend.query(
            f"SELECT {_COLUMNS} FROM detector_feedback FINAL WHERE key_id = {{key_id:String}} "
            "ORDER BY applies_after, feedback_id",
            {"key_id": key_id},
        )
        return [_from_row(row) for row in rows]


# ----------------------------------------------------------------------------- delivery to the core


class FeedbackSource(Protocol):
    """Where new marks come from; each call returns marks not returned before (at least once)."""

    def read_new(self) -> Sequence[MarkedExpected]: ...


class ClickHouseFeedbackSource:
    """New rows of `detector_feedback`, polled at most every `poll_seconds` (0: at every batch)."""

    def __init__(self, backend: ClickHouseBackend, poll_seconds: float = 0.0) -> None:
        self.store = FeedbackStore(backend)
        self.poll_seconds = poll_seconds
        self._newest_ms = -1
        self._seen: set[str] = set()
        self._polled_at = float("-inf")
        self._notified: list[MarkedExpected] = []

    def notify(self, mark: MarkedExpected) -> None:
        """A mark this process just stored: delivered at the next batch without waiting for a poll."""
        if mark.feedback_id not in self._seen:
            self._seen.add(mark.feedback_id)
            self._notified.append(mark)

    def read_new(self) -> list[MarkedExpected]:
        fresh, self._notified = self._notified, []
        now = time.monotonic()
        if now - self._polled_at < self.poll_seconds:
            return fresh
        self._polled_at = now
        since = max(self._newest_ms - READ_SLACK_MS, 0)
        try:
            rows = self.store.inserted_since(since)
        except ClickHouseError as error:  # the batch goes on untaught; the next poll reads from the same point
            log.warning("could not read new marks from detector_feedback (retrying at the next poll): %s",
                        redact_text(str(error).splitlines()[0][:300] if str(error) else type(error).__name__))
            return fresh
        for stored in rows:
            self._newest_ms = max(self._newest_ms, stored.inserted_at_ms)
            if stored.mark.feedback_id not in self._seen:
                self._seen.add(stored.mark.feedback_id)
                fresh.append(stored.mark)
        return fresh


class InMemoryFeedbackSource:
    """Marks handed in by a test or a tool."""

    def __init__(self, marks: Iterable[MarkedExpected] = ()) -> None:
        self._queue = list(marks)

    def add(self, mark: MarkedExpected) -> None:
        self._queue.append(mark)

    def read_new(self) -> list[MarkedExpected]:
        marks, self._queue = self._queue, []
        return marks


class FeedbackApplier:
    """Teaches pending marks to their keys' states at the start of a batch (one call per batch).

    Cost: nothing while no mark is pending (the usual case); otherwise one C-level pass over the
    batch's key ids, and for a batch holding a marked key one Python pass and per such key one state
    read and write.
    """

    def __init__(self, source: FeedbackSource, detectors: Iterable[object], *, owns_every_key: bool = False) -> None:
        self.source = source
        self.owns_every_key = owns_every_key
        """True in-process (embedded): every key's state is this process's, so a mark is taught at once,
        between the key's events so far and its next, without looking at the batch. The worker owns only
        its partitions' keys, so it teaches a key when the key's events are in its batch."""
        self.teacher = FeedbackTeacher(detectors)
        self.pending: dict[str, list[MarkedExpected]] = {}
        self.taught = 0

    def apply(self, events: Sequence[KeyUsageEvent], states: StateMapping) -> int:
        """Teach every pending mark whose key has an event in `events` newer than the mark's point (or, with
        `owns_every_key`, whose key has a state); returns how many marks were taught (or found taught already)."""
        for mark in self.source.read_new():
            if self.teacher.detector_for(mark.feedback.kind) is None:
                continue  # no detector learns from this kind: the mark stays in the audit trail only
            self.pending.setdefault(mark.feedback.key_id, []).append(mark)
        pending = self.pending
        if not pending:
            return 0
        newest: dict[str, int] = {}
        if self.owns_every_key:
            newest = {key_id: _EVER for key_id in pending}
        elif events:
            hits = pending.keys() & set(map(_KEY_ID, events))  # C-level pass; Python only for marked keys' events
            for event in events if hits else ():
                key_id = event.key_id
                if key_id in hits:
                    at = epoch_ms(event.occurred_at)
                    if at > newest.get(key_id, -1):
                        newest[key_id] = at
        applied = 0
        for key_id, at in newest.items():
            state = states.get(key_id)
            if state is None:
                continue  # the key has no history yet: its marks wait for a later batch
            marks = sorted(pending[key_id], key=MarkedExpected.order.fget)  # type: ignore[arg-type]
            due = [mark for mark in marks if mark.applies_after_ms < at]
            if not due:
                continue
            for mark in due:
                self.teacher.teach(state, mark)
            states[key_id] = state
            applied += len(due)
            rest = marks[len(due):]
            if rest:
                pending[key_id] = rest
            else:
                del pending[key_id]
        self.taught += applied
        return applied
