"""KeyStore: the system of record for API keys (SQLAlchemy 2 Core on SQLite or PostgreSQL).

Every change runs in one write transaction that locks the key's row (`SELECT … FOR UPDATE` on
Postgres, `BEGIN IMMEDIATE` on SQLite), writes the change and its `KeyLifecycleEvent` to the
outbox table, commits, then hands the event to the lifecycle sink.
"""

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import uuid4

from sqlalchemy import Connection, Engine, Row, Select, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from keystore import migrations
from keystore.caller import Caller
from keystore.engine import WRITE_OPTION, create_store_engine
from keystore.errors import InvalidKeyRequest, KeyAlreadyRotated, KeyNotFound, KeyStateConflict
from keystore.expiry import parse_duration, parse_renew_period, resolve_expiry
from keystore.hashing import KeyHasher
from keystore.key_fields import (
    clean_ip_allowlist,
    clean_name,
    clean_owner,
    clean_project_id,
    clean_quota,
    clean_scopes,
)
from keystore.key_format import BASE62_ALPHABET, ENV_PATTERN, checksum_holds, generate_key, parse_key
from keystore.lifecycle_sinks import LifecycleSink
from keystore.listing import KeyFilter, KeySort
from keystore.tables import UtcDateTime, api_keys, key_lifecycle_events
from keystore.verification import VerifiableKey, Verification, VerificationCache
from schemas.keys import KeyRecord, KeyStatus
from schemas.last_used import LastUsed
from schemas.lifecycle import KeyLifecycleEvent, LifecycleAction
from schemas.timestamps import to_utc_millis, utc_now
from schemas.usage import Outcome


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

log = logging.getLogger(__name__)

SWEEP_ACTOR: Final = "system:expiry-sweep"
DEFAULT_GRACE: Final = timedelta(hours=24)
KEY_ID_PREFIX: Final = "key_"
KEY_ID_RANDOM_LENGTH: Final = 20


