"""Log lines that must never be silent but must not flood the log either (losses, outages)."""

from __future__ import annotations

import logging
import threading
import time


class ThrottledLog:
    """At most one line per `interval` seconds per topic; the next line says how many were held back.

    Used for every loss (dropped or failed events) so a loss is always visible, even at 100k/s.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, topic: str, message: str, *args: object) -> None:
        """Log `message % args` under `topic`, unless a line on that topic went out within the interval."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self.interval:
                self._held[topic] = self._held.get(topic, 0) + 1
                return
            self._last[topic] = now
            held = self._held.pop(topic, 0)
        if held:
            message += " (%d similar message(s) held back in the last %.0f s)"
            args = (*args, held, self.interval)
        self.logger.log(level, message, *args)

    def warning(self, topic: str, message: str, *args: object) -> None:
        """`log` at WARNING."""
        self.log(logging.WARNING, topic, message, *args)

    def error(self, topic: str, message: str, *args: object) -> None:
        """`log` at ERROR."""
        self.log(logging.ERROR, topic, message, *args)
