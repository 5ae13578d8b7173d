"""How often a key meets something new (a network, a route): keys that keep doing so are *nomadic*.

For a nomadic key — a public client used from everywhere, routes with ids in the path — one more new
network or route says nothing, so the detector stays quiet for it and remembers less. A detector keeps
the days of its key's latest discoveries under `"k"` (at most `count` of them).
"""

from __future__ import annotations

from typing import Any


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


def least_recent(last_days: dict[str, int]) -> str:
    """The entry seen least recently (the smallest name among ties): the one a full memory forgets.

    Same as `min(last_days.items(), key=lambda item: (item[1], item[0]))[0]`, without a Python call per entry.
    """
    oldest = min(last_days.values())
    return min([name for name, day in last_days.items() if day == oldest])
