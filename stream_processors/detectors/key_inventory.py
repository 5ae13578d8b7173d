"""Idle, never-used and expiring-soon keys, judged at a moment of event time (pure, deterministic).

One evaluation, two drivers: the ingest calls it with its watermark (so a backfill or a replay flags
a key idle at the event time it went idle, and replaying gives the same signals), and the alert
scanner calls it with the wall clock in live mode. Every key of the key store is judged, including
keys that never sent an event.

A signal's id depends only on the key, the kind and the start of the condition (the last use, the
creation, the expiry), so a condition seen again by a later evaluation is the same signal, and a
new one (used again then idle again, renewed then expiring again) is a new signal. `detected_at` is
the event-time moment the condition began to hold, not the moment of the evaluation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors.event_time import DAY_MS, HOUR_MS, iso_text
from keytrail.stream_processors.detectors.signal_builder import build_signal
from keytrail.stream_processors.detectors.wording import plural


@dataclass(frozen=True, slots=True)
class InventoryThresholds:
    """None switches a kind off. The defaults are the alert rules' defaults."""

    idle_days: int | None = 90
    never_used_days: int | None = 30
    expiring_within_days: int | None = 7

    @classmethod
    def from_rules(cls, rules: object) -> InventoryThresholds:
        """From an `AlertRules` (or anything with the same three attributes)."""
        return cls(rules.idle_days, rules.never_used_days, rules.expiring_within_days)  # type: ignore[attr-defined]


def _ms(value: int | datetime | None) -> int | None:
    if value is None:
        return None
    return value if isinstance(value, int) else epoch_ms(value)


def last_use_ms(key: KeyRecord, last_used_by_key: Mapping[str, int | datetime | None]) -> int | None:
    """The newest use known: the stream's (event time) or the key store's, whichever is later."""
    stored, streamed = _ms(key.last_used_at), _ms(last_used_by_key.get(key.id))
    if stored is None:
        return streamed
    return stored if streamed is None else max(stored, streamed)


def evaluate_inventory(
    keys: Iterable[KeyRecord],
    last_used_by_key: Mapping[str, int | datetime | None],
    now_ms: int,
    already_signalled: Collection[str] = (),
    thresholds: InventoryThresholds | None = None,
) -> list[Signal]:
    """The idle, never-used and expiring-soon signals of `keys` at `now_ms` (event time, ms).

    `last_used_by_key` holds the stream's last use per key id (ms or datetime; missing = none seen).
    Signals whose id is in `already_signalled` are left out (the caller's memory of what it emitted).
    Only active keys that existed at `now_ms` are judged.
    """
    limits = thresholds or InventoryThresholds()
    found: list[Signal] = []
    for key in keys:
        if key.status is not KeyStatus.ACTIVE:
            continue
        created = epoch_ms(key.created_at)
        if created > now_ms:
            continue  # the key did not exist yet at this moment of event time
        last = last_use_ms(key, last_used_by_key)
        for signal in (_idle(key, last, now_ms, limits), _never_used(key, last, created, now_ms, limits),
                       _expiring(key, created, now_ms, limits)):
            if signal is not None and signal.signal_id not in already_signalled:
                found.append(signal)
    return found


def _name(key: KeyRecord) -> str:
    return f"Key {key.id} ({key.name})" if key.name else f"Key {key.id}"


def _idle(key: KeyRecord, last: int | None, now_ms: int, limits: InventoryThresholds) -> Signal | None:
    if limits.idle_days is None or last is None or last > now_ms:
        return None
    threshold_ms = limits.idle_days * DAY_MS
    if now_ms - last <= threshold_ms:
        return None
    idle_days = (now_ms - last) // DAY_MS
    ip = key.last_used_ip if key.last_used_at is not None and epoch_ms(key.last_used_at) == last else None
    message = (
        f"{_name(key)} has not been used for {plural(idle_days, 'day')} as of {iso_text(now_ms)} "
        f"(last used {iso_text(last)}{f' from {ip}' if ip else ''}), past the idle threshold of "
        f"{plural(limits.idle_days, 'day')} since {iso_text(last + threshold_ms)}; an unused key is attack "
        "surface: revoke it if nobody needs it."
    )
    return build_signal(
        key_id=key.id, project_id=key.project_id, kind=SignalKind.IDLE, severity=Severity.LOW,
        score=idle_days / limits.idle_days, observed=float(idle_days), expected=float(limits.idle_days),
        window_start_ms=last, window_ms=threshold_ms, detected_at_ms=last + threshold_ms,
        evidence={"last_used_at": [iso_text(last)], "ips": [ip] if ip else [], "idle_days": [str(idle_days)],
                  "idle_since": [iso_text(last + threshold_ms)]},
        message=message,
    )


def _never_used(key: KeyRecord, last: int | None, created: int, now_ms: int,
                limits: InventoryThresholds) -> Signal | None:
    if limits.never_used_days is None or last is not None:
        return None
    threshold_ms = limits.never_used_days * DAY_MS
    if now_ms - created <= threshold_ms:
        return None
    age = (now_ms - created) // DAY_MS
    message = (
        f"{_name(key)} was created {plural(age, 'day')} before {iso_text(now_ms)} (at {iso_text(created)}) and has "
        f"never been used, past the threshold of {plural(limits.never_used_days, 'day')} since "
        f"{iso_text(created + threshold_ms)}; revoke it if it is not needed."
    )
    return build_signal(
        key_id=key.id, project_id=key.project_id, kind=SignalKind.NEVER_USED, severity=Severity.LOW,
        score=age / limits.never_used_days, observed=float(age), expected=float(limits.never_used_days),
        window_start_ms=created, window_ms=threshold_ms, detected_at_ms=created + threshold_ms,
        evidence={"created_at": [iso_text(created)], "age_days": [str(age)]},
        message=message,
    )


def _expiring(key: KeyRecord, created: int, now_ms: int, limits: InventoryThresholds) -> Signal | None:
    if limits.expiring_within_days is None or key.expires_at is None:
        return None
    expires = epoch_ms(key.expires_at)
    window_ms = limits.expiring_within_days * DAY_MS
    if not now_ms < expires <= now_ms + window_ms:
        return None
    left = expires - now_ms
    message = (
        f"{_name(key)} expires at {iso_text(expires)}, in {plural(left // DAY_MS, 'day')} "
        f"{plural(left % DAY_MS // HOUR_MS, 'hour')} from {iso_text(now_ms)} (warning window "
        f"{plural(limits.expiring_within_days, 'day')}); renew it (`keytrail keys renew {key.id}`) or rotate "
        "callers to a new key before then."
    )
    start = expires - window_ms
    return build_signal(
        key_id=key.id, project_id=key.project_id, kind=SignalKind.EXPIRING_SOON, severity=Severity.MEDIUM,
        score=1.0 - left / window_ms if window_ms else 1.0, observed=left / DAY_MS,
        expected=float(limits.expiring_within_days), window_start_ms=start, window_ms=window_ms,
        detected_at_ms=max(start, created), evidence={"expires_at": [iso_text(expires)]},
        message=message,
    )
