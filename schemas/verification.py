"""The verdict on a presented key: shared by the key store (which decides) and the middleware (which acts)."""

from dataclasses import dataclass

from keytrail.schemas.usage import Outcome


@dataclass(frozen=True, slots=True)
class Verification:
    """The verdict on a presented key: an outcome from the usage-event contract, and who it is.

    `key_id` and `project_id` are None when the key is unknown or malformed; `reason` is a short
    explanation for logs and error bodies (never containing the key).
    """

    outcome: Outcome
    key_id: str | None = None
    project_id: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when the request may proceed."""
        return self.outcome is Outcome.OK
