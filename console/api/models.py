"""Request and response bodies of the console API (key records come from `keytrail.schemas.keys`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from keytrail.schemas.keys import KeyRecord
from keytrail.schemas.secrets import redact_text
from keytrail.schemas.usage import Identifier

ShortText = Annotated[str, StringConstraints(max_length=200)]
Scope = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Cidr = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ExpiryPreset = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Reason = Annotated[str, StringConstraints(max_length=500), AfterValidator(redact_text)]
"""Free text kept in the audit trail: a secret pasted into it is redacted (schemas/secrets.py)."""
MAX_INGEST_BATCH = 5000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateKey(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    project_id: Identifier
    owner: ShortText = ""
    scopes: list[Scope] = Field(default_factory=list, max_length=100)
    quota: Annotated[int, Field(ge=0, le=2**53)] | None = None
    ip_allowlist: list[Cidr] = Field(default_factory=list, max_length=100)
    expires_in: ExpiryPreset | None = Field(
        default="never", description="1h, 1d, 7d, 30d, 90d, 180d, 365d, never, or a date YYYY-MM-DD"
    )


class UpdateKey(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    owner: ShortText | None = None
    scopes: list[Scope] | None = Field(default=None, max_length=100)
    quota: Annotated[int, Field(ge=0, le=2**53)] | None = None
    clear_quota: bool = False
    ip_allowlist: list[Cidr] | None = Field(default=None, max_length=100)
    expires_at: datetime | None = Field(default=None, description="new expiry (with a time zone)")
    never_expires: bool = False
    reason: Reason = ""


class KeyWithSecret(BaseModel):
    key: KeyRecord
    secret: str = Field(description="the full key; shown exactly once, store it now")
    masked: str


class KeyView(KeyRecord):
    masked_key: str = Field(description="how the key is displayed: kt_live_…9f3a")


class KeyList(BaseModel):
    keys: list[KeyView]
    count: int


class RotateKey(Strict):
    grace: Annotated[str, StringConstraints(min_length=1, max_length=16)] = Field(
        default="24h", description="how long the old key keeps working: 0, 1h, 24h, 7d"
    )
    expires_in: ExpiryPreset | None = None
    reason: Reason = ""


class Rotated(BaseModel):
    previous: KeyView
    key: KeyView
    secret: str = Field(description="the successor's full key; shown exactly once")


class RenewKey(Strict):
    by: Literal["30d", "90d"] = "30d"
    reason: Reason = ""


class ChangeReason(Strict):
    reason: Reason = ""


class SweepResult(BaseModel):
    expired: list[str]
    grace_ended: list[str]


class VerifyRequest(Strict):
    key: Annotated[str, StringConstraints(max_length=256)] = Field(
        description="the presented key (never echoed)"
    )
    scope: Scope | None = None
    client_ip: Annotated[str, StringConstraints(max_length=45)] | None = None


class VerifyResponse(BaseModel):
    outcome: str
    key_id: str | None
    project_id: str | None
    reason: str


class IngestBatch(BaseModel):
    events: list[Any] = Field(description=f"KeyUsageEvent v1 objects, at most {MAX_INGEST_BATCH}")


class Rejection(BaseModel):
    index: int
    code: str
    reason: str


class IngestResult(BaseModel):
    accepted: int
    duplicates: int
    late: int = 0
    rejected: list[Rejection]


class UsagePoint(BaseModel):
    t: datetime
    requests: int
    errors: int
    denials: int


class KeyUsageSeries(BaseModel):
    key_id: str
    range: str
    bucket_seconds: int
    points: list[UsagePoint]
    totals: dict[str, int]


class Rows(BaseModel):
    rows: list[dict[str, Any]]
    count: int


class Health(BaseModel):
    status: str
    mode: str
    detail: str = ""


class Readiness(BaseModel):
    status: str = Field(description="ready, or not_ready when a check is not ok")
    mode: str
    checks: dict[str, str] = Field(description="per dependency: ok, busy: …, error: …, or not used")
