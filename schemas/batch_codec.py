"""Decoding of whole Kafka batches: single-event records and UsageEnvelopes, mixed.

The stream worker and the embedded ingest hand this module (payload, partition, offset)
triples; it returns the valid events in order with their positions, and every refused event
with its reason, its record's position and, inside an envelope, its index. Each event of an
envelope is judged on its own: one bad event never costs its neighbours.

Cost is per envelope, not per event, wherever the work allows: one msgspec decode of the whole
envelope into typed structs (C), then the model's remaining checks over columns: the key-id
rule once per distinct key id, IP canonicalisation once per distinct address, the time checks
as a few list passes. Only an event that fails a check (or an envelope that fails the typed
decode) is looked at alone, by the same `decode_usage_event` a single record gets, so the
reasons are the same whichever way an event travelled.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Annotated, Any, Literal

import msgspec

from keytrail.schemas.codec import MAX_EVENT_BYTES, InvalidEvent, UsageEvent, decode_usage_event
from keytrail.schemas.envelope import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_EVENTS
from keytrail.schemas.secrets import identifier_holds_secret
from keytrail.schemas.usage import _MAX_FUTURE_SKEW_S, normalise_ip
from keytrail.schemas.usage_fast import FastUsageEvent

_ENVELOPE_MARK = b'"envelope_version"'


class LooseUsageEvent(FastUsageEvent, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """FastUsageEvent with the three regex-checked fields decoded by length only.

    msgspec runs a field's pattern on every event, which was 60 % of decoding; key ids,
    project ids and methods repeat across a batch, so `_column_suspects` checks the same
    patterns once per distinct value instead. Instances are FastUsageEvents (same fields,
    same methods); only events that pass those checks leave this module.
    """

    key_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    project_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    method: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


_IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*\Z")
_METHOD_PATTERN = re.compile(r"^[A-Z]+\Z")


class _TypedEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    envelope_version: Literal[1]
    events: Annotated[list[LooseUsageEvent], msgspec.Meta(min_length=1, max_length=MAX_ENVELOPE_EVENTS)]


class _RawEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    envelope_version: Literal[1]
    events: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_ENVELOPE_EVENTS)]


_typed_envelope = msgspec.json.Decoder(_TypedEnvelope)
_raw_envelope = msgspec.json.Decoder(_RawEnvelope)
_replace = msgspec.structs.replace


@dataclass(frozen=True, slots=True)
class Rejected:
    """One refused event (or a whole record that is not even an envelope)."""

    payload: bytes
    """The event's own bytes (the record's, when the record itself is refused)."""
    reason: str
    code: str
    partition: int
    offset: int
    index: int | None = None
    """Position of the event inside its envelope; None for a single-event record."""


@dataclass(slots=True)
class DecodedBatch:
    """Valid events in record order (envelope order inside a record), their positions, the refused."""

    events: list[UsageEvent] = field(default_factory=list)
    positions: list[tuple[int, int]] = field(default_factory=list)
    """(partition, offset) of each event's record; the events of one envelope share it."""
    indexes: list[int | None] = field(default_factory=list)
    """Each event's position inside its envelope (None for a single-event record), for the DLQ."""
    rejected: list[Rejected] = field(default_factory=list)
    records: int = 0
    envelopes: int = 0


def is_envelope(payload: bytes, header: bool | None = None) -> bool:
    """Whether a record carries an envelope: its header says so, or its JSON starts with the version."""
    if header is not None:
        return header
    return _ENVELOPE_MARK in payload[:48]


