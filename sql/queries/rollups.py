"""The hourly and daily rollups are refreshable materialized views; this brings them up to date now.

ClickHouse refreshes them on its own (every minute) for as long as the
server, or the embedded process that owns chDB, runs. Tests, benchmarks and demos that read a
rollup right after writing call `refresh_rollups` instead of waiting.
"""

from __future__ import annotations

from keytrail.sql.backends import ClickHouseBackend

ROLLUP_VIEWS = ("key_usage_hourly_refresh", "key_usage_daily_refresh")
"""The refreshable views, in dependency order (hourly from key_usage_minute and usage_events, daily
from hourly). The set rollups key_usage_hour_sets and key_usage_day_sets (migration 0006) are
filled on insert and never need a refresh."""


def refresh_rollups(backend: ClickHouseBackend) -> None:
    """Recompute every key-hour and key-day written since the last refresh, and wait for it."""
    for view in ROLLUP_VIEWS:
        backend.command(f"SYSTEM REFRESH VIEW {view}")
        backend.command(f"SYSTEM WAIT VIEW {view}")
