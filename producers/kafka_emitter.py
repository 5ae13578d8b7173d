"""KafkaEmitter: usage events to `keytrail.usage.v1`, never blocking the request path.

- Records are keyed by `key_id` and partitioned with `murmur2_random` (the Java client's
  partitioner), so a key's events land on the partition the worker's state table expects.
- The producer is idempotent with `acks=all`, compresses (lz4 by default) and lingers a few
  milliseconds to build big batches. `emit()` hands pre-serialised bytes to `produce()`.
- `emit()` never waits for the broker. When librdkafka's local queue is full, or the broker is
  unreachable (all brokers down, delivery failures), events go to a bounded on-disk spool
  (`keytrail.producers.spool.DiskSpool`). While the spool holds anything, new events go behind it, so a
  key's events keep their order. A background thread replays the spool, oldest first, once the
  broker answers again and librdkafka's own queue has drained; then direct delivery resumes.
  Events librdkafka gives back (time-outs, or purged at close) go in front of the spool.
- When even the spool is full, the event is dropped: counted (`counters.dropped`) and logged in
  a rate-limited line, never silently.

Two threads run per emitter: the poller (serves delivery reports and errors, writes the spool
buffer to disk) and the replayer (probes the broker, replays the spool).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from keytrail.producers.emitter import EmitterCounters
from keytrail.producers.encoding import UsageEncoder, shared_encoder
from keytrail.producers.spool import DEFAULT_MAX_BYTES, DiskSpool, FsyncPolicy, SpoolBatch
from keytrail.producers.throttled_log import ThrottledLog
from keytrail.schemas.codec import InvalidEvent
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
"""Delivery errors that retrying cannot fix: the event is counted as failed. Every other error
(time-outs, transport, purges, unknown topic, fatal idempotence errors) sends it to the spool."""

DEFAULT_SPOOL_BASE = Path(".keytrail") / "spool"


def producer_config(
    bootstrap_servers: str,
    *,
    linger_ms: int = 10,
    compression: str = "lz4",
    queue_max_messages: int = 500_000,
    queue_max_kbytes: int = 256 * 1024,
    message_timeout_ms: int = 300_000,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The librdkafka settings every KeyTrail usage producer uses (the CLI's `produce` too)."""
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


class _LibrdkafkaLog:
    """librdkafka's own log lines, at DEBUG (every reconnect attempt during an outage would
    otherwise be an ERROR line); the emitter logs outages and losses itself, rate-limited."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("keytrail.producers.kafka_emitter.librdkafka")

    def log(self, _level: int, message: str, *args: object) -> None:
        self._logger.debug(message, *args)


class _ReplayTracker:
    """Delivery reports of one replayed spool batch."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.delivered = 0
        self.permanent = 0
        self.retriable = 0
        self.first_error: KafkaError | None = None
        self.done = threading.Event()

    def __call__(self, error: KafkaError | None, _message: object) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.first_error = self.first_error or error
            if error.code() in PERMANENT_ERRORS:
                self.permanent += 1
            else:
                self.retriable += 1
        if self.delivered + self.permanent + self.retriable >= self.expected:
            self.done.set()


