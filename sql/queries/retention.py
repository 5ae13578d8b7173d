"""How long usage data is kept: `ALTER TABLE … MODIFY TTL` on the time-partitioned tables, applied safely.

The raw audit trail and the per-minute and hourly tables share one retention; the daily rollup
keeps its own (longer by default), so long-range dashboards outlive the raw events. The key
lifecycle audit, alerts and signals are never expired here.

Safe means: the number of days is checked, nothing changes when the TTL is already the one
asked for, and shortening a retention (which deletes data at the next merge) is refused unless
the caller says so explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keytrail.sql.backends import ClickHouseBackend

RAW_TABLES = {
    # table: the TTL's time expression
    "usage_events": "toDateTime(occurred_at)",
    "key_usage_minute": "minute",
    "key_usage_hourly": "hour",
    "key_usage_hour_sets": "hour",
}
ROLLUP_TABLES = {"key_usage_daily": "day", "key_usage_day_sets": "day"}
DEFAULT_DAYS = 400
DEFAULT_ROLLUP_DAYS = 1100
MAX_DAYS = 36_500

_TTL_DAYS = re.compile(r"TTL\s+.+?\+\s*(?:toIntervalDay\((\d+)\)|INTERVAL\s+(\d+)\s+DAY)", re.IGNORECASE)


class RetentionError(ValueError):
    """A retention change was refused; the message says why and what to do."""


@dataclass(frozen=True)
class RetentionChange:
    """One table's retention before and after."""

    table: str
    before_days: int | None
    after_days: int

    @property
    def shrinks(self) -> bool:
        return self.before_days is None or self.after_days < self.before_days


def current_retention(backend: ClickHouseBackend) -> dict[str, int | None]:
    """Days each usage table keeps (None: no TTL, kept forever)."""
    tables = {**RAW_TABLES, **ROLLUP_TABLES}
    rows = backend.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        {"names": list(tables)},
    )
    found = {row["name"]: row["engine_full"] for row in rows}
    result: dict[str, int | None] = {}
    for table in tables:
        if table not in found:
            raise RetentionError(f"table {table} does not exist: run `keytrail migrate` first")
        match = _TTL_DAYS.search(found[table])
        result[table] = int(match.group(1) or match.group(2)) if match else None
    return result


def plan_retention(
    backend: ClickHouseBackend, days: int | None = None, rollup_days: int | None = None
) -> list[RetentionChange]:
    """The changes `apply_retention` would make (tables already at the asked retention are left out)."""
    current = current_retention(backend)
    changes = []
    for tables, wanted in ((RAW_TABLES, days), (ROLLUP_TABLES, rollup_days)):
        if wanted is None:
            continue
        if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= MAX_DAYS:
            raise RetentionError(f"retention must be a whole number of days between 1 and {MAX_DAYS}; got {wanted!r}")
        for table in tables:
            if current[table] != wanted:
                changes.append(RetentionChange(table, current[table], wanted))
    return changes


def apply_retention(
    backend: ClickHouseBackend,
    days: int | None = None,
    rollup_days: int | None = None,
    *,
    allow_shrink: bool = False,
) -> list[RetentionChange]:
    """Set how many days raw/minute/hourly data (`days`) and the daily rollup (`rollup_days`) are kept.

    Refuses to shorten a retention unless `allow_shrink`: data older than the new retention is
    deleted by ClickHouse at its next merge, and cannot be brought back.
    """
    changes = plan_retention(backend, days, rollup_days)
    shrinking = [c for c in changes if c.shrinks]
    if shrinking and not allow_shrink:
        described = ", ".join(f"{c.table} {c.before_days or 'forever'} -> {c.after_days} days" for c in shrinking)
        raise RetentionError(
            f"this shortens retention ({described}) and deletes older data for good; confirm to go ahead"
        )
    tables = {**RAW_TABLES, **ROLLUP_TABLES}
    for change in changes:
        # days is a checked int; DDL takes no bound parameters
        backend.command(f"ALTER TABLE {change.table} MODIFY TTL {tables[change.table]} + INTERVAL {int(change.after_days)} DAY")
    return changes
