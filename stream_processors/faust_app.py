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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import faust
from faust.types import TP
from pydantic import ValidationError

from keytrail.keystore.engine import create_store_engine
from keytrail.keystore.ownership import KeyOwners, lookup_projects
from keytrail.schemas.batch_codec import Rejected, decode_batch
from keytrail.schemas.codec import describe_validation_error
from keytrail.schemas.lifecycle import KeyLifecycleEvent
from keytrail.schemas.secrets import redact_text, scrub_events
from keytrail.schemas.topics import Topics
from keytrail.settings import Settings
from keytrail.sql.backends import open_clickhouse
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.alerting.decide import lifecycle_thresholds
from keytrail.stream_processors.alerting.rules import load_alert_rules
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.core.state import KeyState
from keytrail.stream_processors.core.stream_time import StreamTimes
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.detectors.key_lifecycle import IdleGapDetector
from keytrail.stream_processors.faust_batches import take_weighted
from keytrail.stream_processors.faust_commit import (
    CommitHoleWatch,
    DeliveryGapGuard,
    offsets_holding_messages,
    read_offset_range,
    use_deduplicating_ack_consumer,
)
from keytrail.stream_processors.feedback_store import ClickHouseFeedbackSource, FeedbackApplier
from keytrail.stream_processors.outputs import BatchPublisher, OutputRecord
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from keytrail.stream_processors.sinks.lifecycle_audit import ClickHouseLifecycleSink
from keytrail.stream_processors.state_stores import DecodedStates, SerializedStateOverlay
from keytrail.stream_processors.topics_admin import ensure_topics
from keytrail.stream_processors.worker_lifecycle import RAISED_LIFECYCLE_SIGNALS, PartitionedLifecycle
from keytrail.stream_processors.write_scope import owners_of, refuse_out_of_scope

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_STATE_RECORD_BYTES = 8 * 1024 * 1024
"""Largest key-state changelog record the worker may write (Faust's default, 1 MB, crashed the
worker on a hot key whose open minutes held ~45k event ids); the core bounds its dedupe memory
well below this (MAX_EVENT_IDS_PER_KEY)."""

WORKER_FEEDBACK_POLL_SECONDS = 1.0
"""How often the worker reads new marks from `detector_feedback` (at a batch start)."""

DLQ_REASON_HEADER = "keytrail-reason"
DLQ_CODE_HEADER = "keytrail-error-code"
DLQ_SOURCE_HEADER = "keytrail-source-topic"
DLQ_PARTITION_HEADER = "keytrail-source-partition"
DLQ_OFFSET_HEADER = "keytrail-source-offset"
DLQ_INDEX_HEADER = "keytrail-envelope-index"


@dataclass
class WorkerCounters:
    """What the worker has done since start; exported as metrics and logged."""

    batches: int = 0
    records: int = 0
    envelopes: int = 0
    events: int = 0
    duplicates: int = 0
    late: int = 0
    dead_lettered: int = 0
    secrets_redacted: int = 0
    forgotten_event_ids: int = 0
    reread_holes: int = 0
    """Times a partition was re-read because its commit was stuck behind undelivered offsets."""
    lag_s: float = 0.0
    """Wall clock minus the newest event time of the last batch, once its outputs were delivered."""
    by_reason: dict[str, int] = field(default_factory=dict)
    seconds_by_stage: dict[str, float] = field(default_factory=dict)
    """Time spent per stage of a batch (decode, core, sink, deliver, state), for tuning."""
    last_logged_at: float = field(default_factory=time.monotonic)

    def spent(self, stage: str, since: float) -> float:
        """Add the time since `since` to a stage; returns now."""
        now = time.perf_counter()
        self.seconds_by_stage[stage] = self.seconds_by_stage.get(stage, 0.0) + now - since
        return now

    def timed(self, stage: str, work: Callable[[T], None]) -> Callable[[T], None]:
        """`work` that adds its own duration to `stage` (for stages run concurrently in threads)."""

        def run(argument: T) -> None:
            started = time.perf_counter()
            try:
                work(argument)
            finally:
                self.spent(stage, started)

        return run

    def log_progress(self, every_s: float = 10.0) -> None:
        """One INFO line at most every `every_s`: totals and where the time went."""
        if time.monotonic() - self.last_logged_at < every_s:
            return
        self.last_logged_at = time.monotonic()
        stages = " ".join(f"{name}={seconds:.1f}s" for name, seconds in self.seconds_by_stage.items())
        log.info(
            "worker progress: batches=%d events=%d duplicates=%d late=%d dead_lettered=%d mean_batch=%.0f "
            "lag=%.2fs %s",
            self.batches, self.events, self.duplicates, self.late, self.dead_lettered,
            self.events / max(self.batches, 1), self.lag_s, stages,
        )


