"""The embedded default: the same core, in-process, with chDB and the SQLite key store."""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from keytrail.keystore.file_modes import ensure_private_directory
from keytrail.keystore.store import KeyStore
from keytrail.schemas.secrets import scrub_events
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.settings import Settings
from keytrail.sql.backends import ClickHouseBackend, open_clickhouse
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.alerting import PeriodicScan, build_alert_engine, load_alert_rules
from keytrail.stream_processors.alerting.decide import lifecycle_thresholds
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.core.aggregate import BatchResult, UsageAggregator
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.gc_pause import collector_paused
from keytrail.stream_processors.core.stream_time import EMBEDDED_PARTITION, StreamTimes
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.detectors.key_lifecycle import IdleGapDetector, KeyFacts, LifecycleWatch
from keytrail.stream_processors.feedback_store import ClickHouseFeedbackSource, FeedbackApplier
from keytrail.stream_processors.projector import LastUsedProjector
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from keytrail.stream_processors.sinks.lifecycle_audit import ClickHouseLifecycleSink
from keytrail.stream_processors.state_stores import SqliteStates

EMBEDDED_FEEDBACK_POLL_SECONDS = 30.0
"""How often the embedded pipeline re-reads `detector_feedback` for marks stored by other processes."""


RAISED_LIFECYCLE_SIGNALS = (
    "SELECT DISTINCT toString(signal_id) AS id FROM signals WHERE kind IN ('idle', 'never_used', 'expiring_soon')"
)
"""What earlier runs raised, so a re-ingest or a restart raises none of it again."""


class StoreInUse(RuntimeError):
    """Another process owns the embedded store (one writer per data directory keeps counts exact)."""


_held: dict[Path, list] = {}
_held_lock = threading.Lock()