def decode_batch(records: Iterable[tuple[bytes, int, int]], envelope_flags: Iterable[bool | None] | None = None,
                 ) -> DecodedBatch:
    """Decode (payload, partition, offset) records, single events and envelopes mixed."""
    batch = DecodedBatch()
    flags = iter(envelope_flags) if envelope_flags is not None else None
    pending: list[FastUsageEvent] = []
    pending_positions: list[tuple[int, int]] = []
    pending_sources: list[tuple[bytes, int | None, int | None]] = []
    for payload, partition, offset in records:
        batch.records += 1
        flag = next(flags) if flags is not None else None
        if not payload:
            batch.rejected.append(Rejected(b"", "empty payload", "empty_payload", partition, offset))
            continue
        if is_envelope(payload, flag):
            batch.envelopes += 1
            _decode_envelope(payload, partition, offset, batch, pending, pending_positions, pending_sources)
            continue
        try:
            event = decode_usage_event(payload)
        except InvalidEvent as invalid:
            batch.rejected.append(Rejected(payload, invalid.reason, invalid.code, partition, offset))
            continue
        pending.append(event)  # type: ignore[arg-type]  # already checked: passes the column checks
        pending_positions.append((partition, offset))
        pending_sources.append((payload, None, None))
    _finish(batch, pending, pending_positions, pending_sources)
    return batch


def _decode_envelope(payload: bytes, partition: int, offset: int, batch: DecodedBatch,
                     pending: list[Any], positions: list[tuple[int, int]],
                     sources: list[tuple[bytes, int | None, int | None]]) -> None:
    if len(payload) > MAX_ENVELOPE_BYTES:
        batch.rejected.append(Rejected(
            b"", f"envelope of {len(payload)} bytes exceeds {MAX_ENVELOPE_BYTES}", "oversize_envelope",
            partition, offset))
        return
    try:
        envelope = _typed_envelope.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        envelope = None
    if envelope is not None:
        pending.extend(envelope.events)
        positions.extend([(partition, offset)] * len(envelope.events))
        sources.extend([(payload, i, i) for i in range(len(envelope.events))])
        return
    # Some event is bad (or lax): judge each on its own.
    try:
        raw = _raw_envelope.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        batch.rejected.append(Rejected(
            payload[:MAX_EVENT_BYTES], f"not a UsageEnvelope v1: {_short(exc)}", "bad_envelope", partition, offset))
        return
    for index, item in enumerate(raw.events):
        event_bytes = bytes(item)
        try:
            event = decode_usage_event(event_bytes)
        except InvalidEvent as invalid:
            batch.rejected.append(Rejected(event_bytes, invalid.reason, invalid.code, partition, offset, index))
            continue
        pending.append(event)
        positions.append((partition, offset))
        sources.append((event_bytes, None, index))


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _finish(batch: DecodedBatch, events: list[Any], positions: list[tuple[int, int]],
            sources: list[tuple[bytes, int | None, int | None]]) -> None:
    """The model's checks msgspec cannot make, over the batch; failures judged one by one."""
    suspects = _column_suspects(events)
    if not suspects:
        batch.events = events
        batch.positions = positions
        batch.indexes = [source[2] for source in sources]
        return
    keep_events: list[Any] = []
    keep_positions: list[tuple[int, int]] = []
    keep_indexes: list[int | None] = []
    for i, event in enumerate(events):
        fixed = suspects.get(i, event)
        if fixed is _TOO_OLD:
            source, lazy, index = sources[i]
            event_bytes = source if lazy is None else bytes(_raw_envelope.decode(source).events[lazy])
            partition, offset = positions[i]
            batch.rejected.append(Rejected(event_bytes, TOO_OLD_REASON, "beyond_retention", partition, offset, index))
            continue
        if fixed is not _SUSPECT:
            keep_events.append(fixed)
            keep_positions.append(positions[i])
            keep_indexes.append(sources[i][2])
            continue
        source, lazy, index = sources[i]
        event_bytes = source if lazy is None else bytes(_raw_envelope.decode(source).events[lazy])
        partition, offset = positions[i]
        try:
            judged = decode_usage_event(event_bytes)
        except InvalidEvent as invalid:
            batch.rejected.append(Rejected(event_bytes, invalid.reason, invalid.code, partition, offset, index))
            continue
        keep_events.append(judged)
        keep_positions.append(positions[i])
        keep_indexes.append(index)
    batch.events = keep_events
    batch.positions = keep_positions
    batch.indexes = keep_indexes


_SUSPECT: Any = object()
_TOO_OLD: Any = object()

RETENTION_DAYS = 400
"""How long the audit trail keeps an event (the TTL of `usage_events`, sql/clickhouse/0001). An
event older than that could be counted but never stored, so it is refused with its reason
instead: every accepted event is in the audit trail, however late."""
TOO_OLD_REASON = (f"occurred_at is more than {RETENTION_DAYS} days ago, beyond what the audit trail keeps; "
                  "events that old are not accepted")


