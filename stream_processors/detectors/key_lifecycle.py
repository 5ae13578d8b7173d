"""Idle, never used and expiring soon: one evaluation of a key at a moment, two drivers.

`lifecycle_signals(key, at_ms, thresholds)` says which of the three conditions hold for a key of
the key store at `at_ms`. It is driven
- by the stream's watermark (`LifecycleWatch`, in event time: a backfill or a replay flags a key
  that stopped at the event time it went idle, whatever the wall clock says), and
- by the wall clock in live mode (the alert scanner, `alerting.decide.scan_keys`).

The signal of a condition depends only on the key and the condition's window (idle: from the last
use, N days; never used: from creation, N days; expiring: the N days before expiry), never on
the moment it was evaluated, so both drivers, every batching and every replay give the same
signal with the same id.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from operator import attrgetter

from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors.event_time import DAY_MS, minute_text
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip

_OCCURRED_AT = attrgetter("occurred_at")
_LIFECYCLE_KINDS = frozenset({SignalKind.IDLE, SignalKind.NEVER_USED, SignalKind.EXPIRING_SOON})
LastUsedLookup = Callable[[str], "tuple[int, str] | None"]
"""Key id -> (last use in event time, ms; its client IP), or None if never used."""


@dataclass(frozen=True, slots=True)
class LifecycleThresholds:
    """Days for each condition; None switches it off (the alert rules' values)."""

    idle_days: int | None = 90
    never_used_days: int | None = 30
    expiring_within_days: int | None = 7


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the evaluation needs of a key of the key store (times in epoch ms)."""

    key_id: str
    project_id: str
    active: bool
    """Not revoked or disabled. An expired key counts as active before its expiry: in event time
    (a backfill) it was; from `expires_ms` on, no condition holds for it any more."""
    created_ms: int
    expires_ms: int | None = None
    last_used_ms: int | None = None
    last_used_ip: str = ""

    @classmethod
    def of(cls, record: KeyRecord) -> KeyFacts:
        return cls(
            key_id=record.id,
            project_id=record.project_id,
            active=record.status is KeyStatus.ACTIVE or record.status is KeyStatus.EXPIRED,
            created_ms=epoch_ms(record.created_at),
            expires_ms=epoch_ms(record.expires_at) if record.expires_at is not None else None,
            last_used_ms=epoch_ms(record.last_used_at) if record.last_used_at is not None else None,
            last_used_ip=record.last_used_ip or "",
        )


def lifecycle_signals(key: KeyFacts, at_ms: int, thresholds: LifecycleThresholds) -> list[Signal]:
    """The idle / never-used / expiring-soon signals that hold for `key` at `at_ms` (active keys only)."""
    if not key.active or (key.expires_ms is not None and at_ms >= key.expires_ms):
        return []
    found: list[Signal] = []
    idle, never, expiring = thresholds.idle_days, thresholds.never_used_days, thresholds.expiring_within_days
    if idle is not None and key.last_used_ms is not None and at_ms - key.last_used_ms > idle * DAY_MS:
        found.append(_idle(key, idle))
    if never is not None and key.last_used_ms is None and at_ms - key.created_ms > never * DAY_MS:
        found.append(_never_used(key, never))
    if expiring is not None and key.expires_ms is not None and at_ms < key.expires_ms <= at_ms + expiring * DAY_MS:
        found.append(_expiring(key, expiring))
    return found


def next_deadline(key: KeyFacts, thresholds: LifecycleThresholds) -> int | None:
    """The first moment (ms) at which one of the key's conditions can start to hold."""
    if not key.active:
        return None
    moments = []
    if thresholds.idle_days is not None and key.last_used_ms is not None:
        moments.append(key.last_used_ms + thresholds.idle_days * DAY_MS + 1)
    if thresholds.never_used_days is not None and key.last_used_ms is None:
        moments.append(key.created_ms + thresholds.never_used_days * DAY_MS + 1)
    if thresholds.expiring_within_days is not None and key.expires_ms is not None:
        moments.append(key.expires_ms - thresholds.expiring_within_days * DAY_MS)
    return min(moments) if moments else None


def _idle(key: KeyFacts, days: int) -> Signal:
    since = key.last_used_ms or 0
    where = f" from {clip(key.last_used_ip, 64)}" if key.last_used_ip else ""
    return build_signal(
        key_id=key.key_id,
        project_id=key.project_id,
        kind=SignalKind.IDLE,
        severity=Severity.LOW,
        score=1.0,
        observed=0.0,
        expected=1.0,
        window_start_ms=since,
        window_ms=days * DAY_MS,
        detected_at_ms=since + days * DAY_MS,
        evidence={"last_used_at": [minute_text(since)], "ips": [key.last_used_ip] if key.last_used_ip else []},
        message=(
            f"Key {key.key_id} has not been used for {days} days: last used {minute_text(since)}{where}, "
            f"idle since {minute_text(since + days * DAY_MS)} (event time; the threshold is {days} days). "
            "An unused key is attack surface: revoke it if nobody needs it."
        ),
    )


def _never_used(key: KeyFacts, days: int) -> Signal:
    return build_signal(
        key_id=key.key_id,
        project_id=key.project_id,
        kind=SignalKind.NEVER_USED,
        severity=Severity.LOW,
        score=1.0,
        observed=0.0,
        expected=1.0,
        window_start_ms=key.created_ms,
        window_ms=days * DAY_MS,
        detected_at_ms=key.created_ms + days * DAY_MS,
        evidence={"created_at": [minute_text(key.created_ms)]},
        message=(
            f"Key {key.key_id} was created {minute_text(key.created_ms)} and not used in the {days} days "
            f"that followed (event time; the threshold is {days} days). Revoke it if it is not needed."
        ),
    )


def _expiring(key: KeyFacts, days: int) -> Signal:
    expires = key.expires_ms or 0
    return build_signal(
        key_id=key.key_id,
        project_id=key.project_id,
        kind=SignalKind.EXPIRING_SOON,
        severity=Severity.MEDIUM,
        score=1.0,
        observed=float(days),
        expected=float(days),
        window_start_ms=expires - days * DAY_MS,
        window_ms=days * DAY_MS,
        detected_at_ms=expires - days * DAY_MS,
        evidence={"expires_at": [minute_text(expires)]},
        message=(
            f"Key {key.key_id} expires at {minute_text(expires)}, within {days} days. Renew it "
            f"(`keytrail keys renew {key.key_id}`) or rotate callers to a new key before then."
        ),
    )


class LifecycleWatch:
    """The watermark driver: the key store's keys ordered by their next deadline (a heap).

    `advance(watermark_ms, last_used)` evaluates only the keys whose deadline the watermark has
    passed (per due key, never per key of the store), with their last use in event time from
    the stream's state. A condition's signal is raised once per process; `load` (a fresh read of
    the key store: new keys, renewals, revocations) keeps what was raised.
    """

    def __init__(self, thresholds: LifecycleThresholds | None = None) -> None:
        self.thresholds = thresholds or LifecycleThresholds()
        self.keys: dict[str, KeyFacts] = {}
        self._heap: list[tuple[int, str]] = []
        self._due_at: dict[str, int] = {}
        self._raised: set[str] = set()

    def load(self, keys: Iterable[KeyFacts]) -> None:
        """Replace the known keys (O(keys): on start and when the key store changed)."""
        self.keys = {key.key_id: key for key in keys}
        self._heap, self._due_at = [], {}
        for key in self.keys.values():
            self._schedule(key)

    def remember(self, signal_ids: Iterable[str]) -> None:
        """Signals raised before (by an earlier run, from the signal store): not raised again."""
        self._raised.update(signal_ids)

    def admit(self, signals: Iterable[Signal]) -> list[Signal]:
        """A batch's signals without the lifecycle ones raised already (the watermark flagged a key
        idle, then its events showed the same silence ending: one signal, not two)."""
        kept = []
        for signal in signals:
            if signal.kind in _LIFECYCLE_KINDS:
                if signal.signal_id in self._raised:
                    continue
                self._raised.add(signal.signal_id)
            kept.append(signal)
        return kept

    def used(self, key_id: str, last_used_ms: int) -> None:
        """The stream saw the key used: it may now go idle (it had no idle deadline before)."""
        key = self.keys.get(key_id)
        if key is not None and key_id not in self._due_at:
            self._schedule(replace(key, last_used_ms=last_used_ms))

    def advance(self, watermark_ms: int, last_used: LastUsedLookup) -> list[Signal]:
        """Signals of the keys whose deadline is at or before `watermark_ms`.

        Each key is evaluated at its deadline, the event time the watermark passed it: a batch
        that moves the watermark by days (a backfill) still sees a seven-day expiry window it
        jumped over, and the outcome does not depend on how the stream was cut into batches.
        """
        heap, due_at = self._heap, self._due_at
        found: list[Signal] = []
        while heap and heap[0][0] <= watermark_ms:
            deadline, key_id = heapq.heappop(heap)
            if due_at.get(key_id) != deadline:
                continue
            del due_at[key_id]
            key = self.keys[key_id]
            seen = last_used(key_id)
            if seen is not None and (key.last_used_ms is None or seen[0] > key.last_used_ms):
                key = replace(key, last_used_ms=seen[0], last_used_ip=seen[1])
            self.keys[key_id] = key
            for signal in lifecycle_signals(key, deadline, self.thresholds):
                if signal.signal_id not in self._raised:
                    self._raised.add(signal.signal_id)
                    found.append(signal)
            self._schedule(key, after=deadline)
        return found

    def _schedule(self, key: KeyFacts, after: int | None = None) -> None:
        deadline = next_deadline(key, self.thresholds)
        if deadline is None:
            return
        if after is not None and deadline <= after:
            deadline = self._later_deadline(key, after)
            if deadline is None:
                return
        self._due_at[key.key_id] = deadline
        heapq.heappush(self._heap, (deadline, key.key_id))

    def _later_deadline(self, key: KeyFacts, after: int) -> int | None:
        """After an evaluation at `after`: the next deadline still ahead (expiry's end, a later idle)."""
        moments = []
        th = self.thresholds
        if th.idle_days is not None and key.last_used_ms is not None:
            moment = key.last_used_ms + th.idle_days * DAY_MS + 1
            if moment > after:
                moments.append(moment)
        if th.never_used_days is not None and key.last_used_ms is None:
            moment = key.created_ms + th.never_used_days * DAY_MS + 1
            if moment > after:
                moments.append(moment)
        if th.expiring_within_days is not None and key.expires_ms is not None:
            moment = key.expires_ms - th.expiring_within_days * DAY_MS
            if moment > after:
                moments.append(moment)
        return min(moments) if moments else None


class IdleGapDetector:
    """Idle periods that ended: a key used again more than `idle_days` after its previous use.

    The watermark flags a key that is idle now; this detector, from the key's own events, flags a
    silence that the key's next use ended, with the same signal (same id, same words). Together
    they make "was this key idle for N days" a fact of the key's events alone: however the stream
    was cut into batches, and in a replay that reads one key at a time, the answer is the same.
    Memory: `l` newest use (ms) and `i` its client IP (~40 bytes).
    """

    name = "idle_gap"

    def __init__(self, thresholds: LifecycleThresholds | None = None) -> None:
        days = (thresholds or LifecycleThresholds()).idle_days
        self._days = days
        self._idle_ms = days * DAY_MS if days is not None else None

    def observe(self, key_id, state, events, closed_minutes):  # noqa: ANN001 - the Detector protocol
        if not events or self._idle_ms is None:
            return []
        memory = state.detector_state.setdefault(self.name, {})
        last, ip = memory.get("l", -1), memory.get("i", "")
        latest = max(events, key=_OCCURRED_AT)  # C-level passes; Python per event only on the rare slow path
        newest = epoch_ms(latest.occurred_at)
        floor = last if last >= 0 else epoch_ms(min(events, key=_OCCURRED_AT).occurred_at)
        signals: list[Signal] = []
        if newest - floor > self._idle_ms:  # some silence in or before the batch reached the threshold
            times = [epoch_ms(event.occurred_at) for event in events]
            # Ties in time: the larger event id is the newest, as the core's last used has it.
            for at_ms, event in sorted(zip(times, events, strict=True), key=lambda pair: (pair[0], str(pair[1].event_id))):
                if at_ms < last:
                    continue
                if last >= 0 and at_ms - last > self._idle_ms:
                    key = KeyFacts(key_id, state.project_id, True, 0, last_used_ms=last, last_used_ip=ip)
                    signals.append(_idle(key, self._days))
                last, ip = at_ms, event.client_ip
        elif newest > last:
            last, ip = newest, latest.client_ip
        memory["l"], memory["i"] = last, ip
        return signals
