"""The worker's write scope: events naming another project's key go to the DLQ, never into counts.

The rule is `keytrail.keystore.ownership.scope_refusals`, the one `POST /v1/events` applies. The
owners come from the key store through a `KeyOwners` cache (per distinct key, never per event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from keytrail.keystore.ownership import KeyOwners, scope_refusals
from keytrail.schemas.batch_codec import DecodedBatch, Rejected
from keytrail.schemas.secrets import redact_text

log = logging.getLogger(__name__)

LOOKUP_RETRY_MAX_SECONDS = 30.0


def refuse_out_of_scope(
    batch: DecodedBatch, owners: dict[str, str], requires_existing_keys: Callable[[str], bool]
) -> list[Rejected]:
    """Take the out-of-scope events out of `batch` (events and positions); return them as refused."""
    refusals = scope_refusals([(e.key_id, e.project_id) for e in batch.events], owners, requires_existing_keys)
    if not refusals:
        return []
    refused_at = {refusal.position: refusal for refusal in refusals}
    rejected = []
    indexes = batch.indexes if len(batch.indexes) == len(batch.events) else [None] * len(batch.events)
    for position, refusal in refused_at.items():
        partition, offset = batch.positions[position]
        payload = msgspec.json.encode(batch.events[position])
        rejected.append(Rejected(payload, refusal.reason, refusal.code, partition, offset, indexes[position]))
    batch.events = [e for i, e in enumerate(batch.events) if i not in refused_at]
    batch.positions = [p for i, p in enumerate(batch.positions) if i not in refused_at]
    batch.indexes = [x for i, x in enumerate(indexes) if i not in refused_at]
    return rejected


async def owners_of(batch: DecodedBatch, key_owners: KeyOwners) -> dict[str, str]:
    """The owning projects of the batch's keys. While the key store cannot answer, the batch waits
    (retried with backoff, logged): judging without it would let cross-project writes in, refusing
    would dead-letter good events. Keys already cached never wait."""
    loop = asyncio.get_running_loop()
    keys = {event.key_id for event in batch.events}
    backoff = 0.5
    while True:
        try:
            return await loop.run_in_executor(None, key_owners.owners, keys)
        except Exception as error:  # noqa: BLE001 - any store failure: wait, never guess
            first_line = str(error).splitlines()[0][:200] if str(error) else ""
            log.warning("key store not answering for the write-scope check (%s: %s); batch waits %.1f s",
                        type(error).__name__, redact_text(first_line), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LOOKUP_RETRY_MAX_SECONDS)