def _identifier_refused(value: str) -> bool:
    """The contract's rule for key and project ids: not shaped like a secret, in any position."""
    return identifier_holds_secret(value)


def _column_suspects(events: list[Any]) -> dict[int, Any]:
    """Rows needing attention: index -> the event corrected (UTC, whole ms, canonical IP) or _SUSPECT."""
    out: dict[int, Any] = {}
    if not events:
        return out
    identifier_ok = _IDENTIFIER_PATTERN.match
    refused_keys = {k for k in {e.key_id for e in events} if not identifier_ok(k) or _identifier_refused(k)}
    refused_projects = {p for p in {e.project_id for e in events} if not identifier_ok(p) or _identifier_refused(p)}
    refused_methods = {m for m in {e.method for e in events} if not _METHOD_PATTERN.match(m)}
    if refused_projects or refused_methods:
        for i, event in enumerate(events):
            if event.project_id in refused_projects or event.method in refused_methods:
                out[i] = _SUSPECT
    ips = {ip: normalise_ip(ip) for ip in {e.client_ip for e in events}}
    odd_ips = {ip for ip, canonical in ips.items() if canonical != ip}
    horizon = time.time() + _MAX_FUTURE_SKEW_S
    for i, event in enumerate(events):
        moment = event.occurred_at
        if (moment.tzinfo is UTC and not moment.microsecond % 1000 and event.client_ip not in odd_ips
                and event.key_id not in refused_keys):
            continue
        if i in out:
            continue
        if event.key_id in refused_keys or ips.get(event.client_ip, "") is None or moment.utcoffset() is None:
            out[i] = _SUSPECT
            continue
        moment = moment.astimezone(UTC)
        moment = moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)
        out[i] = _replace(event, occurred_at=moment, client_ip=ips[event.client_ip]) \
            if isinstance(event, FastUsageEvent) else event
    stamps = [e.occurred_at.timestamp() for e in events]
    oldest_kept = time.time() - RETENTION_DAYS * 86_400
    if max(stamps) > horizon or min(stamps) < oldest_kept:
        for i, stamp in enumerate(stamps):
            if stamp > horizon:
                out[i] = _SUSPECT
            elif stamp < oldest_kept:
                out[i] = _TOO_OLD
    return out


_typed_list = msgspec.json.Decoder(list[LooseUsageEvent])
_LINE_CHUNK = 500


def decode_lines(lines: list[bytes], numbers: list[int]) -> DecodedBatch:
    """Decode JSON Lines of single events (file or stdin ingest) as a batch.

    Lines go to msgspec 500 at a time as one JSON array (one C call per chunk); a chunk with a
    bad or lax line is decoded line by line, so each line gets its own verdict and reason.
    Positions are (0, line number); a rejected line's `offset` is its line number.
    """
    batch = DecodedBatch()
    pending: list[Any] = []
    positions: list[tuple[int, int]] = []
    sources: list[tuple[bytes, int | None, int | None]] = []
    for start in range(0, len(lines), _LINE_CHUNK):
        chunk = lines[start : start + _LINE_CHUNK]
        chunk_numbers = numbers[start : start + _LINE_CHUNK]
        batch.records += len(chunk)
        events = None
        if all(len(line) <= MAX_EVENT_BYTES for line in chunk):
            try:
                events = _typed_list.decode(b"[" + b",".join(chunk) + b"]")
            except (msgspec.ValidationError, msgspec.DecodeError):
                events = None
        if events is not None and len(events) == len(chunk):
            pending.extend(events)
            positions.extend((0, number) for number in chunk_numbers)
            sources.extend((line, None, None) for line in chunk)
            continue
        for line, number in zip(chunk, chunk_numbers, strict=True):
            try:
                event = decode_usage_event(line)
            except InvalidEvent as invalid:
                batch.rejected.append(Rejected(line, invalid.reason, invalid.code, 0, number))
                continue
            pending.append(event)
            positions.append((0, number))
            sources.append((line, None, None))
    _finish(batch, pending, positions, sources)
    return batch
