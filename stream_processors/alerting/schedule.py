"""Running the scanner on a schedule: a thread or an asyncio task (embedded), a Faust timer (production)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class PeriodicScan:
    """Calls `job()` every `interval_s` seconds in a daemon thread until `stop()`; errors are logged, not fatal."""

    def __init__(
        self,
        job: Callable[[], Any],
        interval_s: float,
        *,
        run_first: bool = True,
        name: str = "keytrail-alert-scan",
    ) -> None:
        self.job = job
        self.interval_s = interval_s
        self.run_first = run_first
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> PeriodicScan:
        self._thread.start()
        return self

    def _loop(self) -> None:
        if not self.run_first and self._stop.wait(self.interval_s):
            return
        while not self._stop.is_set():
            self._run_once()
            if self._stop.wait(self.interval_s):
                return

    def _run_once(self) -> None:
        try:
            self.job()
        except Exception:  # a failing scan must not stop the next one
            log.exception("alert scan failed")
        finally:
            self.runs += 1

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> PeriodicScan:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


async def run_periodically(
    job: Callable[[], Any], interval_s: float, *, stop: asyncio.Event | None = None
) -> None:
    """The asyncio flavour (e.g. a task in the embedded server's lifespan); the blocking job runs in a thread."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await asyncio.to_thread(job)
        except Exception:
            log.exception("alert scan failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            continue


def register_faust_timer(app: Any, scanner: Any, interval: float) -> Callable[[], Any]:
    """Run `scanner.scan()` (an AlertEngine or anything with `.scan()`) every `interval` seconds in a Faust app.

    Uses `@app.timer(interval, on_leader=True)` so one worker of the group scans, not every one.
    The blocking scan runs in a thread so the event loop keeps consuming. Returns the one-shot
    coroutine function the timer calls (handy for tests and for a manual `await`).
    """

    async def keytrail_alert_scan() -> None:
        try:
            await asyncio.to_thread(scanner.scan)
        except Exception:
            log.exception("alert scan failed")

    app.timer(interval, on_leader=True, name="keytrail_alert_scan")(keytrail_alert_scan)
    return keytrail_alert_scan
