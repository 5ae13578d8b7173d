"""Where the core's per-key state lives: a dict in-process, a Faust table in production."""

from __future__ import annotations

from collections.abc import MutableMapping

from stream_processors.core.state import KeyState


class InMemoryStates(dict[str, KeyState]):
    """Plain mapping of key id to state, for the embedded default and tests."""


class SerializedStateOverlay:
    """Reads states from a bytes-valued table once per batch and writes changed ones back.

    The core works on decoded states; `commit()` writes every state touched in the batch
    back to the underlying table (a Faust table keyed by the key id's bytes) exactly once.
    """

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table
        self.touched: dict[str, KeyState] = {}

    def get(self, key: str, /) -> KeyState | None:
        state = self.touched.get(key)
        if state is not None:
            return state
        raw = self.table.get(key.encode())
        return KeyState.from_bytes(raw) if raw is not None else None

    def __setitem__(self, key: str, value: KeyState, /) -> None:
        self.touched[key] = value

    def commit(self) -> int:
        """Write back every touched state; returns how many."""
        for key, state in self.touched.items():
            self.table[key.encode()] = state.to_bytes()
        count = len(self.touched)
        self.touched = {}
        return count
