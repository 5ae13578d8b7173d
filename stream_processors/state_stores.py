"""Where the core's per-key state lives: a dict in-process, a Faust table in production."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import MutableMapping
from pathlib import Path

from keytrail.stream_processors.core.state import KeyState


class InMemoryStates(dict[str, KeyState]):
    """Plain mapping of key id to state, for the embedded default and tests."""


DecodedStates = dict[str, tuple[bytes, KeyState]]
"""Decoded states kept between batches, each with the exact bytes it was decoded from or written as."""


class SerializedStateOverlay:
    """Reads states from a bytes-valued table once per batch and writes changed ones back.

    The core works on decoded states; `commit()` writes every state touched in the batch
    back to the underlying table (a Faust table keyed by the key id's bytes) exactly once.

    With a `decoded` cache shared across batches, a state is decoded only when the table holds
    bytes other than the ones the cache was built from (first sight, changelog recovery, a
    partition handed over by a rebalance): the table stays the truth, the cache only saves work.
    A state taken from the cache is owned by the batch until `commit()` puts it back, so a batch
    that fails half-way leaves no half-updated state behind in the cache.
    """

    def __init__(
        self, table: MutableMapping[bytes, bytes], decoded: DecodedStates | None = None, max_decoded: int = 0
    ) -> None:
        self.table = table
        self.decoded = decoded
        self.max_decoded = max_decoded
        """Keep at most this many decoded states (least recently used go first); 0 = no bound."""
        self.touched: dict[str, KeyState] = {}
        self.decoded_from_table = 0

    def get(self, key: str, /) -> KeyState | None:
        state = self.touched.get(key)
        if state is not None:
            return state
        raw = self.table.get(key.encode())
        if raw is None:
            return None
        if self.decoded is not None:
            cached = self.decoded.pop(key, None)
            if cached is not None and (cached[0] is raw or cached[0] == raw):
                return cached[1]
        self.decoded_from_table += 1
        return KeyState.from_bytes(raw)

    def __setitem__(self, key: str, value: KeyState, /) -> None:
        self.touched[key] = value

    def commit(self) -> int:
        """Write back every touched state; returns how many."""
        decoded = self.decoded
        for key, state in self.touched.items():
            raw = state.to_bytes()
            self.table[key.encode()] = raw
            if decoded is not None:
                decoded[key] = (raw, state)
        if decoded is not None and self.max_decoded and len(decoded) > self.max_decoded:
            # get() pops and commit() re-inserts, so the dict's order is least recently used first.
            for key in list(itertools.islice(decoded, len(decoded) - self.max_decoded)):
                del decoded[key]
        count = len(self.touched)
        self.touched = {}
        return count


class SqliteStates:
    """Per-key core state kept in a SQLite file beside the embedded store, across runs and restarts.

    Why: minute rows are full values (the highest revision wins), so a process that starts with
    empty state would write a minute again from only its own events and overwrite what an
    earlier run counted. With the state persisted, the next run continues each key where the
    last one stopped: open minutes keep their counts and event ids, closed minutes stay closed
    (a late event for one is recounted from the audit trail by the sink).

    `commit()` is called after the batch's outputs are durable, like the worker's changelog: a
    crash between the two redoes the batch from the previous state (same rows, same records).
    """

    def __init__(self, path: Path) -> None:
        import sqlite3

        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if fresh:
            os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS key_state (key_id TEXT PRIMARY KEY, state BLOB NOT NULL)")
        self._cache: dict[str, KeyState] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def get(self, key: str, /) -> KeyState | None:
        state = self._cache.get(key)
        if state is not None:
            return state
        row = self._db.execute("SELECT state FROM key_state WHERE key_id = ?", (key,)).fetchone()
        if row is None:
            return None
        state = self._cache[key] = KeyState.from_bytes(row[0])
        return state

    def __setitem__(self, key: str, value: KeyState, /) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def items(self) -> list[tuple[str, KeyState]]:
        """Every stored state (for tests and tools; reads the whole file)."""
        self.commit()
        rows = self._db.execute("SELECT key_id, state FROM key_state").fetchall()
        return [(key, self._cache.get(key) or KeyState.from_bytes(raw)) for key, raw in rows]

    def commit(self) -> int:
        """Write the states changed since the last commit in one transaction; returns how many."""
        with self._lock:
            if not self._dirty:
                return 0
            rows = [(key, self._cache[key].to_bytes()) for key in self._dirty]
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO key_state (key_id, state) VALUES (?, ?) "
                "ON CONFLICT(key_id) DO UPDATE SET state = excluded.state", rows)
            self._db.execute("COMMIT")
            self._dirty.clear()
            return len(rows)

    def close(self) -> None:
        self._db.close()