class DataDirectoryLock:
    """An exclusive lock on an embedded data directory, held for the life of the pipeline.

    Counts stay exact because one process at a time folds events into a data directory's key
    states and minute rows; a second process is refused at once with one line naming the owner
    and the way to reach it (`keytrail ingest` without `--direct` posts to the running console).
    Re-entrant within a process (the console and the demo open the pipeline more than once).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = (data_dir / "keytrail.lock").resolve()

    def acquire(self) -> None:
        with _held_lock:
            held = _held.get(self.path)
            if held is not None:
                held[1] += 1
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise StoreInUse(
                    f"the embedded store {self.path.parent} is in use by {owner}; send events through it "
                    f"(`keytrail ingest FILE` without --direct posts to the running console) or stop it first"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv[:2]) or 'python'})".encode(), 0)
            _held[self.path] = [fd, 1]

    def release(self) -> None:
        with _held_lock:
            held = _held.get(self.path)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                fd = held[0]
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                del _held[self.path]


class EmbeddedPipeline:
    """Events in -> core -> chDB sink -> projector -> key store, all in this process.

    chDB allows one process per data directory: in embedded mode this object (inside
    `keytrail serve` or `keytrail demo`) is the one owner.
    """

    def __init__(self, settings: Settings, *, clickhouse: ClickHouseBackend | None = None,
                 keystore: KeyStore | None = None, alerting: bool = True) -> None:
        ensure_private_directory(settings.data_dir)  # 0700 whatever the umask (and the chDB dir below)
        if settings.clickhouse_url.startswith("chdb://"):
            ensure_private_directory(Path(settings.clickhouse_url.removeprefix("chdb://")))
        self.settings = settings
        self.lock = DataDirectoryLock(settings.data_dir)
        self.lock.acquire()
        try:
            self._open(settings, clickhouse, keystore, alerting)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, settings: Settings, clickhouse: ClickHouseBackend | None, keystore: KeyStore | None,
              alerting: bool) -> None:
        self.clickhouse = clickhouse or open_clickhouse(settings.clickhouse_url)
        migrate(self.clickhouse)
        self.audit_trail = ClickHouseLifecycleSink(self.clickhouse)
        self.keystore = keystore or KeyStore.open(
            settings.keystore_url, settings.hashing_secret(), env=settings.key_env, lifecycle_sink=self.audit_trail
        )
        self.keystore.publish_pending_events(self.audit_trail)  # whatever earlier processes left in the outbox
        self.states = SqliteStates(Path(settings.data_dir) / "core-state.db")
        thresholds = lifecycle_thresholds(load_alert_rules())
        # The default detectors, and idle periods that ended (the watermark flags the ones still going).
        self.aggregator = UsageAggregator(settings.allowed_lateness_seconds,
                                          [*default_detectors(), IdleGapDetector(thresholds)])
        # Stream time: one partition; its watermark closes quiet keys' minutes and drives idle /
        # never-used / expiring in event time. Rebuilt from the stored states (newest event time,
        # open minutes), so a restart continues where the last run stopped.
        self.stream = StreamTimes(settings.allowed_lateness_seconds)
        self.stream.rebuild(EMBEDDED_PARTITION, self.states.items())
        self.lifecycle = LifecycleWatch(thresholds)
        self.lifecycle.remember(row["id"] for row in self.clickhouse.query(RAISED_LIFECYCLE_SIGNALS))
        self._keys_loaded_at: float | None = None
        self._recorded_scan_signals: set[str] = set()
        # Marks made in this process are handed over at once (notify); others are read at start and polled.
        self.feedback_source = ClickHouseFeedbackSource(self.clickhouse, poll_seconds=EMBEDDED_FEEDBACK_POLL_SECONDS)
        self.feedback = FeedbackApplier(self.feedback_source, self.aggregator.detectors, owns_every_key=True)
        self.sink = ClickHouseSink(self.clickhouse)
        self.projector = LastUsedProjector(self.keystore)
        self.alerts: AlertEngine | None = None
        if alerting:
            self.alerts = build_alert_engine(self.clickhouse, self.keystore)
            self.alerts.start()
        self._alert_scan: PeriodicScan | None = None

    def start_alert_scans(self) -> None:
        """Scan for idle, never-used, expiring and over-quota keys on the rules' interval (server mode)."""
        if self._alert_scan is None and self.alerts is not None:
            self._alert_scan = PeriodicScan(self.scan_and_record, self.alerts.rules.scan_interval_seconds)
            self._alert_scan.start()

    def ingest(self, events: Iterable[KeyUsageEvent]) -> BatchResult:
        """Process one batch end to end; returns what the core produced."""
        scrubbed = scrub_events(events)  # no secret reaches a table; each leak raises secret_exposed
        self.secrets_redacted = getattr(self, "secrets_redacted", 0) + scrubbed.redacted_events
        with collector_paused():
            self.feedback.apply(scrubbed.events, self.states)  # marks "expected" teach before the events
            result = self.aggregator.process(scrubbed.events, self.states, stream=self.stream)
            result.signals.extend(scrubbed.signals)
            result.signals[:] = self.lifecycle.admit(result.signals)
            result.signals.extend(self._lifecycle_signals(result))
            self.sink.drop_stored_late(result)  # a re-ingest reports what was counted before as such
            self.sink.write_batch(result)
        self.projector.apply(result.last_used)
        self.states.commit()  # after the outputs are durable: a crash in between redoes the batch
        if self.stream.live:
            self.stream.arrived([EMBEDDED_PARTITION], int(time.time() * 1000))
        if self.alerts is not None:
            self.alerts.handle_result(result)
        return result

    def scan_and_record(self) -> None:
        """The live-mode (wall clock) driver of idle / never-used / expiring: alerts, and the signals
        recorded like the stream's (the same ids the watermark gives them, so never twice)."""
        if self.alerts is None:
            return
        report = self.alerts.scan()
        fresh = [signal for signal in report.signals if signal.signal_id not in self._recorded_scan_signals]
        if fresh:
            self.sink.write_batch(BatchResult(signals=fresh))
            self._recorded_scan_signals.update(signal.signal_id for signal in fresh)

    KEY_STORE_REFRESH_SECONDS = 60.0
    """How often the event-time lifecycle evaluation re-reads the key store (new keys, renewals)."""

    def _lifecycle_signals(self, result: BatchResult) -> list:
        """Idle / never-used / expiring of the key store's keys whose deadline the watermark passed."""
        now = time.monotonic()
        if self._keys_loaded_at is None or now - self._keys_loaded_at >= self.KEY_STORE_REFRESH_SECONDS:
            self.lifecycle.load(KeyFacts.of(record) for record in self.keystore.list_keys())
            self._keys_loaded_at = now
        for record in result.last_used:
            self.lifecycle.used(record.key_id, epoch_ms(record.last_used_at))
        return self.lifecycle.advance(self.stream.event_watermark_ms(), self._last_used_in_event_time)

    def _last_used_in_event_time(self, key_id: str) -> tuple[int, str] | None:
        state = self.states.get(key_id)
        if state is None or state.last_used_ms <= 0:
            return None
        return state.last_used_ms, state.last_used_ip

    def tick(self, now_ms: int) -> BatchResult:
        """Live mode (the server): a quiet stream follows the wall clock, and the minutes it passes close."""
        self.stream.live = True
        self.stream.tick(now_ms)
        with collector_paused():
            result = self.aggregator.advance(self.states, self.stream)
            self.sink.write_batch(result)
        self.states.commit()
        if self.alerts is not None and result.signals:
            self.alerts.handle_result(result)
        return result

    def close(self) -> None:
        if self._alert_scan is not None:
            self._alert_scan.stop()
        if self.alerts is not None:
            self.alerts.close()
        self.sink.close()
        self.keystore.close()
        self.states.close()
        self.lock.release()
