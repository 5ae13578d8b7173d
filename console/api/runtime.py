"""What one console app owns while it runs: the embedded pipeline, its lock, the usage buffer,
the expiry sweeper and the metrics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from keytrail.console.api.metrics import ConsoleMetrics
from keytrail.console.api.patient_projector import PatientProjector
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.keystore.sweeper import ExpirySweeper
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.stream_processors.core.aggregate import BatchResult

log = logging.getLogger(__name__)

CONSOLE_SERVICE = "keytrail-console"
MAX_BUFFERED_USAGE = 100_000
REQUEST_WAIT_SECONDS = 2.0
"""Longest a request waits for the pipeline (held by a long ingest, or stuck on a locked key store)."""
WEDGED_AFTER_SECONDS = 60.0
"""A pipeline held this long without a break makes /healthz answer 503: the process is not live."""


class PipelineBusy(Exception):
    """The pipeline stayed held past the request's bounded wait."""

    code = "pipeline_busy"
    retry_after_seconds = 2


class ConsoleRuntime:
    """The pipeline behind a lock (chDB and the core's state are used from one thread at a time)
    and a buffer of the console's own usage events, flushed into the pipeline in the background."""

    def __init__(
        self,
        pipeline: EmbeddedPipeline,
        *,
        owns_pipeline: bool,
        flush_seconds: float = 0.5,
        sweep_seconds: float = 3600.0,
    ) -> None:
        self.pipeline = pipeline
        self.owns_pipeline = owns_pipeline
        self.last_used: PatientProjector | None = None
        if hasattr(pipeline, "projector"):  # never block requests on a key store locked elsewhere
            self.last_used = pipeline.projector = PatientProjector(pipeline.keystore)
        self.lock = threading.RLock()
        self._held_since: float | None = None
        self._holders = 0
        self.metrics = ConsoleMetrics(self.count_keys)
        self._buffer: list[KeyUsageEvent] = []
        self._buffer_lock = threading.Lock()
        self._dropped = 0
        self._flush_seconds = flush_seconds
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None
        self._sweeper = ExpirySweeper(pipeline.keystore, sweep_seconds)

    @property
    def keystore(self):  # noqa: ANN201 - the KeyStore
        return self.pipeline.keystore

    def start(self) -> None:
        self._sweeper.start()
        self._flusher = threading.Thread(target=self._flush_loop, name="keytrail-console-usage", daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join(10)
        self._sweeper.stop()
        self.flush_usage()
        if self.owns_pipeline:
            self.pipeline.close()

    # ------------------------------------------------------------------ the pipeline
    @contextmanager
    def _pipeline(self, wait: float | None = REQUEST_WAIT_SECONDS) -> Iterator[None]:
        """Hold the pipeline; requests wait at most `wait` seconds, then `PipelineBusy` (a 503)."""
        if not self.lock.acquire(timeout=-1 if wait is None else wait):
            raise PipelineBusy(
                f"the embedded pipeline has been busy for more than {wait:.0f} s "
                f"(held for {self.held_seconds():.0f} s: a long ingest, or a locked key store); retry shortly"
            )
        try:
            self._holders += 1
            if self._holders == 1:
                self._held_since = time.monotonic()
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                self._held_since = None
            self.lock.release()

    def held_seconds(self) -> float:
        """For how long the pipeline has been held without a break (0 when free)."""
        since = self._held_since
        return 0.0 if since is None else time.monotonic() - since

    def ingest(self, events: Iterable[KeyUsageEvent], wait: float | None = REQUEST_WAIT_SECONDS) -> BatchResult:
        with self._pipeline(wait):
            redacted_before = getattr(self.pipeline, "secrets_redacted", 0)
            result = self.pipeline.ingest(list(events))
            redacted = getattr(self.pipeline, "secrets_redacted", 0) - redacted_before
        if redacted > 0:
            self.metrics.events_redacted.inc(redacted)
        self.metrics.events_ingested.inc(len(result.accepted) + len(result.late))
        self.metrics.events_duplicate.inc(result.duplicates)
        return result

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._pipeline():
            return self.pipeline.clickhouse.query(sql, params)

    def run(self, function, *args, **kwargs):  # noqa: ANN001, ANN201 - run under the pipeline lock
        with self._pipeline():
            return function(*args, **kwargs)

    # ------------------------------------------------------------------ the console's own usage
    def record_request(
        self,
        *,
        key_id: str,
        project_id: str,
        method: str,
        route: str,
        status: int,
        outcome: Outcome,
        latency_ms: float,
        client_ip: str,
        user_agent: str,
        request_id: str = "",
    ) -> None:
        """Queue a KeyUsageEvent for one API request made with a KeyTrail key."""
        try:
            event = KeyUsageEvent(
                event_id=uuid4(),
                occurred_at=datetime.now(UTC),
                key_id=key_id,
                project_id=project_id,
                service=CONSOLE_SERVICE,
                method=method.upper()[:16] or "GET",
                route=route[:512] or "/",
                status=status,
                outcome=outcome,
                latency_ms=max(latency_ms, 0.0),
                client_ip=client_ip,
                user_agent=user_agent[:512],
                request_id=request_id[:128],
            )
        except ValueError:
            log.warning("console usage event for %s not recorded: invalid fields", key_id)
            return
        with self._buffer_lock:
            if len(self._buffer) >= MAX_BUFFERED_USAGE:
                self._dropped += 1
                if self._dropped % 1000 == 1:
                    log.warning("console usage buffer full: %d events dropped so far", self._dropped)
                return
            self._buffer.append(event)

    def flush_usage(self) -> int:
        """Ingest the queued usage events now; returns how many were queued."""
        with self._buffer_lock:
            batch, self._buffer = self._buffer, []
        if self.last_used is not None and self.last_used.pending and not batch:
            self.last_used.retry_pending()
        if batch:
            try:
                self.ingest(batch, wait=None)  # the background flusher waits its turn
            except Exception:  # the request path never fails because of its own audit trail
                log.exception("could not ingest %d console usage events", len(batch))
        return len(batch)

    def _flush_loop(self) -> None:
        while not self._stopping.wait(self._flush_seconds):
            self.flush_usage()
            self.follow_wall_clock()

    def follow_wall_clock(self) -> None:
        """Live mode: a quiet stream's watermark follows the wall clock, so quiet keys' minutes close."""
        tick = getattr(self.pipeline, "tick", None)
        if tick is None:
            return
        try:
            with self._pipeline(wait=None):
                tick(int(time.time() * 1000))
        except Exception:  # the server keeps serving; the next tick retries
            log.exception("could not advance the stream by the wall clock")

    # ------------------------------------------------------------------ metrics
    def count_keys(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            for record in self.keystore.list_keys():
                counts[record.status.value] = counts.get(record.status.value, 0) + 1
        except Exception:
            log.exception("could not count keys for /metrics")
        return counts
