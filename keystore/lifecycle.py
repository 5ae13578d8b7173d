"""The key lifecycle: create, update, disable/enable, revoke, renew, rotate with grace, purge,
and the expiry sweep. Each change is one write transaction that locks the key's row and logs
its `KeyLifecycleEvent` to the outbox (see `records.py`)."""

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Row, delete, or_, select, update

from keytrail.keystore.caller import Caller
from keytrail.keystore.errors import InvalidKeyRequest, KeyAlreadyRotated, KeyStateConflict
from keytrail.keystore.expiry import parse_duration, parse_renew_period, resolve_expiry
from keytrail.keystore.key_fields import (
    clean_ip_allowlist,
    clean_name,
    clean_owner,
    clean_project_id,
    clean_quota,
    clean_scopes,
)
from keytrail.keystore.listing import KeyFilter, KeySort
from keytrail.keystore.records import KeyRecords, Rotation, SweepReport, record_from_row
from keytrail.keystore.tables import api_keys
from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.lifecycle import KeyLifecycleEvent, LifecycleAction
from keytrail.schemas.timestamps import to_utc_millis

SWEEP_ACTOR: Final = "system:expiry-sweep"
DEFAULT_GRACE: Final = timedelta(hours=24)


class _Unchanged:
    """Marker for "leave this field as it is" in `update_key` (None is a real value there)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

class KeyLifecycleOperations(KeyRecords):
    """Every change to a key; `caller` confines it to the caller's project."""

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

    def note_marked_expected(self, key_id: str, *, caller: Caller, reason: str) -> KeyLifecycleEvent:
        """Record in the key's audit trail that one of its signals was marked expected (the record is
        unchanged; `before` and `after` stay empty). Refused like a change outside the caller's project."""
        now = self._clock()
        with self._writing() as connection:
            row = self._locked_row(connection, key_id)
            caller.check_write(key_id, row.project_id)
            event = self._log_event(
                connection, record_from_row(row), LifecycleAction.MARKED_EXPECTED, caller.actor, reason, None, None, now
            )
        self._publish([event])
        return event

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
