"""The key store's tables (SQLAlchemy 2 Core), identical on SQLite and PostgreSQL.

Created and evolved only through the Alembic migrations in `keystore/migrations`; a test checks
that the migrations produce exactly these tables.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime: `timestamptz` on Postgres, naive UTC text on SQLite, aware on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("key store timestamps must be timezone-aware (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


KEY_STATUSES = ("active", "disabled", "revoked", "expired")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True, comment="public key id, e.g. key_3fZ…; never the secret"),
    Column("name", String(200), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("owner", String(200), nullable=False, server_default=""),
    Column("scopes", JSON, nullable=False, comment="list of scope strings; '*' grants every scope"),
    Column("quota", BigInteger, nullable=True, comment="requests per day; null = unlimited"),
    Column("ip_allowlist", JSON, nullable=False, comment="list of CIDRs; empty = any address"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("status_reason", String(1000), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True, comment="null = never"),
    Column("last_used_at", UtcDateTime, nullable=True, comment="moved forward only, by the projector"),
    Column("last_used_ip", String(45), nullable=True),
    Column("rotated_from", String(64), nullable=True, comment="the key this one replaced"),
    Column("rotated_to", String(64), nullable=True, comment="the successor; set once, by rotation"),
    Column("grace_until", UtcDateTime, nullable=True, comment="a rotated key verifies until then"),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("key_hash", String(64), nullable=False, comment="hex HMAC-SHA-256(server secret, key)"),
    Column("display_prefix", String(16), nullable=False, comment="kt_<env>_"),
    Column("hint", String(8), nullable=False, comment="last four characters of the key"),
    CheckConstraint(f"status IN {KEY_STATUSES!r}", name="ck_api_keys_status"),
    CheckConstraint("quota IS NULL OR quota >= 0", name="ck_api_keys_quota"),
    Index("ix_api_keys_key_hash", "key_hash", unique=True),
    Index("ix_api_keys_project_status", "project_id", "status"),
    Index("ix_api_keys_expires_at", "expires_at"),
    Index("ix_api_keys_grace_until", "grace_until"),
)
"""One row per key; the secret itself is never stored, only its keyed hash."""

key_lifecycle_events = Table(
    "key_lifecycle_events",
    metadata,
    Column(
        "sequence",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
        comment="write order; orders events that share a timestamp",
    ),
    Column("event_id", String(36), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("payload", Text, nullable=False, comment="KeyLifecycleEvent JSON, exactly as published"),
    Column("published_at", UtcDateTime, nullable=True, comment="null = not yet handed to the sink"),
    Index("ix_key_lifecycle_events_event_id", "event_id", unique=True),
    Index("ix_key_lifecycle_events_key_id", "key_id", "sequence"),
    Index("ix_key_lifecycle_events_published_at", "published_at"),
)
"""The lifecycle outbox and local audit log: written in the same transaction as the change."""
