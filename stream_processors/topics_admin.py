"""Creation of the pipeline's Kafka topics with the settings the contract needs."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient, NewTopic

from keytrail.schemas.topics import Topics

log = logging.getLogger(__name__)


def pipeline_topics(partitions: int, replication: int = 1) -> list[NewTopic]:
    """The five topics: keyed ones share the usage topic's partition count; last-used is compacted."""
    return [
        NewTopic(Topics.USAGE.value, partitions, replication),
        NewTopic(Topics.KEYS.value, partitions, replication),
        NewTopic(Topics.LAST_USED.value, partitions, replication, config={"cleanup.policy": "compact"}),
        NewTopic(Topics.SIGNALS.value, partitions, replication),
        NewTopic(Topics.DLQ.value, 1, replication),
    ]


def ensure_topics(bootstrap: str, partitions: int, replication: int = 1, timeout: float = 30.0) -> list[str]:
    """Create whichever pipeline topics are missing; returns the names created. Existing topics are left alone."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [topic for topic in pipeline_topics(partitions, replication) if topic.topic not in existing]
    created = []
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                future.result(timeout)
                created.append(name)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another worker created it first
                    raise
    if created:
        log.info("created Kafka topics %s", ", ".join(created))
    return created
