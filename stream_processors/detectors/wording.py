"""How numbers, lists and hours read in a message a security engineer gets at 3 a.m."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from keytrail.stream_processors.core.clock import from_epoch_ms

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


def figure_text(value: float) -> str:
    """A figure in an explanation: `1,240`, `2.4`, `0.0098` (two significant digits below 1), `0`."""
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return count_text(round(value, 1))
    return f"{value:.2g}" if abs(value) >= 0.0001 else f"{value:.1e}"


def window_text(start_ms: int, end_ms: int) -> str:
    """`2026-03-25 00:00–06:00 UTC`, `2026-03-25 18:00–24:00 UTC`, or both dates when it spans midnight."""
    start, end = from_epoch_ms(start_ms), from_epoch_ms(end_ms)
    if end.date() == start.date():
        return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC"
    if end == datetime.combine(start.date() + timedelta(days=1), time(), UTC):
        return f"{start:%Y-%m-%d %H:%M}–24:00 UTC"
    return f"{start:%Y-%m-%d %H:%M} UTC – {end:%Y-%m-%d %H:%M} UTC"


KIND_FIGURES: dict[str, str] = {
    "rate_spike": "{observed} requests vs about {expected} expected",
    "many_ips": "{observed} distinct IP addresses in a minute vs about {expected} expected",
    "denial_burst": "{observed} refused requests in a minute vs about {expected} expected",
    "new_network": "{observed} use from a network the key had never used vs {expected} expected",
    "new_route": "{observed} call of a route the key had never called vs {expected} expected",
    "use_of_inactive_key": "{observed} use of a key that is not active vs {expected} expected",
    "dormant_key_active": "{observed} days without use before this request vs at most {expected} expected",
    "unusual_hour": "{observed} active hour outside the key's usual weekly band vs {expected} expected",
    "idle": "{observed} days without use vs at most {expected} expected",
    "never_used": "{observed} days since creation without any use vs at most {expected} expected",
    "expiring_soon": "{observed} days to expiry vs at least {expected} expected",
    "quota": "{observed} requests vs a quota of {expected}",
}
"""How each kind's observed and expected figures read; other kinds read `{observed} vs {expected} expected`."""

EVIDENCE_LABELS = (
    ("ips", "IP address", "IP addresses"),
    ("networks", "network", "networks"),
    ("routes", "route", "routes"),
    ("hours", "hour", "hours"),
    ("outcomes", "outcome", "outcomes"),
)
"""The evidence an explanation names, in this order (the rest stays in the signal's evidence)."""


def evidence_text(evidence: dict[str, list[str]], per_list: int = 2) -> str:
    """`IP address 203.0.113.7 and route GET /v1/orders`, `IP addresses a, b and more`, from the evidence lists."""
    parts = []
    for name, singular, plural_noun in EVIDENCE_LABELS:
        items = evidence.get(name) or []
        if not items:
            continue
        if len(items) > per_list:
            shown = ", ".join(items[:per_list]) + " and more"
        else:
            shown = join_names(list(items), per_list)
        parts.append(f"{singular if len(items) == 1 else plural_noun} {shown}")
    return join_names(parts, len(parts)) if parts else "no further evidence"


def explanation(kind: str, observed: float, expected: float, window: str, evidence: dict[str, list[str]],
                link: str) -> str:
    """The one-sentence explanation every signal ends with: observed vs expected, window, evidence, link."""
    figures = KIND_FIGURES.get(kind, "{observed} vs {expected} expected").format(
        observed=figure_text(observed), expected=figure_text(expected))
    return f"Observed {figures} in {window}, with {evidence_text(evidence)}; timeline: {link}."
