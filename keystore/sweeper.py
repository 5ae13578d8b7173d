"""Running the expiry sweep on a schedule (hourly by default), in a thread or an asyncio task."""

import asyncio
import logging
import threading
from typing import Protocol

from keytrail.keystore.store import SweepReport

log = logging.getLogger(__name__)

DEFAULT_SWEEP_INTERVAL_SECONDS = 3600.0


class Sweepable(Protocol):
    """Anything with the key store's `sweep()`."""

    def sweep(self) -> SweepReport: ...


def sweep_once(store: Sweepable) -> SweepReport | None:
    """One sweep; failures are logged, not raised, so the schedule keeps going."""
    try:
        report = store.sweep()
    except Exception:
        log.exception("key expiry sweep failed; retrying at the next interval")
        return None
    if report.changed:
        log.info(
            "key expiry sweep: %d expired, %d rotated keys revoked",
            len(report.expired),
            len(report.grace_ended),
        )
    return report


class ExpirySweeper:
    """A daemon thread that sweeps at start and then every `interval_seconds`.

    Use as a context manager, or `start()` / `stop()`. Several processes may sweep the same store.
    """

    def __init__(self, store: Sweepable, interval_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS) -> None:
        if interval_seconds <= 0:
            raise ValueError("the sweep interval must be positive (seconds)")
        self._store = store
        self.interval_seconds = interval_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> "ExpirySweeper":
        """Start sweeping in the background."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="keytrail-expiry-sweeper", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the sweep in progress, if any."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "ExpirySweeper":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            sweep_once(self._store)
            self.runs += 1
            self._stopping.wait(self.interval_seconds)


async def sweep_forever(store: Sweepable, interval_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS) -> None:
    """The asyncio form: sweep now and every `interval_seconds` until cancelled (the sweep itself
    runs in a worker thread, so the event loop is never blocked by the database)."""
    while True:
        await asyncio.to_thread(sweep_once, store)
        await asyncio.sleep(interval_seconds)
