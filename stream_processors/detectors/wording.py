"""How numbers, lists and hours read in a message a security engineer gets at 3 a.m."""

from __future__ import annotations

from collections.abc import Sequence

SHORT_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def count_text(value: float) -> str:
    """`1,240` for whole numbers, `2.4` otherwise."""
    if value >= 100 or float(value).is_integer():
        return f"{round(value):,}"
    return f"{value:.1f}"


def join_names(names: Sequence[str], limit: int = 4) -> str:
    """`a`, `a and b`, `a, b and c`, `a, b, c, d and 3 more`."""
    if not names:
        return "nothing"
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def plural(count: int, noun: str) -> str:
    """`1 day`, `21 days`."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def hour_ranges(hours: Sequence[int], limit: int = 4) -> str:
    """`07:00–19:00 UTC`, or `01:00–02:00 and 07:00–19:00 UTC`, from hours of the day that were active."""
    active = sorted(set(hours))
    if not active:
        return "no hours"
    if len(active) == 24:
        return "at any hour"
    runs: list[tuple[int, int]] = []
    for hour in active:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + 1)
        else:
            runs.append((hour, hour + 1))
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == 24:  # a run across midnight
        runs = [(runs[-1][0], runs[0][1])] + runs[1:-1]
    texts = [f"{start:02d}:00–{end % 24:02d}:00" for start, end in runs]
    return join_names(texts, limit) + " UTC"


def weekday_ranges(days: Sequence[int]) -> str:
    """`Mon–Fri`, `Mon, Wed and Sat`, `every day` (0 = Monday)."""
    active = sorted(set(days))
    if len(active) == 7:
        return "every day"
    runs: list[tuple[int, int]] = []
    for day in active:
        if runs and runs[-1][1] == day - 1:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    texts = [SHORT_WEEKDAYS[a] if a == b else f"{SHORT_WEEKDAYS[a]}–{SHORT_WEEKDAYS[b]}" for a, b in runs]
    return join_names(texts, 7)
