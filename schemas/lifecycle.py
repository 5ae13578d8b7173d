"""KeyLifecycleEvent: the admin audit trail of every change made to a key."""

from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from keytrail.schemas.timestamps import UtcMillis
from keytrail.schemas.usage import Identifier


class LifecycleAction(StrEnum):
    """What happened to the key."""

    CREATED = "created"
    UPDATED = "updated"
    ROTATED = "rotated"
    RENEWED = "renewed"
    DISABLED = "disabled"
    ENABLED = "enabled"
    REVOKED = "revoked"
    EXPIRED = "expired"
    PURGED = "purged"
    MARKED_EXPECTED = "marked_expected"
    """A signal (or alert) of the key was marked expected: its detector learnt it (record unchanged)."""


class KeyLifecycleEvent(BaseModel):
    """Who did what to which key, when, with the public record before and after (never secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: UUID
    schema_version: Literal[1] = 1
    occurred_at: UtcMillis
    key_id: Identifier
    project_id: Identifier
    action: LifecycleAction
    actor: str = Field(max_length=200)
    reason: str = Field(default="", max_length=1000)
    before: dict[str, Any] | None = None
    """The public record before the change; None when created, and for marks that change no record."""
    after: dict[str, Any] | None = None