class KafkaEmitter:
    """Usage events to Kafka; see the module docstring for the delivery and spool semantics.

    `spool_dir` is this process's own spool directory; without it the first free `slot-N` under
    `spool_base` (default `.keytrail/spool/kafka-<topic>`) is claimed, so each worker of a
    multi-process server gets one and a restarted process replays what its predecessor left.
    Create the emitter after forking.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = Topics.USAGE.value,
        spool_dir: Path | str | None = None,
        spool_base: Path | str | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_fsync: FsyncPolicy = "interval",
        linger_ms: int = 10,
        compression: str = "lz4",
        queue_max_messages: int = 500_000,
        queue_max_kbytes: int = 256 * 1024,
        message_timeout_ms: int = 300_000,
        producer_overrides: Mapping[str, Any] | None = None,
        replay_batch: int = 5000,
        flush_interval: float = 0.05,
        strict: bool = False,
        encoder: UsageEncoder | None = None,
    ) -> None:
        self.topic = str(topic)
        self.strict = strict
        self.replay_batch = replay_batch
        self.flush_interval = flush_interval
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
            linger_ms=linger_ms,
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
        self._producer = Producer(config)
        self._produce = self._producer.produce
        self._lock = threading.Lock()
        self._spooling = not self.spool.empty
        self._closed = False
        self._stopping = threading.Event()
        self._wake_replayer = threading.Event()
        self._rescued: list[tuple[bytes, bytes]] = []
        self._outage: str | None = None
        # counters: `_emitted`, `_spooled`, `_dropped`, `_invalid`, `_replayed` change under `_lock`;
        # `_acked` and `_failed` only in the poller thread (delivery reports).
        self._emitted = self._spooled = self._dropped = self._invalid = self._replayed = 0
        self._acked = self._failed = 0
        self._replay_failed = 0  # under `_lock` (replayer thread)
        self._poll_rounds = 0  # completed poller rounds: flush() waits for one after the queue empties
        if self._spooling:
            log.info(
                "emitter for %s starts in spool mode: %d event(s) from an earlier run",
                self.topic,
                len(self.spool),
            )
        self._poller = threading.Thread(
            target=self._poll_loop, name=f"keytrail-kafka-poller[{self.topic}]", daemon=True
        )
        self._replayer = threading.Thread(
            target=self._replay_loop, name=f"keytrail-kafka-replayer[{self.topic}]", daemon=True
        )
        self._poller.start()
        self._replayer.start()

    # ------------------------------------------------------------------ the request path

    def emit(self, event: KeyUsageEvent | Mapping[str, Any]) -> None:
        """Queue one event; never blocks on the broker (see the module docstring)."""
        try:
            if type(event) is dict:
                key, value = self._encoder.encode(event)
            else:
                key, value = self._encoder.encode_any(event)
        except InvalidEvent as error:
            self._refuse(error)
            return
        with self._lock:
            self._emitted += 1
            if not self._spooling and not self._closed:
                try:
                    self._produce(self.topic, value, key)
                    return
                except BufferError:
                    self._enter_spooling("librdkafka's local queue is full")
            self._spool_one(key, value)

    def _refuse(self, error: InvalidEvent) -> None:
        with self._lock:
            self._invalid += 1
        if self.strict:
            raise error
        self._losses.warning("invalid", "refused an invalid usage event (%s): %s", error.code, error.reason)

    def _spool_one(self, key: bytes, value: bytes) -> None:
        """Append to the spool (caller holds `_lock`)."""
        if self._closed:
            self._dropped += 1
            self._losses.error("closed", "usage event emitted after close() was dropped")
        elif self.spool.append(key, value):
            self._spooled += 1
        else:
            self._dropped += 1
            self._losses.error(
                "spool-full",
                "usage event DROPPED: the spool at %s is full (%d bytes); %d event(s) dropped so far",
                self.spool.directory,
                self.spool.max_bytes,
                self._dropped,
            )

    def _enter_spooling(self, why: str) -> None:
        """Send new events to the spool from now on (caller holds `_lock`)."""
        if not self._spooling:
            self._spooling = True
            log.warning(
                "usage events for %s now go to the spool at %s: %s", self.topic, self.spool.directory, why
            )
        self._wake_replayer.set()

    # ------------------------------------------------------------------ poller thread

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            self._acked += 1
        elif error.code() in PERMANENT_ERRORS:
            self._failed += 1
            self._losses.error("refused", "the broker refused a usage event for good: %s", error.str())
        else:
            self._rescued.append((message.key() or b"", message.value()))
            self._outage = f"delivery failed: {error.str()}"

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._outage = "all brokers are down"
        elif error.fatal():
            self._outage = f"fatal producer error: {error.str()}"
            log.error(
                "Kafka producer for %s hit a fatal error: %s (events are kept in the spool)",
                self.topic,
                error.str(),
            )
        else:
            log.debug("Kafka client error for %s: %s", self.topic, error.str())

    def _poll_loop(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        while not self._stopping.is_set():
            try:
                self._producer.poll(self.flush_interval)
                self._after_poll()
                self._poll_rounds += 1
                if time.monotonic() >= next_flush:
                    self.spool.flush()
                    next_flush = time.monotonic() + self.flush_interval
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("usage emitter poller for %s hit an unexpected error", self.topic)
                time.sleep(self.flush_interval)

    def _after_poll(self) -> None:
        if self._outage is not None:
            why, self._outage = self._outage, None
            with self._lock:
                self._enter_spooling(why)
        if self._rescued:
            rescued, self._rescued = self._rescued, []
            with self._lock:
                self._enter_spooling("the broker gave events back")
            kept = self.spool.prepend(rescued)
            with self._lock:
                self._spooled += kept
                self._dropped += len(rescued) - kept
            if kept < len(rescued):
                self._losses.error(
                    "spool-full",
                    "%d usage event(s) DROPPED: the spool at %s is full",
                    len(rescued) - kept,
                    self.spool.directory,
                )

    # ------------------------------------------------------------------ replayer thread

    def _replay_loop(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            if not self._spooling:
                self._wake_replayer.wait(0.5)
                self._wake_replayer.clear()
                continue
            try:
                progressed = self._replay_step()
            except Exception:  # noqa: BLE001 - keep replaying whatever happens
                log.exception("replaying the usage spool for %s failed; retrying", self.topic)
                progressed = False
            if progressed:
                backoff = 0.2
            else:
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _broker_reachable(self) -> bool:
        """Whether the broker answers and every partition of the topic has a leader (else a
        rate-limited warning says why and how much is waiting)."""
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
        while len(self._producer) > 0 or self._rescued:  # older, direct events go first
            if self._stopping.is_set() or time.monotonic() > settle_until:
                return False
            time.sleep(0.02)
        batch = self.spool.read(self.replay_batch)
        if not batch.records:
            with self._lock:
                if self.spool.empty and not self._rescued and len(self._producer) == 0:
                    self._spooling = False
                    log.info("usage events for %s are delivered directly again (spool replayed)", self.topic)
            return True
        return self._replay(batch)

    def _replay(self, batch: SpoolBatch) -> bool:
        tracker = _ReplayTracker(len(batch.records))
        for key, value in batch.records:
            while True:
                try:
                    self._produce(self.topic, value, key or None, on_delivery=tracker)
                    break
                except BufferError:
                    if self._stopping.wait(0.01):
                        return False
        if not tracker.done.wait(60.0) or tracker.retriable:
            reason = tracker.first_error.str() if tracker.first_error else "no delivery report in time"
            log.warning(
                "replaying %d spooled usage event(s) to %s failed (%s); will retry",
                len(batch),
                self.topic,
                reason,
            )
            return False
        if self.spool.commit(batch):
            with self._lock:
                self._replayed += tracker.delivered
            if tracker.permanent:
                with self._lock:
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
            return EmitterCounters(
                emitted=self._emitted,
                delivered=self._acked + self._replayed,
                spooled=self._spooled,
                replayed=self._replayed,
                dropped=self._dropped,
                failed=self._failed + self._replay_failed,
                invalid=self._invalid,
            )

    def pending(self) -> int:
        """Events not yet delivered: in librdkafka's queue, given back, or in the spool."""
        return len(self._producer) + len(self._rescued) + len(self.spool)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until everything emitted so far is delivered (spool included) or `timeout` passes;
        returns how many events are still pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake_replayer.set()
        while True:
            pending = self.pending()
            if pending == 0 and self._poller.is_alive():
                # librdkafka counts a report as done when the poller takes it, before its callback
                # runs: wait for a whole poller round so the counters include it.
                rounds = self._poll_rounds
                while self._poll_rounds < rounds + 2 and (deadline is None or time.monotonic() < deadline):
                    time.sleep(0.005)
                pending = self.pending()
            if pending == 0 or (deadline is not None and time.monotonic() >= deadline):
                return pending
            time.sleep(0.01)

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
        self._poller.join()
        # Whatever librdkafka still holds goes back to the spool (in front: it is older).
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        deadline = time.monotonic() + 5.0
        while len(self._producer) > 0 and time.monotonic() < deadline:
            self._producer.poll(0.05)
        self._after_poll()
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
