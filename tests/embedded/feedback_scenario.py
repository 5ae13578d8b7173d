"""Traffic for the feedback tests: keys that meet a public network once, forget it, and meet it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keytrail.schemas.usage import KeyUsageEvent
from tests.factories import usage_event

FIRST_PUBLIC_IP = "203.0.113.7"
AGAIN_PUBLIC_IP = "203.0.113.99"


def day_zero() -> datetime:
    """Midnight UTC 30 days ago: the whole story lies in the past (no event is in the future)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=30)


def first_public_use(key_id: str, project_id: str, start: datetime) -> list[KeyUsageEvent]:
    """Eight days hourly from one private network, then a first use from a public one (a high new_network)."""
    events = [usage_event(key_id, at=start, seconds=3600 * h, client_ip="10.1.1.5", project_id=project_id)
              for h in range(8 * 24)]
    events.append(usage_event(key_id, at=start + timedelta(days=8, hours=9), client_ip=FIRST_PUBLIC_IP,
                              project_id=project_id))
    return events


def renumbered_then_public_again(key_id: str, project_id: str, start: datetime) -> list[KeyUsageEvent]:
    """70 private /24s of the same /16 (learnt silently; the key's memory of 64 forgets the public network),
    then the public network again on day 12."""
    events = [usage_event(key_id, at=start + timedelta(days=9), seconds=600 * n, client_ip=f"10.1.{n + 2}.9",
                          project_id=project_id) for n in range(70)]
    events.append(usage_event(key_id, at=start + timedelta(days=12, hours=9), client_ip=AGAIN_PUBLIC_IP,
                              project_id=project_id))
    return events
