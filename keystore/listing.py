"""Filters and sort orders for listing keys."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, Select, and_

from keytrail.keystore.tables import api_keys
from keytrail.schemas.keys import KeyStatus


class KeySort(StrEnum):
    """What a listing can be ordered by."""

    CREATED = "created"
    LAST_USED = "last-used"
    EXPIRES = "expires"
    NAME = "name"
    PROJECT = "project"


_SORT_COLUMNS = {
    KeySort.CREATED: api_keys.c.created_at,
    KeySort.LAST_USED: api_keys.c.last_used_at,
    KeySort.EXPIRES: api_keys.c.expires_at,
    KeySort.NAME: api_keys.c.name,
    KeySort.PROJECT: api_keys.c.project_id,
}


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Which keys to list; every field narrows the result, None means "any".

    `idle_days`: used, but not in the last N days. `never_used`: never used at all.
    `expiring_within_days`: active keys whose expiry falls within the next N days.
    """

    project_id: str | None = None
    statuses: tuple[KeyStatus, ...] = ()
    owner: str | None = None
    idle_days: int | None = None
    never_used: bool = False
    expiring_within_days: int | None = None
    sort: KeySort = KeySort.CREATED
    descending: bool = True
    limit: int | None = None
    offset: int = 0

    def conditions(self, now: datetime, visible_project: str | None) -> list[ColumnElement[bool]]:
        """The WHERE clauses, with the project confined to what the caller may see."""
        where: list[ColumnElement[bool]] = []
        if visible_project is not None:
            where.append(api_keys.c.project_id == visible_project)
        if self.statuses:
            where.append(api_keys.c.status.in_([str(status) for status in self.statuses]))
        if self.owner is not None:
            where.append(api_keys.c.owner == self.owner)
        if self.idle_days is not None:
            where.append(
                and_(
                    api_keys.c.last_used_at.is_not(None),
                    api_keys.c.last_used_at < now - timedelta(days=self.idle_days),
                )
            )
        if self.never_used:
            where.append(api_keys.c.last_used_at.is_(None))
        if self.expiring_within_days is not None:
            where.append(
                and_(
                    api_keys.c.status == KeyStatus.ACTIVE.value,
                    api_keys.c.expires_at.is_not(None),
                    api_keys.c.expires_at <= now + timedelta(days=self.expiring_within_days),
                )
            )
        return where

    def ordered(self, query: Select) -> Select:  # type: ignore[type-arg]
        """Apply the sort (nulls last either way; the id breaks ties) and the page."""
        column = _SORT_COLUMNS[KeySort(self.sort)]
        direction = column.desc() if self.descending else column.asc()
        query = query.order_by(direction.nulls_last(), api_keys.c.id.asc())
        if self.limit is not None:
            query = query.limit(self.limit)
        if self.offset:
            query = query.offset(self.offset)
        return query
