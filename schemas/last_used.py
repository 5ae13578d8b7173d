"""LastUsed: what the stream tells the key store about a key's newest use."""

from pydantic import BaseModel, ConfigDict

from keytrail.schemas.timestamps import UtcMillis
from keytrail.schemas.usage import Identifier


class LastUsed(BaseModel):
    """The newest use of a key by event time; published compacted on keytrail.last-used.v1.

    Deterministic (no processing timestamps), so a replay of the log publishes the same records.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: Identifier
    project_id: Identifier
    last_used_at: UtcMillis
    last_used_ip: str
    route: str
    service: str
    event_id: str