class _Unchanged:
    """Marker for "leave this field as it is" in `update_key` (None is a real value there)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

_VERIFY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.project_id,
    api_keys.c.key_hash,
    api_keys.c.status,
    api_keys.c.expires_at,
    api_keys.c.grace_until,
    api_keys.c.rotated_to,
    api_keys.c.scopes,
    api_keys.c.ip_allowlist,
)
_VERIFY_QUERY: Select[Any] = select(*_VERIFY_COLUMNS).where(api_keys.c.key_hash == bindparam("key_hash"))

_MALFORMED = Verification(Outcome.INVALID, reason="not a KeyTrail key (wrong shape or checksum)")
_UNKNOWN = Verification(Outcome.INVALID, reason="no such key")
_STORE_UNAVAILABLE = Verification(
    Outcome.ERROR, reason="the key store is unavailable; the request cannot be checked"
)


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


class KeyStore:
    """Create, verify, list and manage API keys; apply `last_used_at` from the stream.

    Every method taking `caller` refuses keys outside the caller's project; `caller=None` means
    the trusted in-process system acting as `actor` (the projector, the sweeper, the local CLI).
    """

    def __init__(
        self,
        engine: Engine,
        hasher: KeyHasher,
        *,
        env: str = "live",
        lifecycle_sink: LifecycleSink | None = None,
        clock: Callable[[], datetime] = utc_now,
        cache: VerificationCache | None = None,
        owns_engine: bool = False,
    ) -> None:
        if not ENV_PATTERN.match(env):
            raise ValueError(
                f"key env {env[:20]!r} is invalid; set KEYTRAIL_KEY_ENV to 1-10 lowercase letters/digits"
            )
        self._engine = engine
        # Single-statement reads skip BEGIN/ROLLBACK: on Postgres that saves round trips per
        # uncached verify (SQLite reads are already in autocommit, see keystore.engine).
        self._reader: Engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self._hasher = hasher
        self._env = env
        self._sink = lifecycle_sink
        self._clock = clock
        # verify() compares with stored instants only, so it can skip the millisecond rounding
        self._verify_clock = current_utc_time if clock is utc_now else clock
        self._cache = cache if cache is not None else VerificationCache()
        self._owns_engine = owns_engine

    @classmethod
    def open(
        cls,
        url: str,
        secret: bytes,
        *,
        env: str = "live",
        lifecycle_sink: LifecycleSink | None = None,
        migrate: bool = True,
        clock: Callable[[], datetime] = utc_now,
        cache_ttl_seconds: float = 5.0,
        negative_cache_ttl_seconds: float = 5.0,
        engine_options: dict[str, Any] | None = None,
    ) -> "KeyStore":
        """Open the store at `url` (`sqlite:///PATH`, `postgresql://…`), migrating it to the latest schema.

        `cache_ttl_seconds` bounds how long another process may still accept a revoked key.
        """
        engine = create_store_engine(url, **(engine_options or {}))
        try:
            if migrate:
                migrations.upgrade(engine)
            return cls(
                engine,
                KeyHasher(secret),
                env=env,
                lifecycle_sink=lifecycle_sink,
                clock=clock,
                cache=VerificationCache(cache_ttl_seconds, negative_cache_ttl_seconds),
                owns_engine=True,
            )
        except BaseException:
            engine.dispose()
            raise

    @property
    def engine(self) -> Engine:
        """The underlying SQLAlchemy engine."""
        return self._engine

    @property
    def env(self) -> str:
        """The `<env>` of keys this store creates (`kt_<env>_…`)."""
        return self._env

    def close(self) -> None:
        """Release the connection pool (when the store created it) and the caches."""
        self._cache.clear()
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> "KeyStore":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ create and read

    def create_key(
        self,
        name: str,
        project_id: str,
        *,
        caller: Caller | None = None,
        actor: str = "system",
        owner: str = "",
        scopes: Sequence[str] = (),
        quota: int | None = None,
        ip_allowlist: Sequence[str] = (),
        expires_in: str | None = "never",
        expires_at: datetime | None = None,
    ) -> tuple[KeyRecord, str]:
        """Create a key; returns its record and the full secret, which is never retrievable again.

        `expires_in` is a preset (1h, 1d, 7d, 30d, 90d, 180d, 365d, never) or a date (YYYY-MM-DD);
        `expires_at` (an aware datetime) wins when given.
        """
        caller = caller or Caller.system(actor)
        project_id = clean_project_id(project_id)
        caller.check_project_write(project_id)
        now = self._clock()
        values = {
            "name": clean_name(name),
            "project_id": project_id,
            "owner": clean_owner(owner),
            "scopes": clean_scopes(scopes),
            "quota": clean_quota(quota),
            "ip_allowlist": clean_ip_allowlist(ip_allowlist),
            "expires_at": resolve_expiry(now, expires_in, expires_at),
        }
        with self._writing() as connection:
            record, secret = self._insert_key(connection, values, now)
            event = self._log_event(
                connection, record, LifecycleAction.CREATED, caller.actor, "", None, record, now
            )
        self._publish([event])
        return record, secret

    def get(self, key_id: str, *, caller: Caller | None = None) -> KeyRecord:
        """One key's public record."""
        caller = caller or Caller.system()
        with self._reader.connect() as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise KeyNotFound(key_id)
        caller.check_read(key_id, row.project_id)
        return record_from_row(row)

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

    # ------------------------------------------------------------------ changes

    def update_key(
        self,
        key_id: str,
        *,
        caller: Caller | None = None,
        actor: str = "system",
        name: str | _Unchanged = UNCHANGED,
        owner: str | _Unchanged = UNCHANGED,
        scopes: Sequence[str] | _Unchanged = UNCHANGED,
        quota: int | None | _Unchanged = UNCHANGED,
        ip_allowlist: Sequence[str] | _Unchanged = UNCHANGED,
        expires_at: datetime | None | _Unchanged = UNCHANGED,
        reason: str = "",
    ) -> KeyRecord:
        """Change name, owner, scopes, quota, IP allowlist or expiry (None = never); others stay.

        Moving the expiry of an expired key into the future makes it active again, as `renew` does.
        """
        changes: dict[str, Any] = {}
        if not isinstance(name, _Unchanged):
            changes["name"] = clean_name(name)
        if not isinstance(owner, _Unchanged):
            changes["owner"] = clean_owner(owner)
        if not isinstance(scopes, _Unchanged):
            changes["scopes"] = clean_scopes(scopes)
        if not isinstance(quota, _Unchanged):
            changes["quota"] = clean_quota(quota)
        if not isinstance(ip_allowlist, _Unchanged):
            changes["ip_allowlist"] = clean_ip_allowlist(ip_allowlist)
        if not changes and isinstance(expires_at, _Unchanged):
            raise InvalidKeyRequest(
                "nothing to update; pass at least one of name, owner, scopes, quota, allowlist, expiry"
            )

        def decide(row: Row[Any], now: datetime) -> dict[str, Any]:
            if row.status == KeyStatus.REVOKED:
                raise KeyStateConflict(
                    f"key {key_id!r} is revoked and can no longer be changed; create a new key"
                )
            values = dict(changes)
            if not isinstance(expires_at, _Unchanged):
                new_expiry = resolve_expiry(now, None, expires_at) if expires_at is not None else None
                values["expires_at"] = new_expiry
                if row.status == KeyStatus.EXPIRED:
                    values["status"] = KeyStatus.ACTIVE.value
                    values["status_reason"] = "expiry moved to the future"
            return values

        return self._change(key_id, caller or Caller.system(actor), LifecycleAction.UPDATED, reason, decide)

    def disable(
        self, key_id: str, *, caller: Caller | None = None, actor: str = "system", reason: str = ""
    ) -> KeyRecord:
        """Stop an active key from verifying until it is enabled again."""

        def decide(row: Row[Any], _now: datetime) -> dict[str, Any]:
            if row.status != KeyStatus.ACTIVE:
                raise KeyStateConflict(f"key {key_id!r} is {row.status}; only active keys can be disabled")
            return {"status": KeyStatus.DISABLED.value, "status_reason": reason}

        return self._change(key_id, caller or Caller.system(actor), LifecycleAction.DISABLED, reason, decide)

    def enable(
        self, key_id: str, *, caller: Caller | None = None, actor: str = "system", reason: str = ""
    ) -> KeyRecord:
        """Let a disabled key verify again (expired keys are brought back with `renew`)."""

        def decide(row: Row[Any], now: datetime) -> dict[str, Any]:
            if row.status != KeyStatus.DISABLED:
                hint = (
                    "renew it instead"
                    if row.status == KeyStatus.EXPIRED
                    else "only disabled keys can be enabled"
                )
                raise KeyStateConflict(f"key {key_id!r} is {row.status}; {hint}")
            if row.expires_at is not None and row.expires_at <= now:
                raise KeyStateConflict(f"key {key_id!r} has expired while disabled; renew it instead")
            if row.rotated_to is not None and row.grace_until is not None and row.grace_until <= now:
                raise KeyStateConflict(
                    f"key {key_id!r} was rotated and its grace period has ended; use its successor {row.rotated_to!r}"
                )
            return {"status": KeyStatus.ACTIVE.value, "status_reason": reason}

        return self._change(key_id, caller or Caller.system(actor), LifecycleAction.ENABLED, reason, decide)

    def revoke(
        self, key_id: str, *, caller: Caller | None = None, actor: str = "system", reason: str = ""
    ) -> KeyRecord:
        """Revoke a key for good: effective at once in this process, within the cache TTL elsewhere."""

        def decide(row: Row[Any], now: datetime) -> dict[str, Any]:
            if row.status == KeyStatus.REVOKED:
                raise KeyStateConflict(f"key {key_id!r} is already revoked")
            return {"status": KeyStatus.REVOKED.value, "status_reason": reason, "revoked_at": now}

        return self._change(key_id, caller or Caller.system(actor), LifecycleAction.REVOKED, reason, decide)

    def renew(
        self,
        key_id: str,
        *,
        caller: Caller | None = None,
        actor: str = "system",
        by: str = "30d",
        reason: str = "",
    ) -> KeyRecord:
        """Extend the expiry by `by` (30d or 90d) from the later of now and the current expiry;
        an expired key becomes active again."""
        period = parse_renew_period(by)

        def decide(row: Row[Any], now: datetime) -> dict[str, Any]:
            return self._renewal(row, now, period, key_id)

        return self._change(
            key_id, caller or Caller.system(actor), LifecycleAction.RENEWED, reason or f"+{by}", decide
        )

    def renew_expiring(
        self,
        within_days: int,
        *,
        caller: Caller | None = None,
        actor: str = "system",
        by: str = "30d",
        project_id: str | None = None,
    ) -> list[KeyRecord]:
        """Renew every active key that expires within `within_days` days; returns the renewed keys."""
        if within_days < 0:
            raise InvalidKeyRequest("within_days must be 0 or more")
        caller = caller or Caller.system(actor)
        candidates = self.list_keys(
            KeyFilter(
                project_id=project_id,
                expiring_within_days=within_days,
                sort=KeySort.EXPIRES,
                descending=False,
            ),
            caller=caller,
        )
        renewed: list[KeyRecord] = []
        for record in candidates:
            try:
                renewed.append(
                    self.renew(
                        record.id, caller=caller, by=by, reason=f"+{by}, expiring within {within_days} d"
                    )
                )
            except KeyStateConflict:
                continue  # changed since it was listed
        return renewed

    def rotate(
        self,
        key_id: str,
        *,
        caller: Caller | None = None,
        actor: str = "system",
        grace: str | timedelta = DEFAULT_GRACE,
        expires_in: str | None = None,
        expires_at: datetime | None = None,
        reason: str = "",
    ) -> Rotation:
        """Issue a successor with the same settings; the old key verifies until `grace_until`
        (`grace` like 0, 1h, 24h, 7d), then is revoked. A key can be rotated once: concurrent
        rotations leave exactly one successor, the others raise `KeyAlreadyRotated`.

        The successor keeps the old expiry unless `expires_in`/`expires_at` is given.
        """
        caller = caller or Caller.system(actor)
        grace_period = parse_duration(grace) if isinstance(grace, str) else grace
        if grace_period < timedelta(0):
            raise InvalidKeyRequest(
                "the grace period cannot be negative; use 0 to revoke the old key at once"
            )
        now = self._clock()
        with self._writing() as connection:
            row = self._locked_row(connection, key_id)
            caller.check_write(key_id, row.project_id)
            if row.rotated_to is not None:
                raise KeyAlreadyRotated(key_id, row.rotated_to)
            if row.status != KeyStatus.ACTIVE:
                raise KeyStateConflict(f"key {key_id!r} is {row.status}; only active keys can be rotated")
            if row.expires_at is not None and row.expires_at <= now:
                raise KeyStateConflict(f"key {key_id!r} has expired; renew it first, then rotate")
            if expires_in is None and expires_at is None:
                successor_expiry = row.expires_at
            else:
                successor_expiry = resolve_expiry(now, expires_in, expires_at)
            successor, secret = self._insert_key(
                connection,
                {
                    "name": row.name,
                    "project_id": row.project_id,
                    "owner": row.owner,
                    "scopes": list(row.scopes),
                    "quota": row.quota,
                    "ip_allowlist": list(row.ip_allowlist),
                    "expires_at": successor_expiry,
                    "rotated_from": row.id,
                },
                now,
            )
            grace_until = to_utc_millis(now + grace_period)
            old_values: dict[str, Any] = {
                "rotated_to": successor.id,
                "grace_until": grace_until,
                "updated_at": now,
            }
            if grace_period == timedelta(0):
                old_values.update(
                    status=KeyStatus.REVOKED.value, revoked_at=now, status_reason="rotated without grace"
                )
            claimed = connection.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.status == KeyStatus.ACTIVE.value,
                    api_keys.c.rotated_to.is_(None),
                )
                .values(**old_values)
            )
            if claimed.rowcount != 1:
                raise KeyAlreadyRotated(key_id, None)
            before = record_from_row(row)
            previous = record_from_row(self._locked_row(connection, key_id))
            note = reason or f"rotated to {successor.id}; old key verifies until {grace_until.isoformat()}"
            events = [
                self._log_event(
                    connection, previous, LifecycleAction.ROTATED, caller.actor, note, before, previous, now
                ),
                self._log_event(
                    connection,
                    successor,
                    LifecycleAction.CREATED,
                    caller.actor,
                    f"successor of {key_id}",
                    None,
                    successor,
                    now,
                ),
            ]
        self._cache.forget(bytes.fromhex(row.key_hash))
        self._publish(events)
        return Rotation(previous=previous, successor=successor, secret=secret)

    def purge(
        self, key_id: str, *, caller: Caller | None = None, actor: str = "system", reason: str = ""
    ) -> KeyRecord:
        """Delete a revoked or expired key's row for good (its lifecycle events are kept)."""
        caller = caller or Caller.system(actor)
        now = self._clock()
        with self._writing() as connection:
            row = self._locked_row(connection, key_id)
            caller.check_write(key_id, row.project_id)
            if row.status not in (KeyStatus.REVOKED, KeyStatus.EXPIRED):
                raise KeyStateConflict(
                    f"key {key_id!r} is {row.status}; only revoked or expired keys can be purged (revoke it first)"
                )
            record = record_from_row(row)
            connection.execute(delete(api_keys).where(api_keys.c.id == key_id))
            event = self._log_event(
                connection, record, LifecycleAction.PURGED, caller.actor, reason, record, None, now
            )
        self._cache.forget(bytes.fromhex(row.key_hash))
        self._publish([event])
        return record

    def sweep(self, now: datetime | None = None) -> SweepReport:
        """Mark keys past `expires_at` as expired and revoke rotated keys past `grace_until`.

        Nothing is deleted. Safe to run from several processes at once: each change is made once.
        """
        now = to_utc_millis(now) if now is not None else self._clock()
        due = or_(
            (api_keys.c.status == KeyStatus.ACTIVE.value) & (api_keys.c.expires_at <= now),
            api_keys.c.status.in_([KeyStatus.ACTIVE.value, KeyStatus.DISABLED.value])
            & api_keys.c.rotated_to.is_not(None)
            & (api_keys.c.grace_until <= now),
        )
        with self._reader.connect() as connection:
            candidates = [row.id for row in connection.execute(select(api_keys.c.id).where(due))]
        expired: list[str] = []
        grace_ended: list[str] = []
        events: list[KeyLifecycleEvent] = []
        forgotten: list[str] = []
        with self._writing() as connection:
            for key_id in candidates:
                row = connection.execute(
                    select(api_keys).where(api_keys.c.id == key_id, due).with_for_update()
                ).first()
                if row is None:
                    continue  # changed or swept by someone else meanwhile
                if row.rotated_to is not None and row.grace_until is not None and row.grace_until <= now:
                    why = f"rotation grace period ended; successor {row.rotated_to}"
                    values: dict[str, Any] = {"status": KeyStatus.REVOKED.value, "revoked_at": now}
                    action, bucket = LifecycleAction.REVOKED, grace_ended
                else:
                    why = "expired"
                    values = {"status": KeyStatus.EXPIRED.value}
                    action, bucket = LifecycleAction.EXPIRED, expired
                values["status_reason"] = why
                connection.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(updated_at=now, **values)
                )
                after = record_from_row(self._locked_row(connection, key_id))
                events.append(
                    self._log_event(
                        connection,
                        after,
                        action,
                        SWEEP_ACTOR,
                        why,
                        record_from_row(row),
                        after,
                        now,
                    )
                )
                bucket.append(key_id)
                forgotten.append(row.key_hash)
        for key_hash in forgotten:
            self._cache.forget(bytes.fromhex(key_hash))
        self._publish(events)
        return SweepReport(expired=expired, grace_ended=grace_ended)

    # ------------------------------------------------------------------ verification

    def verify(
        self, presented_key: str, scope: str | None = None, client_ip: str | None = None
    ) -> Verification:
        """Decide on a presented key: checksum first (no lookup for typos), then the cache, then one
        indexed lookup by keyed hash, compared in constant time. Never raises for a database
        outage: the outcome is then `error` (fail closed), and nothing is cached."""
        if not checksum_holds(presented_key):
            return _MALFORMED
        digest = self._hasher.digest(presented_key)
        key = self._cache.known(digest)
        if key is None:
            if self._cache.is_known_unknown(digest):
                return _UNKNOWN
            try:
                key = self._lookup(digest)
            except SQLAlchemyError as error:
                log.warning("key store unavailable during verify: %s", type(error).__name__)
                return _STORE_UNAVAILABLE
            if key is None:
                self._cache.remember_unknown(digest)
                return _UNKNOWN
            self._cache.remember(digest, key)
        return key.evaluate(self._verify_clock(), scope, client_ip)

    def _lookup(self, digest: bytes) -> VerifiableKey | None:
        presented_hash = digest.hex()
        try:
            row = self._fetch_by_hash(presented_hash)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            row = self._fetch_by_hash(presented_hash)  # the pool was stale (database restarted)
        if row is None or not secrets.compare_digest(row.key_hash, presented_hash):
            return None
        return VerifiableKey.from_columns(
            key_id=row.id,
            project_id=row.project_id,
            key_hash=row.key_hash,
            status=row.status,
            expires_at=row.expires_at,
            grace_until=row.grace_until,
            rotated_to=row.rotated_to,
            scopes=row.scopes,
            ip_allowlist=row.ip_allowlist,
        )

    def _fetch_by_hash(self, presented_hash: str) -> Row[Any] | None:
        with self._reader.connect() as connection:
            return connection.execute(_VERIFY_QUERY, {"key_hash": presented_hash}).first()

    # ------------------------------------------------------------------ last used (projector)

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

    # ------------------------------------------------------------------ lifecycle events

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

    # ------------------------------------------------------------------ internals

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

    def _change(
        self,
        key_id: str,
        caller: Caller,
        action: LifecycleAction,
        reason: str,
        decide: Callable[[Row[Any], datetime], dict[str, Any]],
    ) -> KeyRecord:
        now = self._clock()
        with self._writing() as connection:
            row = self._locked_row(connection, key_id)
            caller.check_write(key_id, row.project_id)
            values = decide(row, now)
            connection.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(updated_at=now, **values)
            )
            before = record_from_row(row)
            after = self._locked_row_record(connection, key_id)
            event = self._log_event(connection, after, action, caller.actor, reason, before, after, now)
        self._cache.forget(bytes.fromhex(row.key_hash))
        self._publish([event])
        return after

    @staticmethod
    def _renewal(row: Row[Any], now: datetime, period: timedelta, key_id: str) -> dict[str, Any]:
        if row.status == KeyStatus.REVOKED:
            raise KeyStateConflict(f"key {key_id!r} is revoked and cannot be renewed; create a new key")
        if row.expires_at is None:
            raise KeyStateConflict(f"key {key_id!r} never expires; there is nothing to renew")
        values: dict[str, Any] = {"expires_at": to_utc_millis(max(row.expires_at, now) + period)}
        if row.status == KeyStatus.EXPIRED:
            values.update(status=KeyStatus.ACTIVE.value, status_reason="renewed")
        return values
