"""Requests per key and UTC day, for quota alerts: key_usage_minute read with FINAL."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Protocol

from keytrail.sql.backends import ClickHouseBackend


class UsageSource(Protocol):
    def requests_on_day(self, now: datetime, key_ids: Collection[str]) -> dict[str, int]:
        """Requests per key on the UTC day containing `now`, up to `now`."""


class ClickHouseUsage:
    """key_usage_minute FINAL: the newest revision of every minute, summed over the day."""

    SQL = """
        SELECT key_id, toUInt64(sum(requests)) AS requests
        FROM key_usage_minute FINAL
        WHERE minute >= {day_start:DateTime('UTC')} AND minute < {day_end:DateTime('UTC')}
          AND has({key_ids:Array(String)}, key_id)
        GROUP BY key_id
    """

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    def requests_on_day(self, now: datetime, key_ids: Collection[str]) -> dict[str, int]:
        if not key_ids:
            return {}
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        rows = self.backend.query(
            self.SQL,
            {
                "day_start": day_start.strftime("%Y-%m-%d %H:%M:%S"),
                "day_end": (day_start + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
                "key_ids": sorted(key_ids),
            },
        )
        return {row["key_id"]: int(row["requests"]) for row in rows}


class StaticUsage:
    """Fixed numbers, for tests and dry runs."""

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts = dict(counts or {})

    def requests_on_day(self, now: datetime, key_ids: Collection[str]) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if k in key_ids}
