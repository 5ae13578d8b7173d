"""The admin audit trail: KeyLifecycleEvents into ClickHouse's `key_lifecycle_events`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from keytrail.schemas.lifecycle import KeyLifecycleEvent
from keytrail.schemas.timestamps import format_utc_millis
from keytrail.sql.backends import ClickHouseBackend


def lifecycle_row(event: KeyLifecycleEvent) -> dict[str, Any]:
    """The `key_lifecycle_events` row of an event (public records only; the contract carries no secrets)."""
    return {
        "event_id": str(event.event_id),
        "occurred_at": format_utc_millis(event.occurred_at)[:-1].replace("T", " "),
        "key_id": event.key_id,
        "project_id": event.project_id,
        "action": event.action.value,
        "actor": event.actor,
        "reason": event.reason,
        "before": orjson.dumps(event.before).decode() if event.before is not None else "null",
        "after": orjson.dumps(event.after).decode() if event.after is not None else "null",
    }


class ClickHouseLifecycleSink:
    """A key store LifecycleSink writing straight to ClickHouse (embedded default; re-inserts are deduplicated)."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    def publish(self, event: KeyLifecycleEvent) -> None:
        self.write_events([event])

    def write_events(self, events: Sequence[KeyLifecycleEvent]) -> None:
        if events:
            self.backend.insert_json_rows(
                "key_lifecycle_events", b"\n".join(orjson.dumps(lifecycle_row(e)) for e in events)
            )
