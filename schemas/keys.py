"""The public view of a key record: everything but the hash. Safe to log, list and emit."""

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from keytrail.schemas.timestamps import UtcMillis
from keytrail.schemas.usage import Identifier


class KeyStatus(StrEnum):
    """Lifecycle status; expired keys are disabled, never deleted, and can be renewed."""

    ACTIVE = "active"
    DISABLED = "disabled"
    REVOKED = "revoked"
    EXPIRED = "expired"


class KeyRecord(BaseModel):
    """A key as the key store knows it, without its secret or hash."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier
    name: str = Field(max_length=200)
    project_id: Identifier
    owner: str = Field(default="", max_length=200)
    scopes: list[str] = Field(default_factory=list)
    quota: int | None = Field(default=None, ge=0, description="requests per day; null = unlimited")
    ip_allowlist: list[str] = Field(default_factory=list)
    status: KeyStatus = KeyStatus.ACTIVE
    created_at: UtcMillis
    expires_at: UtcMillis | None = None
    last_used_at: UtcMillis | None = None
    last_used_ip: str | None = None
    rotated_from: str | None = None
    grace_until: UtcMillis | None = None
    display_prefix: str = Field(description="e.g. kt_live_")
    hint: str = Field(description="last four characters of the secret")

    @property
    def masked(self) -> str:
        """How the key is shown after creation: `kt_live_…9f3a`."""
        return f"{self.display_prefix}…{self.hint}"
