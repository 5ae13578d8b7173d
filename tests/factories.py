"""Builders of contract objects for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from keytrail.schemas.usage import KeyUsageEvent, Outcome

BASE_TIME = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)


def usage_event(
    key_id: str = "key_a",
    *,
    at: datetime | None = None,
    seconds: float = 0,
    event_id: uuid.UUID | None = None,
    outcome: Outcome = Outcome.OK,
    status: int = 200,
    client_ip: str = "10.1.2.3",
    route: str = "/v1/orders/{order_id}",
    project_id: str = "proj_a",
    **overrides: Any,
) -> KeyUsageEvent:
    """A valid event; `seconds` offsets it from BASE_TIME (or `at`)."""
    return KeyUsageEvent(
        event_id=event_id or uuid.uuid4(),
        occurred_at=(at or BASE_TIME) + timedelta(seconds=seconds),
        key_id=key_id,
        project_id=project_id,
        service=overrides.pop("service", "orders-api"),
        method=overrides.pop("method", "GET"),
        route=route,
        status=status,
        outcome=outcome,
        latency_ms=overrides.pop("latency_ms", 12.5),
        request_bytes=overrides.pop("request_bytes", 100),
        response_bytes=overrides.pop("response_bytes", 2000),
        client_ip=client_ip,
        user_agent=overrides.pop("user_agent", "test-client/1.0"),
        request_id=overrides.pop("request_id", "req-1"),
        **overrides,
    )
