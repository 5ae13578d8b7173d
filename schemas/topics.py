"""Kafka topic names fixed by the design brief."""

from enum import StrEnum


class Topics(StrEnum):
    """The five topics of the pipeline; every record on them is keyed by key_id (except the DLQ)."""

    USAGE = "keytrail.usage.v1"
    KEYS = "keytrail.keys.v1"
    LAST_USED = "keytrail.last-used.v1"
    SIGNALS = "keytrail.signals.v1"
    DLQ = "keytrail.dlq.v1"
