"""How often a key meets something new (a network, a route): keys that keep doing so are *nomadic*.

For a nomadic key — a public client used from everywhere, routes with ids in the path — one more new
network or route says nothing, so the detector stays quiet for it and remembers less. A detector keeps
the days of its key's latest discoveries under `"k"` (at most `count` of them).

Feedback ("this was expected", see `feedback.py`) makes a network or route *taught*: it is known, and
it is kept under `"t"` (at most `TAUGHT_MAX`, oldest first) so a full memory never forgets it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TAUGHT_MAX = 8
"""Taught names kept per key and detector (pinned against forgetting); the oldest is unpinned first."""


def note_discovery(memory: dict[str, Any], day: int, first_day: int, count: int, settle_days: int = 2) -> None:
    """Record a discovery on `day` (those of the key's first `settle_days` days are its starting set)."""
    if day - first_day < settle_days:
        return
    days: list[int] = memory.setdefault("k", [])
    days.append(day)
    del days[:-count]


def is_nomadic(memory: dict[str, Any], day: int, count: int, within_days: int) -> bool:
    """Whether the key made at least `count` discoveries in the last `within_days` days (this one included)."""
    days: list[int] = memory.get("k", [])
    return len(days) >= count and day - days[-count] < within_days


def least_recent(last_days: dict[str, int], keep: Iterable[str] = ()) -> str:
    """The entry seen least recently (the smallest name among ties): the one a full memory forgets.

    Same as `min(last_days.items(), key=lambda item: (item[1], item[0]))[0]`, without a Python call per entry.
    Names in `keep` (taught ones) are never chosen while another entry is left.
    """
    if keep:
        pinned = set(keep)
        candidates = {name: day for name, day in last_days.items() if name not in pinned}
        if candidates:
            last_days = candidates
    oldest = min(last_days.values())
    return min([name for name, day in last_days.items() if day == oldest])


def teach_known(memory: dict[str, Any], table: str, names: Iterable[str], day: int, cap: int) -> bool:
    """Make `names` known in `memory[table]` (last seen no earlier than `day`) and taught; True if anything changed.

    Idempotent: teaching the same names again changes nothing.
    """
    known: dict[str, int] = memory[table]
    taught: list[str] = memory.setdefault("t", [])
    changed = False
    for name in names:
        seen = known.get(name)
        if seen is None or seen < day:
            known[name] = day
            changed = True
        if name not in taught:
            taught.append(name)
            changed = True
    if len(taught) > TAUGHT_MAX:
        del taught[:-TAUGHT_MAX]
    while len(known) > cap:
        del known[least_recent(known, taught)]
    if not taught:
        del memory["t"]
    return changed
