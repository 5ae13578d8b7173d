"""The production worker: a faust-streaming app around the pure core.

Kafka `keytrail.usage.v1` -> decode (invalid -> `keytrail.dlq.v1` with a reason) -> core
(state in a Faust table) -> ClickHouse sink -> `keytrail.last-used.v1` + `keytrail.signals.v1`.

Order per batch: the sink is written before the table, so a crash at any point leads to
redelivery of events whose outputs are recomputed identically (full-value rows into
ReplacingMergeTree tables): at least once in, exactly once in every answer.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from dataclasses import dataclass, field

import faust
from pydantic import ValidationError

from console.settings import Settings
from schemas.lifecycle import KeyLifecycleEvent
from schemas.topics import Topics
from sql.backends import open_clickhouse
from sql.migrate import migrate
from stream_processors.codec import (
    InvalidEvent,
    decode_usage_event,
    describe_validation_error,
    redact_secrets,
)
from stream_processors.core.aggregate import UsageAggregator
from stream_processors.detectors import default_detectors
from stream_processors.sinks.clickhouse import ClickHouseSink
from stream_processors.sinks.lifecycle_audit import ClickHouseLifecycleSink
from stream_processors.state_stores import DecodedStates, SerializedStateOverlay
from stream_processors.topics_admin import ensure_topics

log = logging.getLogger(__name__)

DLQ_REASON_HEADER = "keytrail-reason"
DLQ_CODE_HEADER = "keytrail-error-code"
DLQ_SOURCE_HEADER = "keytrail-source-topic"


@dataclass
class WorkerCounters:
    """What the worker has done since start; exported as metrics and logged."""

    batches: int = 0
    events: int = 0
    duplicates: int = 0
    late: int = 0
    dead_lettered: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


def build_worker_app(settings: Settings) -> faust.App:
    """A configured Faust app with the usage aggregator agent; run it with `app.main()` or a faust.Worker."""
    partitions = settings.usage_partitions
    ensure_topics(settings.kafka_bootstrap, partitions)
    app = faust.App(
        settings.worker_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.faust_store,
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
        datadir=str(Path(settings.data_dir) / "faust"),
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    usage = app.topic(Topics.USAGE.value, key_type=bytes, value_type=bytes, partitions=partitions)
    last_used_topic = app.topic(
        Topics.LAST_USED.value, key_type=bytes, value_type=bytes, partitions=partitions,
        config={"cleanup.policy": "compact"},
    )
    signals_topic = app.topic(Topics.SIGNALS.value, key_type=bytes, value_type=bytes, partitions=partitions)
    dlq_topic = app.topic(Topics.DLQ.value, key_type=bytes, value_type=bytes, partitions=1)
    states = app.Table(
        "keytrail-key-state", default=None, key_type=bytes, value_type=bytes, partitions=partitions,
        use_partitioner=True,
    )
    decoded_states: DecodedStates = {}
    aggregator = UsageAggregator(settings.allowed_lateness_seconds, default_detectors())
    backend = open_clickhouse(settings.clickhouse_url)
    migrate(backend)
    sink = ClickHouseSink(backend)
    counters = WorkerCounters()
    app.keytrail_counters = counters  # type: ignore[attr-defined]

    @app.agent(usage, name="usage-aggregator", concurrency=1)
    async def aggregate_usage(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for payloads in stream.take(settings.worker_batch_size, within=settings.worker_batch_seconds):
            events = []
            for payload in payloads:
                try:
                    events.append(decode_usage_event(payload))
                except InvalidEvent as invalid:
                    counters.dead_lettered += 1
                    counters.by_reason[invalid.code] = counters.by_reason.get(invalid.code, 0) + 1
                    await dlq_topic.send(
                        value=redact_secrets(payload if isinstance(payload, bytes) else str(payload).encode()),
                        headers=[
                            (DLQ_REASON_HEADER, invalid.reason.encode()),
                            (DLQ_CODE_HEADER, invalid.code.encode()),
                            (DLQ_SOURCE_HEADER, Topics.USAGE.value.encode()),
                        ],
                    )
            overlay = SerializedStateOverlay(states, decoded_states)
            result = aggregator.process(events, overlay)
            await loop.run_in_executor(None, sink.write_batch, result)
            pending = [
                await last_used_topic.send(key=record.key_id.encode(), value=record.model_dump_json().encode())
                for record in result.last_used
            ]
            pending += [
                await signals_topic.send(key=signal.key_id.encode(), value=signal.model_dump_json().encode())
                for signal in result.signals
            ]
            # Outputs are delivered before the state that produced them is written: if the state
            # survives a crash, so did its outputs; if not, the events are redelivered and redone.
            if pending:
                await asyncio.gather(*pending)
            overlay.commit()
            counters.batches += 1
            counters.events += len(result.accepted)
            counters.duplicates += result.duplicates
            counters.late += len(result.late)

    keys_topic = app.topic(Topics.KEYS.value, key_type=bytes, value_type=bytes, partitions=partitions)
    audit_trail = ClickHouseLifecycleSink(backend)

    @app.agent(keys_topic, name="key-audit-trail", concurrency=1)
    async def store_audit_trail(stream: faust.StreamT) -> None:
        """Admin actions from the key store into ClickHouse (deduplicated there by event_id)."""
        loop = asyncio.get_running_loop()
        async for payloads in stream.take(1000, within=1.0):
            events = []
            for payload in payloads:
                try:
                    events.append(KeyLifecycleEvent.model_validate_json(payload))
                except ValidationError as exc:
                    await dlq_topic.send(
                        value=redact_secrets(payload),
                        headers=[
                            (DLQ_REASON_HEADER, describe_validation_error(exc).encode()),
                            (DLQ_CODE_HEADER, b"invalid_lifecycle_event"),
                            (DLQ_SOURCE_HEADER, Topics.KEYS.value.encode()),
                        ],
                    )
            await loop.run_in_executor(None, audit_trail.write_events, events)

    return app