def dead_letter(payload: bytes | str, reason: str, code: str, source_topic: str) -> OutputRecord:
    """The DLQ record of a refused payload: every secret the scanner knows redacted (in the payload
    and the reason), the reason in headers."""
    text = payload.decode("utf-8", "surrogateescape") if isinstance(payload, bytes) else str(payload)
    return OutputRecord(
        Topics.DLQ.value,
        None,
        redact_text(text).encode("utf-8", "surrogateescape"),
        (
            (DLQ_REASON_HEADER, redact_text(reason).encode()),
            (DLQ_CODE_HEADER, code.encode()),
            (DLQ_SOURCE_HEADER, source_topic.encode()),
        ),
    )


def dead_letter_rejected(rejected: Rejected, source_topic: str) -> OutputRecord:
    """The DLQ record of one refused event: its own bytes, reason, and where it came from.

    An event refused inside an envelope carries its envelope's partition and offset and its
    index in the envelope, so it can be found and replayed; its neighbours were counted.
    """
    record = dead_letter(rejected.payload, rejected.reason, rejected.code, source_topic)
    headers = (*record.headers, (DLQ_PARTITION_HEADER, str(rejected.partition).encode()),
               (DLQ_OFFSET_HEADER, str(rejected.offset).encode()))
    if rejected.index is not None:
        headers = (*headers, (DLQ_INDEX_HEADER, str(rejected.index).encode()))
    return OutputRecord(record.topic, record.key, record.value, headers)


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
        producer_max_request_size=MAX_STATE_RECORD_BYTES,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    use_deduplicating_ack_consumer(app)
    usage = app.topic(Topics.USAGE.value, key_type=bytes, value_type=bytes, partitions=partitions)
    last_used_name, signals_name = Topics.LAST_USED.value, Topics.SIGNALS.value
    publisher = BatchPublisher(settings.kafka_bootstrap)
    states = app.Table(
        "keytrail-key-state", default=None, key_type=bytes, value_type=bytes, partitions=partitions,
        use_partitioner=True, extra_topic_configs={"max.message.bytes": str(MAX_STATE_RECORD_BYTES)},
    )
    decoded_states: DecodedStates = {}
    # The default detectors, and idle periods a key's next use ended (in event time, like the embedded ingest).
    lifecycle = lifecycle_thresholds(load_alert_rules())
    aggregator = UsageAggregator(settings.allowed_lateness_seconds, [*default_detectors(), IdleGapDetector(lifecycle)])
    # Stream time per partition (live: a quiet partition follows the wall clock). One lock: the
    # agent's batches and the timer's closings never interleave on the same states.
    stream_times = StreamTimes(settings.allowed_lateness_seconds, live=True)
    stream_generation = [None]
    core_lock = asyncio.Lock()
    backend = open_clickhouse(settings.clickhouse_url)
    migrate(backend)
    sink = ClickHouseSink(backend)
    feedback = FeedbackApplier(ClickHouseFeedbackSource(backend, WORKER_FEEDBACK_POLL_SECONDS), aggregator.detectors)
    keystore_engine = create_store_engine(settings.keystore_url)
    key_owners = KeyOwners(partial(lookup_projects, keystore_engine))
    # Idle / never used / expiring of the key store's keys on each owned partition's event watermark.
    lifecycle_watch = PartitionedLifecycle(keystore_engine, partitions, lifecycle,
                                           (row["id"] for row in backend.query(RAISED_LIFECYCLE_SIGNALS)))
    counters = WorkerCounters()
    app.keytrail_counters = counters  # type: ignore[attr-defined]

    gap_guard = DeliveryGapGuard(
        lambda partition, start, end: read_offset_range(
            settings.kafka_bootstrap, Topics.USAGE.value, partition, start, end))
    guard_generation = [app.consumer_generation_id]

    def committed_offset(partition: int) -> int | None:
        return app.consumer._committed_offset.get(TP(Topics.USAGE.value, partition))

    @app.agent(usage, name="usage-aggregator", concurrency=1)
    async def aggregate_usage(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for batch in take_weighted(stream, settings.worker_batch_events, settings.worker_batch_size,
                                         settings.worker_batch_seconds):
            started = time.perf_counter()
            outputs: list[OutputRecord] = []
            if app.consumer_generation_id != guard_generation[0]:
                guard_generation[0] = app.consumer_generation_id
                gap_guard.reset()
            fills, filled_ranges = await loop.run_in_executor(
                None, gap_guard.screen, [(r.message.partition, r.message.offset) for r in batch], committed_offset)
            items: list[tuple[bytes, int, int]] = []
            for index, record in enumerate(batch):
                message = record.message
                if index in fills:
                    items.extend((value, message.partition, offset) for offset, value in fills[index])
                items.append((record.value, message.partition, message.offset))
            decoded = decode_batch(items)
            # Writes are scoped like reads: another project's key goes to the DLQ (same rule as HTTP).
            owners = await owners_of(decoded, key_owners) if decoded.events else {}
            decoded.rejected += refuse_out_of_scope(decoded, owners, settings.requires_existing_keys)
            # No secret reaches a table or a topic; each leak raises a secret_exposed signal.
            scrubbed = scrub_events(decoded.events)
            events = scrubbed.events
            positions = decoded.positions
            counters.secrets_redacted += scrubbed.redacted_events
            for rejected in decoded.rejected:
                counters.dead_lettered += 1
                counters.by_reason[rejected.code] = counters.by_reason.get(rejected.code, 0) + 1
                outputs.append(dead_letter_rejected(rejected, Topics.USAGE.value))
            counters.records += decoded.records
            counters.envelopes += decoded.envelopes
            mark = counters.spent("decode", started)
            async with core_lock:  # the timer closing quiet minutes waits for the batch to finish
                await follow_assignment()
                await loop.run_in_executor(None, lifecycle_watch.refresh_if_due, set(stream_times.partitions))
                overlay = SerializedStateOverlay(states, decoded_states, settings.worker_state_cache_keys)
                feedback.apply(events, overlay)  # marks "expected" teach their keys before the batch's events
                result = aggregator.process(events, overlay, positions, stream=stream_times)
                result.signals[:] = lifecycle_watch.signals(result, overlay, stream_times)
                result.signals.extend(scrubbed.signals)
                mark = counters.spent("core", mark)
                outputs += [OutputRecord(last_used_name, record.key_id.encode(), record.model_dump_json().encode())
                            for record in result.last_used]
                outputs += [OutputRecord(signals_name, signal.key_id.encode(), signal.model_dump_json().encode())
                            for signal in result.signals]
                # Outputs and ClickHouse rows are durable before the state that produced them is
                # written: if the state survives a crash, so did its outputs; if not, the events are
                # redelivered and redone (same rows, same records).
                if result.late:  # re-sent events of minutes closed long ago: the audit trail knows them
                    await loop.run_in_executor(None, sink.drop_stored_late, result)
                await asyncio.gather(
                    loop.run_in_executor(None, counters.timed("sink", sink.write_batch), result),
                    loop.run_in_executor(None, counters.timed("deliver", publisher.deliver), outputs),
                )
                mark = counters.spent("sink+deliver", mark)
                if result.last_used:
                    newest = max(record.last_used_at for record in result.last_used).timestamp()
                    counters.lag_s = time.time() - newest
                overlay.commit()
                stream_times.arrived({partition for partition, _ in positions}, int(time.time() * 1000))
            counters.spent("state", mark)
            counters.batches += 1
            counters.events += len(result.accepted)
            counters.duplicates += result.duplicates
            counters.late += len(result.late)
            if result.forgotten_event_ids:
                counters.forgotten_event_ids += result.forgotten_event_ids
                log.warning("dedupe memory bound reached: forgot %d event ids of hot keys' oldest open minutes "
                            "(a re-delivery of those events is recognised by its Kafka offset only)", result.forgotten_event_ids)
            for partition, spans in filled_ranges.items():
                # Processed above from the broker; no Faust message stands for them, so tell the commit.
                gaps = app.consumer._gap[TP(Topics.USAGE.value, partition)]
                for start, end in spans:
                    gaps.addi(start, end)
                    log.warning("%s[%d]: the stream skipped offsets %d-%d; read them from the broker and "
                                "processed them in order", Topics.USAGE.value, partition, start, end - 1)
            counters.log_progress()

    async def follow_assignment() -> None:
        """After a rebalance (or at start): every local partition's stream clock and open-minute index
        from the stored states (their newest event times and open minutes); a revoked one is dropped."""
        if stream_generation[0] == app.consumer_generation_id:
            return
        stream_generation[0] = app.consumer_generation_id
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == Topics.USAGE.value}
        rebuilt: dict[int, list[tuple[str, KeyState]]] = {partition: [] for partition in owned}
        for raw_key, raw in list(states.items()):
            state = KeyState.from_bytes(raw)
            if state.source is not None and state.source[0] in owned:
                rebuilt[state.source[0]].append((raw_key.decode(), state))
        for partition in list(stream_times.partitions):
            if partition not in rebuilt:
                stream_times.drop(partition)
        for partition, held in rebuilt.items():
            stream_times.rebuild(partition, held)

    @app.timer(5.0)
    async def close_quiet_minutes() -> None:
        """Live mode: quiet partitions follow the wall clock; the minutes their watermark passes close."""
        if not app.tables.recovery.completed.is_set():
            return
        async with core_lock:
            await follow_assignment()
            if not stream_times.tick(int(time.time() * 1000)):
                return
            overlay = SerializedStateOverlay(states, decoded_states, settings.worker_state_cache_keys)
            result = aggregator.advance(overlay, stream_times)
            outputs = [OutputRecord(signals_name, signal.key_id.encode(), signal.model_dump_json().encode())
                       for signal in result.signals]
            loop = asyncio.get_running_loop()
            if result.signals:
                await asyncio.gather(loop.run_in_executor(None, sink.write_batch, result),
                                     loop.run_in_executor(None, publisher.deliver, outputs))
            overlay.commit()

    hole_watch = CommitHoleWatch({Topics.USAGE.value, Topics.KEYS.value})

    @app.timer(10.0)
    async def resolve_commit_holes() -> None:
        """A partition's commit stuck behind offsets this worker never got: re-read or skip them."""
        for tp, committed, first_acked in hole_watch.stuck_partitions(app.consumer):
            held = await asyncio.get_running_loop().run_in_executor(
                None, offsets_holding_messages, settings.kafka_bootstrap, tp.topic, tp.partition, committed, first_acked)
            if held is None:
                log.warning("%s[%d]: commit held at %d; could not read offsets %d-%d from the broker, will retry",
                            tp.topic, tp.partition, committed, committed, first_acked - 1)
            elif not held:
                log.info("%s[%d]: offsets %d-%d hold no messages (transaction markers or compacted); "
                         "committing past them", tp.topic, tp.partition, committed, first_acked - 1)
                app.consumer._gap[tp].addi(committed, first_acked)
            else:
                counters.reread_holes += 1
                log.warning("%s[%d]: %d message(s) at offsets %d-%d never reached the worker and hold its "
                            "commit back; re-reading from %d (what was already counted is recognised and skipped)",
                            tp.topic, tp.partition, len(held), committed, first_acked - 1, committed)
                await app.consumer.seek_wait({tp: committed})

    keys_topic = app.topic(Topics.KEYS.value, key_type=bytes, value_type=bytes, partitions=partitions)
    audit_trail = ClickHouseLifecycleSink(backend)

    @app.agent(keys_topic, name="key-audit-trail", concurrency=1)
    async def store_audit_trail(stream: faust.StreamT) -> None:
        """Admin actions from the key store into ClickHouse (deduplicated there by event_id)."""
        loop = asyncio.get_running_loop()
        async for payloads in stream.take(1000, within=1.0):
            events = []
            refused: list[OutputRecord] = []
            for payload in payloads:
                try:
                    events.append(KeyLifecycleEvent.model_validate_json(payload))
                except ValidationError as exc:
                    refused.append(dead_letter(payload, describe_validation_error(exc), "invalid_lifecycle_event",
                                               Topics.KEYS.value))
            await asyncio.gather(
                loop.run_in_executor(None, audit_trail.write_events, events),
                loop.run_in_executor(None, publisher.deliver, refused),
            )

    return app
