"""Signal: an explained observation about one key (anomaly, idle, expiry, quota)."""

import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from keytrail.schemas.timestamps import UtcMillis
from keytrail.schemas.usage import Identifier

SIGNAL_NAMESPACE = uuid.UUID("6f1c9a52-6a0e-4c3e-9a57-4b1f0f6f7e11")


class SignalKind(StrEnum):
    """Every kind of signal the pipeline can raise."""

    RATE_SPIKE = "rate_spike"
    NEW_NETWORK = "new_network"
    MANY_IPS = "many_ips"
    NEW_ROUTE = "new_route"
    DENIAL_BURST = "denial_burst"
    USE_OF_INACTIVE_KEY = "use_of_inactive_key"
    DORMANT_KEY_ACTIVE = "dormant_key_active"
    UNUSUAL_HOUR = "unusual_hour"
    IDLE = "idle"
    NEVER_USED = "never_used"
    EXPIRING_SOON = "expiring_soon"
    QUOTA = "quota"
    SECRET_EXPOSED = "secret_exposed"
    """A credential turned up in a string field of a usage event (redacted before it was stored)."""


class Severity(StrEnum):
    """How urgently a human should look; ordered from least to most urgent."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 4 for critical, for threshold comparisons."""
        return list(Severity).index(self)


def signal_id_for(key_id: str, kind: str, window_start_iso: str, discriminator: str = "") -> str:
    """Deterministic id: the same observation made twice (replay, redelivery) has the same id."""
    return str(uuid.uuid5(SIGNAL_NAMESPACE, f"{key_id}|{kind}|{window_start_iso}|{discriminator}"))


class Signal(BaseModel):
    """One detector's finding, with what was observed, what was expected, and why it matters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal_id: str
    key_id: Identifier
    project_id: Identifier
    kind: SignalKind
    severity: Severity
    score: Annotated[float, Field(ge=0)]
    observed: float
    expected: float
    window_start: UtcMillis
    window_end: UtcMillis
    detected_at: UtcMillis
    evidence: dict[str, list[str]] = Field(default_factory=dict)
    message: Annotated[str, Field(max_length=1000)]
