"""A bounded, append-only, on-disk FIFO of `(key, value)` records: where events wait while the
destination (Kafka broker, console) is unreachable.

Layout of a spool directory (one process at a time: an exclusive `flock` on `.lock`):

- `NNNNNNNNNNNNNNNN.seg`: segment files, read in numeric order. Each record is
  `<u32 payload length><u32 CRC-32 of payload><payload>` where payload is
  `<u16 key length><key><value>`, little-endian. Records never span segments.
- `cursor`: JSON `{"segment": n, "offset": bytes}`, the first record not yet delivered.
  Segments before it are deleted once committed.

Durability (`fsync` policy): appends go to an in-memory buffer written to the OS by `flush()`,
which the owning emitter calls every `flush_interval` (50 ms by default) and whenever the buffer
passes `buffer_bytes`. With `fsync="interval"` (default) the data is also fsynced every
`fsync_interval` seconds and on segment rotation and close: a crash of the process loses at most
the last flush interval of spooled events, a crash of the machine at most the last fsync interval.
`fsync="always"` fsyncs on every flush; `fsync="never"` leaves it to the OS.

Bound: `max_bytes` counts every undelivered byte (files and buffer). An append that would pass it
is refused (the caller counts and logs the loss). A torn record at the end of a segment (a crash
mid-write) is cut off when the spool is opened, with a warning.

Reading is two-phase: `read()` returns the oldest records without removing them, `commit()`
removes them once they are delivered. A failed delivery just reads the same records again, so
replay is at least once and in order.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

log = logging.getLogger(__name__)

FsyncPolicy = Literal["interval", "always", "never"]

_HEADER = struct.Struct("<II")
_KEY_LENGTH = struct.Struct("<H")
_OVERHEAD = _HEADER.size + _KEY_LENGTH.size
_FIRST_SEGMENT = 10**12
_SUFFIX = ".seg"
_READ_CHUNK = 1 << 20

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024


class SpoolError(RuntimeError):
    """The spool directory cannot be used (already owned by another process, not writable)."""


def record_size(key: bytes, value: bytes) -> int:
    """Bytes one record takes on disk."""
    return _OVERHEAD + len(key) + len(value)


def encode_record(key: bytes, value: bytes) -> bytes:
    """One record in the segment format."""
    payload = _KEY_LENGTH.pack(len(key)) + key + value
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """The oldest undelivered records, and where the spool stands once they are committed."""

    records: list[tuple[bytes, bytes]]
    end_segment: int
    end_offset: int
    size: int
    finished_segments: list[int] = field(default_factory=list)
    generation: int = 0

    def __len__(self) -> int:
        return len(self.records)


class DiskSpool:
    """The spool in `directory`; see the module docstring for format, durability and bounds."""

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
        buffer_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        if fsync not in ("interval", "always", "never"):
            raise ValueError("fsync must be 'interval', 'always' or 'never'")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.buffer_bytes = buffer_bytes
        self._lock = threading.Lock()  # buffer, counts, segment list, cursor
        self._io_lock = threading.RLock()  # file writes and reads, in order
        self._buffer = bytearray()
        self._buffered_records = 0
        self._segments: list[int] = []
        self._sizes: dict[int, int] = {}
        self._cursor = (_FIRST_SEGMENT, 0)
        self._tail: int | None = None
        self._tail_file = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self.pending_bytes = 0
        self.pending_records = 0
        self._closed = False
        self._generation = 0  # bumped by prepend(): batches read before it are stale
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.directory / ".lock", "a+b")  # noqa: SIM115 - held while open
        except OSError as error:
            raise SpoolError(f"cannot use spool directory {self.directory}: {error.strerror}") from None
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise SpoolError(
                f"spool directory {self.directory} is in use by another process; give each process its own"
            ) from None
        self._recover()

    @classmethod
    def claim(cls, base: Path | str, slots: int = 64, **options: object) -> DiskSpool:
        """The first free `slot-N` directory under `base`: each process of a multi-worker server gets
        its own spool, and a restarted worker takes over (and replays) what a previous one left."""
        last_error: SpoolError | None = None
        for slot in range(slots):
            try:
                return cls(Path(base) / f"slot-{slot}", **options)  # type: ignore[arg-type]
            except SpoolError as error:
                last_error = error
        raise SpoolError(f"all {slots} spool slots under {base} are in use ({last_error})")

    # ------------------------------------------------------------------ state

    @property
    def empty(self) -> bool:
        """True when every record has been committed."""
        return self.pending_records == 0

    def __len__(self) -> int:
        return self.pending_records

    # ------------------------------------------------------------------ writing

    def append(self, key: bytes, value: bytes) -> bool:
        """Add a record at the end; False (nothing written) when it would pass `max_bytes`."""
        prefix = _KEY_LENGTH.pack(len(key))
        size = _OVERHEAD + len(key) + len(value)
        header = _HEADER.pack(size - _HEADER.size, zlib.crc32(value, zlib.crc32(key, zlib.crc32(prefix))))
        with self._lock:
            if self._closed or self.pending_bytes + size > self.max_bytes:
                return False
            buffer = self._buffer
            buffer += header
            buffer += prefix
            buffer += key
            buffer += value
            self._buffered_records += 1
            self.pending_bytes += size
            self.pending_records += 1
            full = len(buffer) >= self.buffer_bytes
        if full:
            self.flush()
        return True

    def append_many(self, records: Iterable[tuple[bytes, bytes]]) -> int:
        """Append records in order until the bound is hit; returns how many were kept."""
        kept = 0
        for key, value in records:
            if not self.append(key, value):
                break
            kept += 1
        return kept

    def prepend(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Put records in front of everything pending (they are older than what is spooled).

        Used for events the broker gave back after newer ones were already spooled. Returns how
        many were kept; the rest would pass the bound.
        """
        if not records:
            return 0
        with self._io_lock:
            self._write_buffer()
            with self._lock:
                room = self.max_bytes - self.pending_bytes
                encoded = []
                for key, value in records:
                    record = encode_record(key, value)
                    if len(record) > room:
                        break
                    room -= len(record)
                    encoded.append(record)
                if not encoded:
                    return 0
                self._generation += 1
                if not self._segments:
                    self._buffer[0:0] = b"".join(encoded)
                    self._buffered_records += len(encoded)
                    self._account(len(encoded), sum(map(len, encoded)))
                    return len(encoded)
                head = self._segments[0]
                start = self._cursor[1] if self._cursor[0] == head else 0
            remainder = self._read_bytes(head, start)
            number = head - 1
            target = self._path(number)
            temporary = target.with_suffix(".tmp")
            with open(temporary, "wb") as handle:
                for record in encoded:
                    handle.write(record)
                handle.write(remainder)
                if self.fsync != "never":
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temporary, target)
            with self._lock:
                if self._tail == head:
                    self._close_tail()
                    self._tail_file = open(target, "ab", buffering=0)  # noqa: SIM115 - the tail stays open
                    self._tail = number
                self._segments[0] = number
                self._sizes.pop(head, None)
                self._sizes[number] = target.stat().st_size
                self._cursor = (number, 0)
                self._account(len(encoded), sum(map(len, encoded)))
            self._write_cursor()
            self._path(head).unlink(missing_ok=True)
        return len(encoded)

    def _account(self, records: int, size: int) -> None:
        self.pending_records += records
        self.pending_bytes += size

    def flush(self) -> None:
        """Write buffered records to the OS (and fsync when the policy says so)."""
        with self._io_lock:
            self._write_buffer()
            if self._dirty and (
                self.fsync == "always"
                or (self.fsync == "interval" and time.monotonic() - self._last_sync >= self.fsync_interval)
            ):
                self.sync()

    def sync(self) -> None:
        """fsync the segment being written (unless the policy is `never`)."""
        with self._io_lock:
            if self._tail_file is not None and self._dirty and self.fsync != "never":
                os.fsync(self._tail_file.fileno())
            self._dirty = False
            self._last_sync = time.monotonic()

    def _write_buffer(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            data, self._buffer = self._buffer, bytearray()
            count, self._buffered_records = self._buffered_records, 0
        del count
        if self._tail_file is None or self._sizes.get(self._tail, 0) >= self.segment_bytes:  # type: ignore[arg-type]
            self._rotate()
        assert self._tail_file is not None and self._tail is not None
        self._tail_file.write(data)
        self._dirty = True
        with self._lock:
            self._sizes[self._tail] += len(data)

    def _rotate(self) -> None:
        if self._tail_file is not None:
            if self.fsync != "never":
                os.fsync(self._tail_file.fileno())
            self._close_tail()
        with self._lock:
            number = (self._segments[-1] + 1) if self._segments else max(self._cursor[0], _FIRST_SEGMENT)
            self._tail_file = open(self._path(number), "ab", buffering=0)  # noqa: SIM115 - the tail stays open
            self._tail = number
            self._segments.append(number)
            self._sizes[number] = 0
            if len(self._segments) == 1:
                self._cursor = (number, 0)

    def _close_tail(self) -> None:
        if self._tail_file is not None:
            self._tail_file.close()
        self._tail_file = None
        self._tail = None

    # ------------------------------------------------------------------ reading

    def read(self, max_records: int = 5000, max_bytes: int = 8 * 1024 * 1024) -> SpoolBatch:
        """The oldest pending records (at most `max_records`, about `max_bytes`), not yet removed."""
        records: list[tuple[bytes, bytes]] = []
        size = 0
        finished: list[int] = []
        with self._io_lock:
            self._write_buffer()
            with self._lock:
                segments = list(self._segments)
                cursor = self._cursor
                generation = self._generation
            end = cursor
            for number in segments:
                offset = cursor[1] if number == cursor[0] else 0
                data = self._read_bytes(number, offset, max(max_bytes - size, _READ_CHUNK))
                position = 0
                while len(records) < max_records and size < max_bytes:
                    if position + _HEADER.size > len(data):
                        break
                    length, checksum = _HEADER.unpack_from(data, position)
                    start = position + _HEADER.size
                    if start + length > len(data):
                        break
                    payload = data[start : start + length]
                    (key_length,) = _KEY_LENGTH.unpack_from(payload)
                    records.append((payload[2 : 2 + key_length], payload[2 + key_length :]))
                    del checksum  # checked when the spool was opened; writes are whole records
                    position = start + length
                    size += _HEADER.size + length
                end = (number, offset + position)
                if offset + position < self._sizes.get(number, 0) or number == self._tail:
                    break
                finished.append(number)
                if len(records) >= max_records or size >= max_bytes:
                    break
        return SpoolBatch(records, end[0], end[1], size, finished, generation)

    def commit(self, batch: SpoolBatch) -> bool:
        """Remove the records of `batch` (delivered). Must be the last batch `read()` returned; a
        batch read before a `prepend()` is ignored (its records are read, and sent, again)."""
        if not batch.records:
            return True
        with self._io_lock:
            with self._lock:
                if batch.generation != self._generation:
                    return False
                self.pending_records -= len(batch.records)
                self.pending_bytes -= batch.size
                for number in batch.finished_segments:
                    if number in self._sizes:
                        self._segments.remove(number)
                        self._sizes.pop(number, None)
                self._cursor = (batch.end_segment, batch.end_offset)
                if batch.end_segment not in self._sizes and self._segments:
                    self._cursor = (self._segments[0], 0)
                drained = self.pending_records == 0 and not self._buffer
            for number in batch.finished_segments:
                self._path(number).unlink(missing_ok=True)
            if drained:
                self._reset()
            self._write_cursor()
        return True

    def _reset(self) -> None:
        """Everything is delivered: drop the files and start the next segment afresh."""
        with self._lock:
            following = (self._segments[-1] + 1) if self._segments else self._cursor[0] + 1
            segments, self._segments = self._segments, []
            self._sizes.clear()
            self._close_tail()
            self._cursor = (following, 0)
            self.pending_bytes = 0
            self.pending_records = 0
        for number in segments:
            self._path(number).unlink(missing_ok=True)

    def _read_bytes(self, number: int, offset: int, limit: int = -1) -> bytes:
        try:
            with open(self._path(number), "rb") as handle:
                handle.seek(offset)
                return handle.read(limit)
        except FileNotFoundError:
            return b""

    # ------------------------------------------------------------------ files

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:016d}{_SUFFIX}"

    def _write_cursor(self) -> None:
        segment, offset = self._cursor
        temporary = self.directory / "cursor.tmp"
        with open(temporary, "wb") as handle:
            handle.write(orjson.dumps({"segment": segment, "offset": offset}))
            if self.fsync == "always":
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, self.directory / "cursor")

    def _recover(self) -> None:
        """Load the cursor, drop consumed segments, cut torn tails and count what is pending."""
        for stale in self.directory.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        numbers = sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        cursor = (numbers[0], 0) if numbers else (_FIRST_SEGMENT, 0)
        try:
            saved = orjson.loads((self.directory / "cursor").read_bytes())
            cursor = (int(saved["segment"]), int(saved["offset"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            pass
        for number in [n for n in numbers if n < cursor[0]]:
            self._path(number).unlink(missing_ok=True)
            numbers.remove(number)
        if numbers and cursor[0] not in numbers:
            cursor = (numbers[0], 0)
        for number in numbers:
            start = cursor[1] if number == cursor[0] else 0
            count, good_end, size = self._scan(number, start)
            if good_end < size:
                log.warning(
                    "spool %s: segment %d has %d unreadable byte(s) after offset %d (a torn write); cut off",
                    self.directory,
                    number,
                    size - good_end,
                    good_end,
                )
                os.truncate(self._path(number), good_end)
            self._segments.append(number)
            self._sizes[number] = good_end
            self.pending_records += count
            self.pending_bytes += good_end - start
        self._cursor = cursor if numbers else (max(cursor[0], _FIRST_SEGMENT), 0)
        if self.pending_records:
            log.info(
                "spool %s holds %d undelivered event(s) (%d bytes) from an earlier run; they will be replayed",
                self.directory,
                self.pending_records,
                self.pending_bytes,
            )

    def _scan(self, number: int, start: int) -> tuple[int, int, int]:
        """(valid records from `start`, end of the last valid record, file size)."""
        path = self._path(number)
        size = path.stat().st_size
        count = 0
        position = start
        with open(path, "rb") as handle:
            handle.seek(start)
            pending = b""
            while True:
                chunk = handle.read(_READ_CHUNK)
                data = pending + chunk
                cursor = 0
                while cursor + _HEADER.size <= len(data):
                    length, checksum = _HEADER.unpack_from(data, cursor)
                    end = cursor + _HEADER.size + length
                    if end > len(data):
                        break
                    if length < 2 or zlib.crc32(data[cursor + _HEADER.size : end]) != checksum:
                        return count, position, size
                    count += 1
                    position += end - cursor
                    cursor = end
                pending = data[cursor:]
                if not chunk:
                    return count, position, size

    def close(self) -> None:
        """Write and fsync what is buffered, release the directory."""
        with self._io_lock:
            if self._closed:
                return
            self._write_buffer()
            if self._tail_file is not None and self.fsync != "never":
                os.fsync(self._tail_file.fileno())
            self._close_tail()
            self._write_cursor()
            self._closed = True
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
        self._lock_file.close()
