"""Grouping encoded usage events per partition into UsageEnvelope v1 records (pure: no Kafka, no I/O).

`EnvelopePacker` keeps one open envelope per partition of `keytrail.usage.v1`. An event goes to
the partition `partition_for(key_id, partitions)` (Java-compatible murmur2, the one partitioner
of the topic), so every event of an envelope belongs to the envelope's partition and a key's
events stay in their order. An envelope closes when it holds `max_events` events, when one more
event would take its JSON past `max_bytes`, or, on `due(now)`, when its first event has waited
`linger` seconds; whichever comes first. Time is whatever clock the caller passes in (the emitter
passes `time.monotonic()`; tests pass counters), so linger is testable without waiting.

`pack(records, partitions)` groups a finite run of events at once (spool replay) with the same
limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from keytrail.schemas.envelope import (
    ENVELOPE_PREFIX,
    ENVELOPE_SUFFIX,
    MAX_ENVELOPE_BYTES,
    MAX_ENVELOPE_EVENTS,
    encode_envelope,
    envelope_headers,
)
from keytrail.schemas.partitioning import partition_for

EventRecord = tuple[bytes, bytes]
"""`(key_id bytes, contract JSON bytes)` of one encoded event, as the encoder and the spool hold it."""

_FRAME: Final = len(ENVELOPE_PREFIX) + len(ENVELOPE_SUFFIX)
_CACHE_LIMIT: Final = 65_536


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Kafka record of up to `max_events` events of one partition, ready to produce."""

    partition: int
    key: bytes
    """The first event's `key_id` (the record key)."""
    value: bytes
    """The envelope's JSON (`encode_envelope` of the events)."""
    events: list[EventRecord]
    """The events it carries, in order: what is spooled or counted if the record fails."""

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return envelope_headers(len(self.events))


def envelope_of(partition: int, events: list[EventRecord]) -> Envelope:
    """The record of `events` (all of `partition`, at least one)."""
    return Envelope(partition, events[0][0], encode_envelope([value for _, value in events]), events)


class _Open:
    """The open envelope of one partition."""

    __slots__ = ("events", "size", "since")

    def __init__(self, since: float) -> None:
        self.events: list[EventRecord] = []
        self.size = _FRAME - 1  # no comma before the first event
        self.since = since


class EnvelopePacker:
    """Open envelopes per partition; see the module docstring. Not thread safe: one thread feeds it."""

    def __init__(
        self,
        partitions: int,
        *,
        max_events: int = MAX_ENVELOPE_EVENTS,
        max_bytes: int = MAX_ENVELOPE_BYTES,
        linger: float = 0.05,
    ) -> None:
        if not 1 <= max_events <= MAX_ENVELOPE_EVENTS:
            raise ValueError(f"max_events must be between 1 and {MAX_ENVELOPE_EVENTS}")
        if not _FRAME < max_bytes <= MAX_ENVELOPE_BYTES:
            raise ValueError(f"max_bytes must be above {_FRAME} and at most {MAX_ENVELOPE_BYTES}")
        if linger < 0:
            raise ValueError("linger must not be negative")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.linger = linger
        self._partitions = 0
        self._of_key: dict[bytes, int] = {}
        self._open: dict[int, _Open] = {}
        self._count = 0
        self.set_partitions(partitions)

    @property
    def partitions(self) -> int:
        return self._partitions

    def set_partitions(self, partitions: int) -> list[Envelope]:
        """Use a new partition count for the events that follow; returns the envelopes still open
        (they were grouped under the old count and must go first, so a key's order holds)."""
        if partitions < 1:
            raise ValueError("a topic has at least one partition")
        if partitions == self._partitions:
            return []
        closed = self.close_all()
        self._partitions = partitions
        self._of_key.clear()
        return closed

    def __len__(self) -> int:
        """Events in open envelopes."""
        return self._count

    def partition_of(self, key: bytes) -> int:
        """The partition of an event's `key_id` bytes (remembered, bounded)."""
        try:
            return self._of_key[key]
        except KeyError:
            if len(self._of_key) >= _CACHE_LIMIT:
                self._of_key.clear()
            partition = self._of_key[key] = partition_for(key.decode(), self._partitions)
            return partition

    def add(self, records: Iterable[EventRecord], now: float) -> list[Envelope]:
        """Put events in their partitions' open envelopes; returns the envelopes that filled up
        (by count or by size), in the order they closed."""
        closed: list[Envelope] = []
        of_key = self._of_key
        opened = self._open
        max_events, max_bytes = self.max_events, self.max_bytes
        added = 0
        for record in records:
            key = record[0]
            try:
                partition = of_key[key]
            except KeyError:
                partition = self.partition_of(key)
            envelope = opened.get(partition)
            if envelope is None:
                envelope = opened[partition] = _Open(now)
            size = envelope.size + 1 + len(record[1])
            if size > max_bytes and envelope.events:
                closed.append(envelope_of(partition, envelope.events))
                self._count -= len(envelope.events)
                envelope = opened[partition] = _Open(now)
                size = envelope.size + 1 + len(record[1])
            envelope.events.append(record)
            envelope.size = size
            added += 1
            if len(envelope.events) >= max_events:
                closed.append(envelope_of(partition, envelope.events))
                self._count -= len(envelope.events)
                del opened[partition]
        self._count += added
        return closed

    def due(self, now: float) -> list[Envelope]:
        """Close the envelopes whose first event has waited `linger` (or longer) at `now`."""
        ripe = [p for p, envelope in self._open.items() if now - envelope.since >= self.linger]
        return [self._close(p) for p in ripe]

    def close_all(self) -> list[Envelope]:
        """Close every open envelope (flush, close, a partition count change)."""
        return [self._close(p) for p in list(self._open)]

    def take_events(self) -> list[EventRecord]:
        """Remove every buffered event without building envelopes (they go to the spool). Each
        partition's events stay in order, so each key's do."""
        events = [record for envelope in self._open.values() for record in envelope.events]
        self._open.clear()
        self._count = 0
        return events

    def _close(self, partition: int) -> Envelope:
        envelope = self._open.pop(partition)
        self._count -= len(envelope.events)
        return envelope_of(partition, envelope.events)


def pack(
    records: Sequence[EventRecord],
    partitions: int,
    *,
    max_events: int = MAX_ENVELOPE_EVENTS,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> list[Envelope]:
    """All of `records` as envelopes (per partition, in order, within the limits)."""
    packer = EnvelopePacker(partitions, max_events=max_events, max_bytes=max_bytes, linger=0.0)
    return packer.add(records, 0.0) + packer.close_all()
