"""Key records and the queries on them: reading keys and their audit trail, the shared write
transaction, and the lifecycle-event outbox every change goes through.

`KeyRecords` is the base of `keystore.store.KeyStore`; `lifecycle.py`, `lookup.py` and
`last_used.py` add the operations on top of it.
"""

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from uuid import uuid4

from sqlalchemy import Connection, Engine, Row, insert, select, update

from keytrail.keystore.caller import Caller
from keytrail.keystore.engine import WRITE_OPTION
from keytrail.keystore.errors import KeyNotFound
from keytrail.keystore.hashing import KeyHasher
from keytrail.keystore.key_format import BASE62_ALPHABET, generate_key, parse_key
from keytrail.keystore.lifecycle_sinks import LifecycleSink
from keytrail.keystore.listing import KeyFilter
from keytrail.keystore.ownership import lookup_projects
from keytrail.keystore.tables import api_keys, key_lifecycle_events
from keytrail.keystore.verification import VerificationCache
from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.lifecycle import KeyLifecycleEvent, LifecycleAction

log = logging.getLogger("keytrail.keystore.store")

KEY_ID_PREFIX: Final = "key_"
KEY_ID_RANDOM_LENGTH: Final = 20


@dataclass(frozen=True, slots=True)
class Rotation:
    """The outcome of a rotation: the old key (now in its grace period), its successor, and the
    successor's secret, shown exactly once."""

    previous: KeyRecord
    successor: KeyRecord
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one expiry sweep changed."""

    expired: list[str]
    grace_ended: list[str]

    @property
    def changed(self) -> int:
        """How many keys the sweep changed."""
        return len(self.expired) + len(self.grace_ended)


def current_utc_time() -> datetime:
    """Now, in UTC, unrounded (cheaper than `utc_now` on the verify path)."""
    return datetime.now(UTC)


def new_key_id() -> str:
    """A public key id: `key_` + 20 base62 characters (never resembles a secret)."""
    return KEY_ID_PREFIX + "".join(secrets.choice(BASE62_ALPHABET) for _ in range(KEY_ID_RANDOM_LENGTH))


def record_from_row(row: Row[Any]) -> KeyRecord:
    """The public view of a stored key."""
    return KeyRecord(
        id=row.id,
        name=row.name,
        project_id=row.project_id,
        owner=row.owner,
        scopes=list(row.scopes),
        quota=row.quota,
        ip_allowlist=list(row.ip_allowlist),
        status=KeyStatus(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        last_used_ip=row.last_used_ip,
        rotated_from=row.rotated_from,
        grace_until=row.grace_until,
        display_prefix=row.display_prefix,
        hint=row.hint,
    )


class KeyRecords:
    """The state every part of the store shares, the reads, and the write/outbox machinery."""

    _engine: Engine
    _reader: Engine
    _hasher: KeyHasher
    _env: str
    _sink: LifecycleSink | None
    _clock: Callable[[], datetime]
    _cache: VerificationCache

    def get(self, key_id: str, *, caller: Caller | None = None) -> KeyRecord:
        """One key's public record."""
        caller = caller or Caller.system()
        with self._reader.connect() as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise KeyNotFound(key_id)
        caller.check_read(key_id, row.project_id)
        return record_from_row(row)

    def check_ready(self) -> None:
        """Raise unless the store can be read and written now: one read, then an empty write
        transaction (on SQLite it takes the write lock, so a store locked by another process answers
        `KeyStoreBusy` within the bounded wait)."""
        with self._reader.connect() as connection:
            connection.execute(select(api_keys.c.id).limit(1)).all()
        with self._writing():
            pass

    def projects_of(self, key_ids: Iterable[str]) -> dict[str, str]:
        """The project of each of `key_ids` that exists (unknown ids are left out); one indexed
        query per 500 ids. For scoping writes: ingest checks every event's key against it."""
        return lookup_projects(self._reader, key_ids)

    def list_keys(self, filters: KeyFilter | None = None, *, caller: Caller | None = None) -> list[KeyRecord]:
        """Keys matching `filters`, confined to the caller's project."""
        caller = caller or Caller.system()
        filters = filters or KeyFilter()
        visible_project = caller.check_project_read(filters.project_id)
        query = filters.ordered(select(api_keys).where(*filters.conditions(self._clock(), visible_project)))
        with self._reader.connect() as connection:
            return [record_from_row(row) for row in connection.execute(query)]

    def lifecycle_events(self, key_id: str, *, caller: Caller | None = None) -> list[KeyLifecycleEvent]:
        """The audit trail of one key, oldest first (kept after the key is purged)."""
        caller = caller or Caller.system()
        query = (
            select(key_lifecycle_events.c.project_id, key_lifecycle_events.c.payload)
            .where(key_lifecycle_events.c.key_id == key_id)
            .order_by(key_lifecycle_events.c.sequence)
        )
        with self._reader.connect() as connection:
            rows = connection.execute(query).all()
        if not rows:
            raise KeyNotFound(key_id)
        caller.check_read(key_id, rows[0].project_id)
        return [KeyLifecycleEvent.model_validate_json(row.payload) for row in rows]

    def publish_pending_events(self, sink: LifecycleSink | None = None, limit: int = 1000) -> int:
        """Hand events not yet published (sink down, or no sink in this process) to `sink`;
        returns how many were published. Consumers deduplicate by `event_id`."""
        sink = sink or self._sink
        if sink is None:
            return 0
        query = (
            select(key_lifecycle_events.c.payload)
            .where(key_lifecycle_events.c.published_at.is_(None))
            .order_by(key_lifecycle_events.c.sequence)
            .limit(limit)
        )
        with self._reader.connect() as connection:
            pending = [
                KeyLifecycleEvent.model_validate_json(row.payload) for row in connection.execute(query)
            ]
        return self._publish(pending, sink)

    def _publish(self, events: Sequence[KeyLifecycleEvent], sink: LifecycleSink | None = None) -> int:
        sink = sink or self._sink
        if sink is None or not events:
            return 0
        published: list[str] = []
        for event in events:
            try:
                sink.publish(event)
            except Exception as error:  # the change is committed; the event stays in the outbox
                log.warning(
                    "lifecycle event %s for key %s not published yet: %s", event.event_id, event.key_id, error
                )
                break
            published.append(str(event.event_id))
        if published:
            with self._writing() as connection:
                connection.execute(
                    update(key_lifecycle_events)
                    .where(key_lifecycle_events.c.event_id.in_(published))
                    .values(published_at=self._clock())
                )
        return len(published)

    def _log_event(
        self,
        connection: Connection,
        record: KeyRecord,
        action: LifecycleAction,
        actor: str,
        reason: str,
        before: KeyRecord | None,
        after: KeyRecord | None,
        now: datetime,
    ) -> KeyLifecycleEvent:
        event = KeyLifecycleEvent(
            event_id=uuid4(),
            occurred_at=now,
            key_id=record.id,
            project_id=record.project_id,
            action=action,
            actor=actor[:200],
            reason=reason[:1000],
            before=before.model_dump(mode="json") if before is not None else None,
            after=after.model_dump(mode="json") if after is not None else None,
        )
        connection.execute(
            insert(key_lifecycle_events).values(
                event_id=str(event.event_id),
                occurred_at=event.occurred_at,
                key_id=event.key_id,
                project_id=event.project_id,
                action=event.action.value,
                payload=event.model_dump_json(),
            )
        )
        return event

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._engine.connect().execution_options(**{WRITE_OPTION: True}) as connection:
            with connection.begin():
                yield connection

    @staticmethod
    def _locked_row(connection: Connection, key_id: str) -> Row[Any]:
        row = connection.execute(select(api_keys).where(api_keys.c.id == key_id).with_for_update()).first()
        if row is None:
            raise KeyNotFound(key_id)
        return row

    def _insert_key(
        self, connection: Connection, values: dict[str, Any], now: datetime
    ) -> tuple[KeyRecord, str]:
        secret = generate_key(self._env)
        parsed = parse_key(secret)
        assert parsed is not None  # a freshly generated key always parses
        row = {
            "id": new_key_id(),
            "status": KeyStatus.ACTIVE.value,
            "status_reason": "",
            "created_at": now,
            "updated_at": now,
            "key_hash": self._hasher.hexdigest(secret),
            "display_prefix": parsed.display_prefix,
            "hint": parsed.hint,
            **values,
        }
        connection.execute(insert(api_keys).values(**row))
        self._cache.forget(self._hasher.digest(secret))
        return self._locked_row_record(connection, row["id"]), secret

    def _locked_row_record(self, connection: Connection, key_id: str) -> KeyRecord:
        return record_from_row(self._locked_row(connection, key_id))
