"""A batch of usage events as columns: what the core and the sinks read, extracted once per batch.

Decoded events arrive as objects (the msgspec mirror on the hot path, the pydantic model
elsewhere). Each column is pulled out of them once, by one C-level `map` per field, so the
core's arithmetic runs on numpy arrays and the sinks build their Arrow blocks from lists,
never touching an event object per row again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from keytrail.schemas.usage import DENIAL_OUTCOMES, Outcome
from keytrail.stream_processors.core.clock import EPOCH
from keytrail.stream_processors.core.state import OUTCOME_INDEX, OUTCOME_ORDER

RAW_FIELDS = (
    "event_id",
    "occurred_at",
    "key_id",
    "project_id",
    "service",
    "method",
    "route",
    "status",
    "outcome",
    "latency_ms",
    "request_bytes",
    "response_bytes",
    "client_ip",
    "user_agent",
    "request_id",
)
"""Every field of KeyUsageEvent v1 the audit trail keeps (schema_version is implied by the table)."""

_MILLISECOND = timedelta(milliseconds=1)
_DENIAL_BY_CODE = np.array([outcome in DENIAL_OUTCOMES for outcome in OUTCOME_ORDER], dtype=bool)
_ERROR_CODE = OUTCOME_INDEX[Outcome.ERROR]
_instance_dict = attrgetter("__dict__")


def _field_lists(events: Sequence[Any], names: Sequence[str]) -> dict[str, list[Any]]:
    """The values of `names` across `events`, one list per field.

    A pydantic model keeps its fields in its `__dict__` (read there about twice as fast as by
    attribute); a msgspec struct has no `__dict__` and is read by attribute.
    """
    try:
        dicts = list(map(_instance_dict, events))
        return {name: list(map(itemgetter(name), dicts)) for name in names}
    except (AttributeError, KeyError, TypeError):
        return {name: list(map(attrgetter(name), events)) for name in names}


@dataclass(slots=True)
class EventColumns:
    """The columns of one batch, row i being `events[i]`."""

    events: Sequence[Any]
    key_id: list[str]
    project_id: list[str]
    client_ip: list[str]
    event_int: list[int]
    """128-bit event ids as ints: the dedupe identity."""
    t_ms: np.ndarray
    """Event time in epoch milliseconds (int64)."""
    outcome_code: np.ndarray
    """Index of the outcome in OUTCOME_ORDER (int64)."""
    is_error: np.ndarray
    is_denial: np.ndarray
    request_bytes: np.ndarray
    response_bytes: np.ndarray
    raw: dict[str, list[Any]] = field(default_factory=dict)
    """All RAW_FIELDS as lists, filled by `raw_fields()` when a sink needs them."""

    @classmethod
    def of(cls, events: Sequence[Any]) -> EventColumns:
        """Extract the core's columns from decoded events (KeyUsageEvent or FastUsageEvent)."""
        lists = _field_lists(events, RAW_FIELDS)
        epoch, ms = EPOCH, _MILLISECOND
        n = len(events)
        t_ms = np.fromiter([(moment - epoch) // ms for moment in lists["occurred_at"]], np.int64, n)
        index = OUTCOME_INDEX
        outcome_code = np.fromiter(map(index.__getitem__, lists["outcome"]), np.int64, n)
        status = np.fromiter(lists["status"], np.int64, n)
        return cls(
            events=events,
            key_id=lists["key_id"],
            project_id=lists["project_id"],
            client_ip=lists["client_ip"],
            event_int=[uid.int for uid in lists["event_id"]],
            t_ms=t_ms,
            outcome_code=outcome_code,
            is_error=(outcome_code == _ERROR_CODE) | (status >= 500),
            is_denial=_DENIAL_BY_CODE[outcome_code],
            request_bytes=np.fromiter(lists["request_bytes"], np.int64, n),
            response_bytes=np.fromiter(lists["response_bytes"], np.int64, n),
            raw=lists,
        )

    def __len__(self) -> int:
        return len(self.key_id)
