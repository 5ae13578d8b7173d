"""`last_used_at` from the stream (the projector's updates): forward only, coalesced per key."""

from collections.abc import Iterable, Sequence
from datetime import UTC

from sqlalchemy import bindparam, or_, text, update

from keytrail.keystore.records import KeyRecords
from keytrail.keystore.tables import UtcDateTime, api_keys
from keytrail.schemas.last_used import LastUsed

_APPLY_LAST_USED_PG = text(
    """
    UPDATE api_keys AS k
       SET last_used_at = b.used_at, last_used_ip = b.used_ip
      FROM unnest(CAST(:ids AS text[]), CAST(:projects AS text[]), CAST(:times AS timestamptz[]),
                  CAST(:ips AS text[])) AS b(key_id, project_id, used_at, used_ip)
     WHERE k.id = b.key_id AND k.project_id = b.project_id
       AND (k.last_used_at IS NULL OR k.last_used_at < b.used_at)
    """
)
"""The projector's batch update on PostgreSQL (same rule as the portable statement: forward only)."""

def newest_per_key(records: Iterable[LastUsed]) -> dict[str, LastUsed]:
    """The newest record per key (by event time, then event id, so a replay picks the same one)."""
    newest: dict[str, LastUsed] = {}
    for record in records:
        current = newest.get(record.key_id)
        if current is None or (record.last_used_at, record.event_id) > (
            current.last_used_at,
            current.event_id,
        ):
            newest[record.key_id] = record
    return newest


class LastUsedUpdates(KeyRecords):
    """What the projector and `keytrail replay` do to the key store."""

    def apply_last_used(self, records: Sequence[LastUsed]) -> int:
        """Move `last_used_at`/`last_used_ip` forward, never back; returns the rows changed.

        The batch is coalesced to the newest record per key first. Applying the same batch again
        changes nothing, so a replay of the last-used topic is harmless. Records whose project does
        not match the key's are ignored.
        """
        newest = newest_per_key(records)
        if not newest:
            return 0
        ordered = sorted(newest.values(), key=lambda record: record.key_id)
        if self._engine.dialect.name == "postgresql":
            return self._apply_last_used_in_one_statement(ordered)
        statement = (
            update(api_keys)
            .where(
                api_keys.c.id == bindparam("b_key_id"),
                api_keys.c.project_id == bindparam("b_project_id"),
                or_(
                    api_keys.c.last_used_at.is_(None),
                    api_keys.c.last_used_at < bindparam("b_used_at", type_=UtcDateTime),
                ),
            )
            .values(
                last_used_at=bindparam("b_used_at", type_=UtcDateTime),
                last_used_ip=bindparam("b_used_ip"),
            )
        )
        parameters = [
            {
                "b_key_id": record.key_id,
                "b_project_id": record.project_id,
                "b_used_at": record.last_used_at,
                "b_used_ip": record.last_used_ip,
            }
            for record in ordered
        ]
        with self._writing() as connection:
            result = connection.execute(statement, parameters)
            return max(result.rowcount, 0)

    def _apply_last_used_in_one_statement(self, ordered: Sequence[LastUsed]) -> int:
        """One `UPDATE … FROM unnest(arrays)` for the whole batch on PostgreSQL.

        An executemany of row updates cost ~0.4 ms per key (65-117 ms per 200 keys measured);
        a `VALUES` list cost as much in SQL compilation. Four array parameters keep one cached
        statement whatever the batch size: ~4 ms per 200 keys.
        """
        parameters = {
            "ids": [record.key_id for record in ordered],
            "projects": [record.project_id for record in ordered],
            "times": [record.last_used_at.astimezone(UTC) for record in ordered],
            "ips": [record.last_used_ip for record in ordered],
        }
        with self._writing() as connection:
            result = connection.execute(_APPLY_LAST_USED_PG, parameters)
            return max(result.rowcount, 0)

    def reset_last_used(self) -> int:
        """Forget every `last_used_at`/`last_used_ip`, before rebuilding them by replaying the log;
        returns the rows changed."""
        with self._writing() as connection:
            result = connection.execute(
                update(api_keys)
                .where(api_keys.c.last_used_at.is_not(None))
                .values(last_used_at=None, last_used_ip=None)
            )
            return max(result.rowcount, 0)
