"""Where the core's per-key state lives: a dict in-process, a Faust table in production."""

from __future__ import annotations

import itertools
from collections.abc import MutableMapping

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
