"""KafkaEmitter: usage events to `keytrail.usage.v1`, never blocking the request path.

- `emit()` encodes the event (contract JSON, checks included) and appends it to an in-memory
  queue; that is all the request path does. A background sender thread takes the queue from
  there.
- **Envelopes (default).** The sender groups events per partition into UsageEnvelope v1 records
  (`keytrail.producers.envelopes`): the partition of each event is computed here, with
  `partition_for(key_id, partitions)` (Java-compatible murmur2, the one partitioner of the
  topic), and the record is produced to that partition explicitly, keyed by its first event's
  `key_id`, with the headers `keytrail-envelope: 1` and `keytrail-count`. An envelope goes out
  when it holds `envelope_events` events (500), when one more event would take it past
  `envelope_bytes` (512 KiB), or `linger_ms` (50 ms) after its first event, whichever comes
  first; `flush()` and `close()` send what is open at once. zstd compression is on by default for
  envelopes (see BENCHMARKS.md for lz4 against zstd).
- **Single events** (`envelopes=False`): one record per event, keyed by `key_id` and placed by
  librdkafka's `murmur2_random` partitioner, the Java client's default, so producers in other
  languages agree on a key's partition; lz4, librdkafka lingering `linger_ms` (10 ms).
- The producer is idempotent with `acks=all`.
- Nothing is lost quietly, and every guarantee holds per event: when the broker is unreachable
  (all brokers down, delivery failures, no topic metadata) or librdkafka's local queue is full,
  events go to a bounded on-disk spool (`keytrail.producers.spool.DiskSpool`), one spool record per
  event. While the spool holds anything, new events go behind it, so a key's events keep their
  order. A background thread replays the spool, oldest first, once the broker answers again and
  librdkafka's own queue has drained (as envelopes, in envelope mode); then direct delivery
  resumes. A record librdkafka gives back (time-outs, or purged at close) puts all its events in
  front of the spool; an envelope found too large halves the envelopes from then on and its
  events go through the spool again; a record the broker refuses for good counts all its events
  as `failed`.
- A **fatal** producer error (librdkafka's idempotence state lost sync with the broker, seen after
  a broker restart) ends that producer instance for good. The sender then retires it: what it
  still holds is purged back to the front of the spool, a new producer is built from the same
  settings (`producer_restarts` counts them) and the spool replays through it. Events whose first
  send may have reached the broker before the fatal error can then be in the topic twice; they
  carry the same `event_id`, and the worker counts an event_id once.
- When even the spool is full, or the in-memory queue is (`max_queue`: the sender is stuck), the
  event is dropped: counted (`counters.dropped`) and logged in a rate-limited line, never
  silently.

Two threads run per emitter: the sender (takes the queue, builds and produces records, serves
delivery reports and errors, writes the spool) and the replayer (reads topic metadata, probes the
broker, replays the spool). The request path never touches the spool or the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer

from keytrail.producers.emitter import EmitterCounters
from keytrail.producers.encoding import UsageEncoder, shared_encoder
from keytrail.producers.envelopes import Envelope, EnvelopePacker, EventRecord, pack
from keytrail.producers.spool import DEFAULT_MAX_BYTES, DiskSpool, FsyncPolicy, SpoolBatch
from keytrail.producers.throttled_log import ThrottledLog
from keytrail.schemas.codec import InvalidEvent
from keytrail.schemas.envelope import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_EVENTS
from keytrail.schemas.topics import Topics
from keytrail.schemas.usage import KeyUsageEvent

log = logging.getLogger(__name__)

PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)
"""Delivery errors that retrying cannot fix: the record's events are counted as failed. Every other
error (time-outs, transport, purges, unknown topic, fatal idempotence errors) sends them to the spool."""

TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
"""Errors of a record the broker (or librdkafka) finds too large. For an envelope of more than one
event they are not final: the emitter halves its envelopes and sends the same events again."""

DEFAULT_SPOOL_BASE = Path(".keytrail") / "spool"

ENVELOPE_LINGER_MS: Final = 50
"""Default `linger_ms` with envelopes: the longest an event waits in the SDK for its envelope to fill."""
SINGLE_LINGER_MS: Final = 10
"""Default `linger_ms` for single-event records (librdkafka's own `linger.ms`)."""
ENVELOPE_COMPRESSION: Final = "zstd"
"""Default Kafka compression for envelopes: 2.9x fewer bytes per event than lz4 (15.5 against 45) for
about 0.2 us more CPU per event in librdkafka's thread (bench/bench_emit.py; BENCHMARKS.md)."""
SINGLE_COMPRESSION: Final = "lz4"
"""Default Kafka compression for single-event records."""
ENVELOPE_PRODUCER_LINGER_MS: Final = 5
"""librdkafka's `linger.ms` under envelopes: they are already batches; this only lets envelopes of
several partitions share a produce request."""
_MAX_TICK: Final = 0.005


def producer_config(
    bootstrap_servers: str,
    *,
    linger_ms: int = SINGLE_LINGER_MS,
    compression: str = SINGLE_COMPRESSION,
    queue_max_messages: int = 500_000,
    queue_max_kbytes: int = 256 * 1024,
    message_timeout_ms: int = 300_000,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The librdkafka settings every KeyTrail usage producer uses (the CLI's `produce` too).

    `partitioner=murmur2_random` is the Java client's partitioner: records produced without an
    explicit partition land where `keytrail.schemas.partitioning.partition_for` says."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "keytrail-emitter",
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": compression,
        "linger.ms": linger_ms,
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": queue_max_messages,
        "queue.buffering.max.kbytes": queue_max_kbytes,
        "message.timeout.ms": message_timeout_ms,
        **(overrides or {}),
    }


def make_producer(config: dict[str, Any]) -> Producer:
    """The librdkafka producer of an emitter (a module function so fault-injection tests can wrap it)."""
    return Producer(config)


def _is_fatal(error: KafkaException) -> bool:
    first = error.args[0] if error.args else None
    return isinstance(first, KafkaError) and first.fatal()


class _LibrdkafkaLog:
    """librdkafka's own log lines, at DEBUG (every reconnect attempt during an outage would
    otherwise be an ERROR line); the emitter logs outages and losses itself, rate-limited."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("keytrail.producers.kafka_emitter.librdkafka")

    def log(self, _level: int, message: str, *args: object) -> None:
        self._logger.debug(message, *args)


class _ReplayTracker:
    """Delivery reports of the records of one replayed spool batch, counted in events."""

    def __init__(self, records: int, shrink: Callable[[int], None] | None = None) -> None:
        self.records = records
        self.shrink = shrink
        self.reported = 0
        self.delivered = 0
        self.permanent = 0
        self.retriable = 0
        self.first_error: KafkaError | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        if records == 0:
            self.done.set()

    def report(self, events: int, error: KafkaError | None, _message: object) -> None:
        with self._lock:
            self._report(events, error)

    def _report(self, events: int, error: KafkaError | None) -> None:
        if error is None:
            self.delivered += events
        else:
            self.first_error = self.first_error or error
            if error.code() in TOO_LARGE and events > 1 and self.shrink is not None:
                self.shrink(events)
                self.retriable += events
            elif error.code() in PERMANENT_ERRORS:
                self.permanent += events
            else:
                self.retriable += events
        self.reported += 1
        if self.reported >= self.records:
            self.done.set()


class KafkaEmitter:
    """Usage events to Kafka; see the module docstring for the records, delivery and spool semantics.

    `spool_dir` is this process's own spool directory; without it the first free `slot-N` under
    `spool_base` (default `.keytrail/spool/kafka-<topic>`) is claimed, so each worker of a
    multi-process server gets one and a restarted process replays what its predecessor left.
    Create the emitter after forking.

    Options: `envelopes` (default True) chooses envelope records or single-event records;
    `linger_ms` (default 50 with envelopes, 10 without) is the longest an event waits to share a
    record; `envelope_events` (≤ 500) and `envelope_bytes` (≤ 512 KiB) bound an envelope;
    `compression` (default zstd with envelopes, lz4 without) is Kafka's; `max_queue` bounds the
    events waiting for the sender in memory.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = Topics.USAGE.value,
        envelopes: bool = True,
        spool_dir: Path | str | None = None,
        spool_base: Path | str | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_fsync: FsyncPolicy = "interval",
        linger_ms: int | None = None,
        envelope_events: int = MAX_ENVELOPE_EVENTS,
        envelope_bytes: int = MAX_ENVELOPE_BYTES,
        compression: str | None = None,
        max_queue: int = 200_000,
        queue_max_messages: int = 500_000,
        queue_max_kbytes: int = 256 * 1024,
        message_timeout_ms: int = 300_000,
        producer_overrides: Mapping[str, Any] | None = None,
        replay_batch: int = 5000,
        flush_interval: float = 0.05,
        metadata_refresh: float = 30.0,
        strict: bool = False,
        encoder: UsageEncoder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = str(topic)
        self.envelopes = envelopes
        self.strict = strict
        self.replay_batch = replay_batch
        self.flush_interval = flush_interval
        self.metadata_refresh = metadata_refresh
        self.max_queue = max_queue
        if linger_ms is None:
            linger_ms = ENVELOPE_LINGER_MS if envelopes else SINGLE_LINGER_MS
        if compression is None:
            compression = ENVELOPE_COMPRESSION if envelopes else SINGLE_COMPRESSION
        self.linger_ms = linger_ms
        self.compression = compression
        self.envelope_events = envelope_events
        self.envelope_bytes = envelope_bytes
        # Checked now (a wrong limit must fail at construction, not in the sender thread).
        EnvelopePacker(1, max_events=envelope_events, max_bytes=envelope_bytes, linger=linger_ms / 1000)
        self._tick = min(_MAX_TICK, max(0.001, linger_ms / 4000)) if envelopes else _MAX_TICK
        self._clock = clock
        self._encoder = encoder or shared_encoder()
        self._losses = ThrottledLog(log)
        spool_options: dict[str, Any] = {"max_bytes": spool_max_bytes, "fsync": spool_fsync}
        self.spool = (
            DiskSpool(spool_dir, **spool_options)
            if spool_dir is not None
            else DiskSpool.claim(spool_base or DEFAULT_SPOOL_BASE / f"kafka-{self.topic}", **spool_options)
        )
        config = producer_config(
            bootstrap_servers,
            linger_ms=min(linger_ms, ENVELOPE_PRODUCER_LINGER_MS) if envelopes else linger_ms,
            compression=compression,
            queue_max_messages=queue_max_messages,
            queue_max_kbytes=queue_max_kbytes,
            message_timeout_ms=message_timeout_ms,
            overrides=producer_overrides,
        )
        config.update(
            {
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
                "logger": _LibrdkafkaLog(),
                "log.connection.close": False,
            }
        )
        self._producer_config = config
        self._producer = make_producer(config)
        self._produce = self._producer.produce
        self._fatal: str | None = None  # set (any thread) when the producer reports a fatal error
        self._retired: list[Producer] = []  # fatal producers still owing delivery reports
        self.producer_restarts = 0
        """How many times a fatal error made the sender build a new librdkafka producer."""

        # emit() threads: `_lock` guards `_closed`, `_emitted`, `_refused_dropped`, `_invalid`.
        self._lock = threading.Lock()
        self._queue: deque[EventRecord] = deque()
        self._closed = False
        # `_route_lock`: whether the sender produces or spools, against the replayer's switch back.
        self._route_lock = threading.Lock()
        self._spooling = not self.spool.empty
        self._inherited = len(self.spool)
        self._partitions: int | None = None  # topic partitions, from metadata (replayer thread)
        self._packer: EnvelopePacker | None = None  # sender thread only
        self._envelope_cap = envelope_events  # lowered when the broker finds envelopes too large
        self._urgent = 0  # flush() callers waiting: open envelopes go out without lingering
        self._stopping = threading.Event()
        self._wake_replayer = threading.Event()
        self._rescued: list[EventRecord] = []
        self._outage: str | None = None
        # Counters, each written by one thread only: `_emitted`, `_refused_dropped`, `_invalid`
        # (emit, under `_lock`); `_acked`, `_failed`, `_spooled`, `_dropped`, `_records`,
        # `_record_events` (sender); `_replayed`, `_replay_failed` (replayer).
        self._emitted = self._refused_dropped = self._invalid = 0
        self._acked = self._failed = self._spooled = self._dropped = 0
        self._records = self._record_events = 0
        self._replayed = self._replay_failed = 0
        if self._spooling:
            log.info(
                "emitter for %s starts in spool mode: %d event(s) from an earlier run",
                self.topic,
                len(self.spool),
            )
        self._sender = threading.Thread(
            target=self._send_loop, name=f"keytrail-kafka-sender[{self.topic}]", daemon=True
        )
        self._replayer = threading.Thread(
            target=self._replay_loop, name=f"keytrail-kafka-replayer[{self.topic}]", daemon=True
        )
        self._sender.start()
        self._replayer.start()

    # ------------------------------------------------------------------ the request path

    def emit(self, event: KeyUsageEvent | Mapping[str, Any]) -> None:
        """Queue one event; never blocks on the broker or the disk (see the module docstring)."""
        try:
            if type(event) is dict:
                record = self._encoder.encode(event)
            else:
                record = self._encoder.encode_any(event)
        except InvalidEvent as error:
            self._refuse(error)
            return
        with self._lock:
            self._emitted += 1
            if self._closed or len(self._queue) >= self.max_queue:
                self._drop_at_emit()
                return
            self._queue.append(record)

    def _refuse(self, error: InvalidEvent) -> None:
        with self._lock:
            self._invalid += 1
        if self.strict:
            raise error
        self._losses.warning("invalid", "refused an invalid usage event (%s): %s", error.code, error.reason)

    def _drop_at_emit(self) -> None:
        """Count and log an event that cannot be queued (caller holds `_lock`)."""
        self._refused_dropped += 1
        if self._closed:
            self._losses.error("closed", "usage event emitted after close() was dropped")
        else:
            self._losses.error(
                "queue-full",
                "usage event DROPPED: %d event(s) wait for the sender of %s (the queue is full); "
                "%d dropped so far",
                len(self._queue),
                self.topic,
                self._refused_dropped + self._dropped,
            )

    # ------------------------------------------------------------------ sender thread

    def _send_loop(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        more = False
        while not self._stopping.is_set():
            try:
                try:
                    self._producer.poll(0 if more else self._tick)
                except KafkaException as error:
                    if not _is_fatal(error):
                        raise
                    self._fatal = self._fatal or error.args[0].str()
                if self._fatal is not None:
                    self._renew_producer()
                if self._retired:
                    self._poll_retired()
                self._after_poll()
                more = self._pump()
                if time.monotonic() >= next_flush:
                    self.spool.flush()
                    next_flush = time.monotonic() + self.flush_interval
            except Exception:  # noqa: BLE001 - the sender must survive anything
                log.exception("usage emitter sender for %s hit an unexpected error", self.topic)
                time.sleep(self._tick)

    def _renew_producer(self) -> None:
        """Retire a producer that hit a fatal error and build a new one (sender thread).

        The old producer's queued and in-flight records are purged; their delivery reports put
        their events in front of the spool, which the replayer sends through the new producer."""
        why, old = self._fatal, self._producer
        with self._route_lock:
            self._enter_spooling(f"fatal producer error: {why}")
            try:
                old.purge(in_queue=True, in_flight=True, blocking=False)
            except KafkaException:
                pass
            deadline = time.monotonic() + 5.0
            while len(old) > 0 and time.monotonic() < deadline:
                try:
                    old.poll(0.05)
                except KafkaException:
                    pass
            self._producer = make_producer(self._producer_config)
            self._produce = self._producer.produce
            self._fatal = None
            self.producer_restarts += 1
            if len(old) > 0:
                self._retired.append(old)  # polled until its last delivery report is in
        log.warning(
            "Kafka producer for %s was rebuilt after a fatal error (%s); what it held goes through the spool",
            self.topic,
            why,
        )

    def _poll_retired(self) -> None:
        """Serve the delivery reports a retired producer still owes (sender thread)."""
        for producer in list(self._retired):
            try:
                producer.poll(0)
            except KafkaException:
                pass
            if len(producer) == 0:
                self._retired.remove(producer)

    def _pump(self, limit: int = 4 * MAX_ENVELOPE_EVENTS) -> bool:
        """Move up to `limit` queued events on (records or spool); True when more are queued.
        Works in slices so the request threads get the interpreter between them."""
        queue = self._queue
        with self._route_lock:
            if self._spooling:
                records = self._take(queue, limit)
                if self._packer is not None and len(self._packer):
                    records = self._packer.take_events() + records  # older than the queue
                if records:
                    self._to_spool(records)
                return bool(queue)
            if not self.envelopes:
                self._send_records(self._take(queue, limit))
                return bool(queue)
            packer = self._packer
            if self._partitions is None:
                return False  # no metadata yet: events wait in the queue (the replayer is asking)
            if packer is None:
                packer = self._packer = EnvelopePacker(
                    self._partitions,
                    max_events=self._envelope_cap,
                    max_bytes=self.envelope_bytes,
                    linger=self.linger_ms / 1000,
                )
            elif packer.partitions != self._partitions:
                if not self._send_envelopes(packer.set_partitions(self._partitions)):
                    return bool(queue)
            packer.max_events = self._envelope_cap
            now = self._clock()
            ready = packer.add(self._take(queue, limit), now)
            ready += packer.close_all() if self._urgent else packer.due(now)
            self._send_envelopes(ready)
            return bool(queue)

    @staticmethod
    def _take(queue: deque[EventRecord], limit: int) -> list[EventRecord]:
        popleft = queue.popleft
        return [popleft() for _ in range(min(limit, len(queue)))]

    def _send_envelopes(self, envelopes: Sequence[Envelope]) -> bool:
        """Produce envelopes in order (caller holds `_route_lock`); False when librdkafka's queue
        filled up and the rest (with every open envelope) went to the spool."""
        produce, topic = self._produce, self.topic
        for index, envelope in enumerate(envelopes):
            try:
                produce(
                    topic,
                    envelope.value,
                    envelope.key,
                    partition=envelope.partition,
                    headers=envelope.headers,
                    on_delivery=partial(self._on_envelope_delivery, envelope.events),
                )
            except BufferError:
                self._enter_spooling("librdkafka's local queue is full")
                self._spool_from(envelopes, index)
                return False
            except KafkaException as error:
                code = error.args[0].code() if error.args else None
                if _is_fatal(error):  # this producer is finished: a new one sends them
                    self._fatal = self._fatal or error.args[0].str()
                    self._enter_spooling(f"fatal producer error: {self._fatal}")
                    self._spool_from(envelopes, index)
                    return False
                if code in TOO_LARGE and envelope.count > 1:
                    self._shrink(envelope.count)
                    self._enter_spooling("an envelope was too large for the producer")
                    self._spool_from(envelopes, index)
                    return False
                self._fail(envelope.count, error.args[0].str() if error.args else str(error))
                continue
            self._records += 1
            self._record_events += envelope.count
        return True

    def _spool_from(self, envelopes: Sequence[Envelope], index: int) -> None:
        """Spool the events of `envelopes[index:]` and of every open envelope, in order (sender thread)."""
        rest = [record for later in envelopes[index:] for record in later.events]
        if self._packer is not None:
            rest += self._packer.take_events()
        self._to_spool(rest)

    def _shrink(self, count: int) -> None:
        """Envelopes of `count` events were too large: send at most half as many from now on."""
        cap = max(1, count // 2)
        if cap < self._envelope_cap:
            self._envelope_cap = cap
            log.warning(
                "an envelope of %d usage events was too large for %s; envelopes now carry at most %d",
                count,
                self.topic,
                cap,
            )

    def _fail(self, count: int, why: str) -> None:
        """Count `count` events refused for good (sender thread)."""
        self._failed += count
        self._losses.error("refused", "%d usage event(s) refused for good by %s: %s", count, self.topic, why)

    def _send_records(self, records: list[EventRecord]) -> None:
        """Produce single-event records in order (caller holds `_route_lock`)."""
        produce, topic = self._produce, self.topic
        for index, (key, value) in enumerate(records):
            try:
                produce(topic, value, key)
            except BufferError:
                self._enter_spooling("librdkafka's local queue is full")
                self._to_spool(records[index:])
                break
            except KafkaException as error:
                if _is_fatal(error):  # this producer is finished: a new one sends them
                    self._fatal = self._fatal or error.args[0].str()
                    self._enter_spooling(f"fatal producer error: {self._fatal}")
                    self._to_spool(records[index:])
                    break
                self._fail(1, error.args[0].str() if error.args else str(error))
                continue
            self._records += 1
        self._record_events = self._records

    def _to_spool(self, records: list[EventRecord]) -> None:
        """Append events to the spool, counting (and logging) what does not fit (sender thread)."""
        kept = self.spool.append_many(records)
        self._spooled += kept
        if kept < len(records):
            self._lose_to_full_spool(len(records) - kept)

    def _lose_to_full_spool(self, count: int) -> None:
        self._dropped += count
        self._losses.error(
            "spool-full",
            "%d usage event(s) DROPPED: the spool at %s is full (%d bytes); %d event(s) dropped so far",
            count,
            self.spool.directory,
            self.spool.max_bytes,
            self._dropped + self._refused_dropped,
        )

    def _enter_spooling(self, why: str) -> None:
        """Send new events to the spool from now on."""
        if not self._spooling:
            self._spooling = True
            log.warning(
                "usage events for %s now go to the spool at %s: %s", self.topic, self.spool.directory, why
            )
        self._wake_replayer.set()

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        """Delivery report of a single-event record."""
        if error is None:
            self._acked += 1
        elif error.code() in PERMANENT_ERRORS:
            self._failed += 1
            self._losses.error("refused", "the broker refused a usage event for good: %s", error.str())
        else:
            self._rescued.append((message.key() or b"", message.value()))
            self._outage = f"delivery failed: {error.str()}"

    def _on_envelope_delivery(self, events: list[EventRecord], error: KafkaError | None, _message: Any) -> None:
        """Delivery report of an envelope: its outcome is each of its events' outcome."""
        if error is None:
            self._acked += len(events)
        elif error.code() in TOO_LARGE and len(events) > 1:
            self._shrink(len(events))
            self._rescued.extend(events)  # sent again, in smaller envelopes, through the spool
            self._outage = f"an envelope of {len(events)} events was too large: {error.str()}"
        elif error.code() in PERMANENT_ERRORS:
            self._failed += len(events)
            self._losses.error(
                "refused",
                "the broker refused an envelope of %d usage event(s) for good: %s",
                len(events),
                error.str(),
            )
        else:
            self._rescued.extend(events)
            self._outage = f"delivery failed: {error.str()}"

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._outage = "all brokers are down"
        elif error.fatal():
            self._outage = f"fatal producer error: {error.str()}"
            self._fatal = self._fatal or error.str()
            log.error(
                "Kafka producer for %s hit a fatal error: %s (events are kept in the spool; a new producer takes over)",
                self.topic,
                error.str(),
            )
        else:
            log.debug("Kafka client error for %s: %s", self.topic, error.str())

    def _after_poll(self) -> None:
        if self._outage is not None:
            why, self._outage = self._outage, None
            with self._route_lock:
                self._enter_spooling(why)
        if self._rescued:
            rescued, self._rescued = self._rescued, []
            with self._route_lock:
                self._enter_spooling("the broker gave events back")
            kept = self.spool.prepend(rescued)
            self._spooled += kept
            if kept < len(rescued):
                self._lose_to_full_spool(len(rescued) - kept)

    # ------------------------------------------------------------------ replayer thread

    def _replay_loop(self) -> None:
        backoff = 0.2
        next_metadata = 0.0
        while not self._stopping.is_set():
            if not self._spooling:
                if self.envelopes and (self._partitions is None or time.monotonic() >= next_metadata):
                    if self._broker_reachable():
                        next_metadata = time.monotonic() + self.metadata_refresh
                    elif self._partitions is None:  # events cannot be placed: keep them on disk
                        with self._route_lock:
                            self._enter_spooling("no metadata for the topic")
                        continue
                    else:
                        next_metadata = time.monotonic() + 1.0
                wait = max(0.0, min(0.5, next_metadata - time.monotonic())) if self.envelopes else 0.5
                self._wake_replayer.wait(wait)
                self._wake_replayer.clear()
                continue
            try:
                progressed = self._replay_step()
            except Exception:  # noqa: BLE001 - keep replaying whatever happens
                log.exception("replaying the usage spool for %s failed; retrying", self.topic)
                progressed = False
            if progressed:
                backoff = 0.2
                next_metadata = time.monotonic() + self.metadata_refresh
            else:
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _broker_reachable(self) -> bool:
        """Whether the broker answers and every partition of the topic has a leader (else a
        rate-limited warning says why and how much is waiting). Records the partition count."""
        try:
            metadata = self._producer.list_topics(self.topic, timeout=2.0)
            topic = metadata.topics.get(self.topic)
            if not metadata.brokers or topic is None:
                why = "no broker metadata"
            elif topic.error is not None:
                why = f"topic {self.topic}: {topic.error.str()}"
            elif not topic.partitions or any(p.leader < 0 for p in topic.partitions.values()):
                why = f"topic {self.topic} has partitions without a leader"
            else:
                self._partitions = len(topic.partitions)
                return True
        except KafkaException as error:
            why = error.args[0].str() if error.args else str(error)
        self._losses.warning(
            "waiting",
            "Kafka not reachable for %s (%s); %d event(s), %d bytes wait in the spool at %s",
            self.topic,
            why,
            len(self.spool),
            self.spool.pending_bytes,
            self.spool.directory,
        )
        return False

    def _replay_step(self) -> bool:
        """One replay attempt; True when it made progress (or finished)."""
        if not self._broker_reachable():
            return False
        settle_until = time.monotonic() + 30.0
        while len(self._producer) > 0 or self._rescued:  # older, direct records go first
            if self._stopping.is_set() or time.monotonic() > settle_until:
                return False
            time.sleep(0.02)
        batch = self.spool.read(self.replay_batch)
        if not batch.records:
            with self._route_lock:
                if self.spool.empty and not self._rescued and len(self._producer) == 0:
                    self._spooling = False
                    log.info("usage events for %s are delivered directly again (spool replayed)", self.topic)
            return True
        return self._replay(batch)

    def _replay(self, batch: SpoolBatch) -> bool:
        cap = self._envelope_cap
        if self.envelopes and self._partitions is not None:
            envelopes = pack(
                batch.records,
                self._partitions,
                max_events=self._envelope_cap,
                max_bytes=self.envelope_bytes,
            )
            tracker = _ReplayTracker(len(envelopes), self._shrink)
            sends: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
                (
                    (self.topic, e.value, e.key),
                    {
                        "partition": e.partition,
                        "headers": e.headers,
                        "on_delivery": partial(tracker.report, e.count),
                    },
                )
                for e in envelopes
            ]
        else:
            tracker = _ReplayTracker(len(batch.records))
            report = partial(tracker.report, 1)
            sends = [((self.topic, value, key or None), {"on_delivery": report}) for key, value in batch.records]
        for args, options in sends:
            while True:
                try:
                    self._produce(*args, **options)
                    break
                except BufferError:
                    if self._stopping.wait(0.01):
                        return False
                except KafkaException as error:  # refused before sending: a report of our own
                    if _is_fatal(error):
                        self._fatal = self._fatal or error.args[0].str()
                    options["on_delivery"](error.args[0] if error.args else KafkaError(KafkaError._FAIL), None)
                    break
        if not tracker.done.wait(60.0) or tracker.retriable:
            if self._envelope_cap < cap:
                return True  # envelopes were too large: again at once, smaller
            reason = tracker.first_error.str() if tracker.first_error else "no delivery report in time"
            log.warning(
                "replaying %d spooled usage event(s) to %s failed (%s); will retry",
                len(batch),
                self.topic,
                reason,
            )
            return False
        if self.spool.commit(batch):
            self._replayed += tracker.delivered
            if tracker.permanent:
                self._replay_failed += tracker.permanent
                self._losses.error(
                    "refused",
                    "the broker refused %d spooled usage event(s) for good: %s",
                    tracker.permanent,
                    tracker.first_error.str() if tracker.first_error else "",
                )
        return True

    # ------------------------------------------------------------------ flush, close, counters

    @property
    def spooling(self) -> bool:
        """True while new events go to the spool (outage, full local queue, or replay in progress)."""
        return self._spooling

    @property
    def counters(self) -> EmitterCounters:
        """What happened to the emitted events so far."""
        with self._lock:
            emitted, dropped_at_emit, invalid = self._emitted, self._refused_dropped, self._invalid
        return EmitterCounters(
            emitted=emitted,
            delivered=self._acked + self._replayed,
            spooled=self._spooled,
            replayed=self._replayed,
            dropped=dropped_at_emit + self._dropped,
            failed=self._failed + self._replay_failed,
            invalid=invalid,
        )

    @property
    def records(self) -> tuple[int, int]:
        """`(records produced directly, events in them)`: their ratio is the mean envelope size
        (spool replays not included)."""
        return self._records, self._record_events

    def pending(self) -> int:
        """Events without an outcome yet (queued, in open envelopes, in librdkafka's queue, given
        back, or in the spool, including a spool left by an earlier run)."""
        with self._lock:
            emitted, dropped_at_emit = self._emitted, self._refused_dropped
        settled = (
            self._acked + self._replayed + self._failed + self._replay_failed + self._dropped + dropped_at_emit
        )
        return max(0, emitted + self._inherited - settled)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until everything emitted so far has an outcome (delivered, spool replayed, or
        counted as failed or dropped), or `timeout` passes; open envelopes go out at once.
        Returns how many events are still pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._urgent += 1
        try:
            self._wake_replayer.set()
            while True:
                pending = self.pending()
                if pending == 0 or (deadline is not None and time.monotonic() >= deadline):
                    return pending
                time.sleep(0.005)
        finally:
            with self._lock:
                self._urgent -= 1

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what can be delivered within `timeout`; what cannot is kept in the spool (the next
        emitter on this spool replays it). Events emitted after close are dropped (counted)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._stopping.set()
        self._wake_replayer.set()
        self._replayer.join()
        self._sender.join()
        # Whatever librdkafka still holds goes back to the spool (in front: it is older); what
        # never left the SDK (open envelopes, the queue) goes behind it.
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        deadline = time.monotonic() + 5.0
        while len(self._producer) > 0 and time.monotonic() < deadline:
            self._producer.poll(0.05)
        while self._retired and time.monotonic() < deadline:
            self._poll_retired()
            time.sleep(0.01)
        self._after_poll()
        left = self._packer.take_events() if self._packer is not None else []
        left += self._take(self._queue, len(self._queue))
        if left:
            self._to_spool(left)
        self.spool.close()
        counters = self.counters
        log.info(
            "usage emitter for %s closed: %s; %d event(s) left in the spool",
            self.topic,
            counters.as_dict(),
            len(self.spool),
        )

    def __enter__(self) -> KafkaEmitter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
