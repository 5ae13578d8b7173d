"""Create api_keys and the key_lifecycle_events outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from keytrail.keystore.tables import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column(
            "id", sa.String(64), primary_key=True, comment="public key id, e.g. key_3fZ…; never the secret"
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False, server_default=""),
        sa.Column("scopes", sa.JSON, nullable=False, comment="list of scope strings; '*' grants every scope"),
        sa.Column("quota", sa.BigInteger, nullable=True, comment="requests per day; null = unlimited"),
        sa.Column("ip_allowlist", sa.JSON, nullable=False, comment="list of CIDRs; empty = any address"),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("status_reason", sa.String(1000), nullable=False, server_default=""),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=True, comment="null = never"),
        sa.Column("last_used_at", UtcDateTime, nullable=True, comment="moved forward only, by the projector"),
        sa.Column("last_used_ip", sa.String(45), nullable=True),
        sa.Column("rotated_from", sa.String(64), nullable=True, comment="the key this one replaced"),
        sa.Column("rotated_to", sa.String(64), nullable=True, comment="the successor; set once, by rotation"),
        sa.Column("grace_until", UtcDateTime, nullable=True, comment="a rotated key verifies until then"),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=False, comment="hex HMAC-SHA-256(server secret, key)"),
        sa.Column("display_prefix", sa.String(16), nullable=False, comment="kt_<env>_"),
        sa.Column("hint", sa.String(8), nullable=False, comment="last four characters of the key"),
        sa.CheckConstraint(
            "status IN ('active', 'disabled', 'revoked', 'expired')", name="ck_api_keys_status"
        ),
        sa.CheckConstraint("quota IS NULL OR quota >= 0", name="ck_api_keys_quota"),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("ix_api_keys_project_status", "api_keys", ["project_id", "status"])
    op.create_index("ix_api_keys_expires_at", "api_keys", ["expires_at"])
    op.create_index("ix_api_keys_grace_until", "api_keys", ["grace_until"])

    op.create_table(
        "key_lifecycle_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False, comment="KeyLifecycleEvent JSON, exactly as published"),
        sa.Column("published_at", UtcDateTime, nullable=True, comment="null = not yet handed to the sink"),
    )
    op.create_index("ix_key_lifecycle_events_key_id", "key_lifecycle_events", ["key_id", "occurred_at"])
    op.create_index("ix_key_lifecycle_events_published_at", "key_lifecycle_events", ["published_at"])


def downgrade() -> None:
    op.drop_table("key_lifecycle_events")
    op.drop_table("api_keys")
