"""Deciding whether a presented key may be used, and the in-process caches that make it cheap."""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from keytrail.schemas.secrets import redact_text
from keytrail.schemas.usage import Outcome
from keytrail.schemas.verification import Verification

WILDCARD_SCOPE = "*"


@lru_cache(maxsize=8192)
def parse_client_ip(client_ip: str) -> IPv4Address | IPv6Address | None:
    """The client address, or None when it is not one; cached, since clients repeat."""
    try:
        return ip_address(client_ip)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class VerifiableKey:
    """What verification needs from a key row, pre-parsed once so cached checks stay cheap."""

    key_id: str
    project_id: str
    key_hash: str
    status: str
    expires_at: datetime | None
    grace_until: datetime | None
    rotated: bool
    scopes: frozenset[str]
    networks: tuple[IPv4Network | IPv6Network, ...]
    ok: Verification

    @classmethod
    def from_columns(
        cls,
        *,
        key_id: str,
        project_id: str,
        key_hash: str,
        status: str,
        expires_at: datetime | None,
        grace_until: datetime | None,
        rotated_to: str | None,
        scopes: Iterable[str],
        ip_allowlist: Iterable[str],
    ) -> "VerifiableKey":
        """Build from the stored columns; CIDRs are parsed here, once."""
        return cls(
            key_id=key_id,
            project_id=project_id,
            key_hash=key_hash,
            status=status,
            expires_at=expires_at,
            grace_until=grace_until,
            rotated=rotated_to is not None,
            scopes=frozenset(scopes),
            networks=tuple(ip_network(cidr, strict=False) for cidr in ip_allowlist),
            ok=Verification(outcome=Outcome.OK, key_id=key_id, project_id=project_id),
        )

    def evaluate(self, now: datetime, scope: str | None, client_ip: str | None) -> Verification:
        """Status, expiry, rotation grace, IP allowlist and scope, in that order."""
        if self.status == "revoked":
            return self._verdict(Outcome.REVOKED, "the key was revoked")
        if self.rotated and self.grace_until is not None and now >= self.grace_until:
            return self._verdict(Outcome.REVOKED, "the key was rotated and its grace period has ended")
        if self.status == "disabled":
            return self._verdict(Outcome.DISABLED, "the key is disabled")
        if self.status == "expired" or (self.expires_at is not None and now >= self.expires_at):
            return self._verdict(Outcome.EXPIRED, "the key has expired; renew it to use it again")
        if self.networks and not self._address_allowed(client_ip):
            return self._verdict(Outcome.DENIED, "the client address is not in the key's IP allowlist")
        if scope is not None and scope not in self.scopes and WILDCARD_SCOPE not in self.scopes:
            return self._verdict(Outcome.DENIED, f"the key does not grant scope {redact_text(scope[:100])!r}")
        return self.ok

    def _address_allowed(self, client_ip: str | None) -> bool:
        address = parse_client_ip(client_ip) if client_ip is not None else None
        if address is None:
            return False
        return any(address in network for network in self.networks)

    def _verdict(self, outcome: Outcome, reason: str) -> Verification:
        return Verification(outcome=outcome, key_id=self.key_id, project_id=self.project_id, reason=reason)


class VerificationCache:
    """Positive and negative caches keyed by the keyed hash (never by the key itself).

    Entries live `ttl_seconds` (negative ones `negative_ttl_seconds`); this TTL is how long another
    process may keep accepting a key after it was revoked. The revoking process calls `forget`.
    Each cache is bounded; the oldest entries go first.
    """

    def __init__(
        self, ttl_seconds: float = 5.0, negative_ttl_seconds: float = 5.0, max_entries: int = 100_000
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.negative_ttl_seconds = negative_ttl_seconds
        self.max_entries = max_entries
        self._known: dict[bytes, tuple[float, VerifiableKey]] = {}
        self._unknown: dict[bytes, float] = {}

    def known(self, digest: bytes) -> VerifiableKey | None:
        """The cached key for this hash, if fresh."""
        entry = self._known.get(digest)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._known.pop(digest, None)
            return None
        return entry[1]

    def is_known_unknown(self, digest: bytes) -> bool:
        """True when this hash was looked up recently and matched no key."""
        deadline = self._unknown.get(digest)
        if deadline is None:
            return False
        if deadline < time.monotonic():
            self._unknown.pop(digest, None)
            return False
        return True

    def remember(self, digest: bytes, key: VerifiableKey) -> None:
        """Cache a found key."""
        if self.ttl_seconds <= 0:
            return
        self._bound(self._known)
        self._known[digest] = (time.monotonic() + self.ttl_seconds, key)

    def remember_unknown(self, digest: bytes) -> None:
        """Cache a miss, so repeated bad keys do not reach the database."""
        if self.negative_ttl_seconds <= 0:
            return
        self._bound(self._unknown)
        self._unknown[digest] = time.monotonic() + self.negative_ttl_seconds

    def forget(self, digest: bytes) -> None:
        """Drop both entries for a hash: called by the process that changed the key."""
        self._known.pop(digest, None)
        self._unknown.pop(digest, None)

    def clear(self) -> None:
        """Drop everything."""
        self._known.clear()
        self._unknown.clear()

    def _bound(self, cache: dict) -> None:  # type: ignore[type-arg]
        while len(cache) >= self.max_entries:
            try:
                cache.pop(next(iter(cache)))
            except (StopIteration, KeyError, RuntimeError):
                break
