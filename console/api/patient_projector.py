"""last_used_at for the console's embedded pipeline without blocking requests on a locked key store.

The stream's projector retries until the key store accepts a batch, which is right for a Kafka
consumer (offsets wait) but made every console request hang behind a key store that another
process held locked. Here a batch the store refuses stays pending, coalesced newest-per-key
(`last_used_at` only moves forward, so applying the newest later gives the same result), and is
retried with the next batch and on every flush tick of the console runtime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from keytrail.keystore.last_used import newest_per_key
from keytrail.schemas.last_used import LastUsed

log = logging.getLogger(__name__)

MAX_PENDING_KEYS = 1_000_000
RETRY_AFTER_SECONDS = 2.0
"""After a refusal, batches only add to the pending set for this long; the flush tick retries."""


class PatientProjector:
    """`apply(records)` tries the key store once; what it refuses waits for `retry_pending()`."""

    def __init__(self, keystore) -> None:  # noqa: ANN001 - a KeyStore (apply_last_used)
        self.keystore = keystore
        self.applied = 0
        self.deferrals = 0
        self._pending: dict[str, LastUsed] = {}
        self._lock = threading.Lock()
        self._failed_at = float("-inf")

    @property
    def pending(self) -> int:
        """How many keys wait for their last_used_at to reach the key store."""
        return len(self._pending)

    def apply(self, records: Iterable[LastUsed]) -> int:
        with self._lock:
            for record in newest_per_key(records).values():
                current = self._pending.get(record.key_id)
                if current is None or (record.last_used_at, record.event_id) > (current.last_used_at, current.event_id):
                    self._pending[record.key_id] = record
            if time.monotonic() - self._failed_at < RETRY_AFTER_SECONDS:
                return 0  # the store refused a moment ago: do not make this batch wait for it again
            return self._flush_locked()

    def retry_pending(self) -> int:
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        if not self._pending:
            return 0
        batch = list(self._pending.values())
        try:
            changed = self.keystore.apply_last_used(batch)
        except Exception as error:  # noqa: BLE001 - busy, or down: keep it for the next try
            self.deferrals += 1
            self._failed_at = time.monotonic()
            if self.deferrals % 100 == 1:
                log.warning(
                    "key store refused last_used_at of %d key(s) (%s); kept for the next try",
                    len(batch), type(error).__name__,
                )
            if len(self._pending) > MAX_PENDING_KEYS:  # never grows without bound: oldest keys first
                for key_id in list(self._pending)[: len(self._pending) - MAX_PENDING_KEYS]:
                    del self._pending[key_id]
            return 0
        self._pending.clear()
        self.applied += changed
        return changed
