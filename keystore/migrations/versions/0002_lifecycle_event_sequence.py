"""Order lifecycle events by a write sequence, not by timestamp.

Events written in one transaction share a timestamp (a rotation writes two), so the outbox
gets an autoincrementing `sequence` primary key; `event_id` stays unique. Existing rows are
copied in timestamp order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from keytrail.keystore.tables import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "event_id, occurred_at, key_id, project_id, action, payload, published_at"


def upgrade() -> None:
    op.drop_index("ix_key_lifecycle_events_key_id", table_name="key_lifecycle_events")
    op.drop_index("ix_key_lifecycle_events_published_at", table_name="key_lifecycle_events")
    op.rename_table("key_lifecycle_events", "key_lifecycle_events_0001")
    op.create_table(
        "key_lifecycle_events",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
            comment="write order; orders events that share a timestamp",
        ),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False, comment="KeyLifecycleEvent JSON, exactly as published"),
        sa.Column("published_at", UtcDateTime, nullable=True, comment="null = not yet handed to the sink"),
    )
    op.execute(
        f"INSERT INTO key_lifecycle_events ({COLUMNS}) "
        f"SELECT {COLUMNS} FROM key_lifecycle_events_0001 ORDER BY occurred_at, event_id"
    )
    op.drop_table("key_lifecycle_events_0001")
    op.create_index("ix_key_lifecycle_events_event_id", "key_lifecycle_events", ["event_id"], unique=True)
    op.create_index("ix_key_lifecycle_events_key_id", "key_lifecycle_events", ["key_id", "sequence"])
    op.create_index("ix_key_lifecycle_events_published_at", "key_lifecycle_events", ["published_at"])


def downgrade() -> None:
    op.drop_index("ix_key_lifecycle_events_event_id", table_name="key_lifecycle_events")
    op.drop_index("ix_key_lifecycle_events_key_id", table_name="key_lifecycle_events")
    op.drop_index("ix_key_lifecycle_events_published_at", table_name="key_lifecycle_events")
    op.rename_table("key_lifecycle_events", "key_lifecycle_events_0002")
    op.create_table(
        "key_lifecycle_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("published_at", UtcDateTime, nullable=True),
    )
    op.execute(
        f"INSERT INTO key_lifecycle_events ({COLUMNS}) SELECT {COLUMNS} FROM key_lifecycle_events_0002"
    )
    op.drop_table("key_lifecycle_events_0002")
    op.create_index("ix_key_lifecycle_events_key_id", "key_lifecycle_events", ["key_id", "occurred_at"])
    op.create_index("ix_key_lifecycle_events_published_at", "key_lifecycle_events", ["published_at"])
