"""`verify()`: checksum first (no lookup for typos), then the in-process cache, then one indexed
lookup by keyed hash, compared in constant time."""

import logging
import secrets
from typing import Any

from sqlalchemy import Row, Select, bindparam, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from keytrail.keystore.errors import KeyStoreBusy
from keytrail.keystore.key_format import checksum_holds
from keytrail.keystore.records import KeyRecords
from keytrail.keystore.tables import api_keys
from keytrail.keystore.verification import VerifiableKey
from keytrail.schemas.usage import Outcome
from keytrail.schemas.verification import Verification

log = logging.getLogger("keytrail.keystore.store")

_VERIFY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.project_id,
    api_keys.c.key_hash,
    api_keys.c.status,
    api_keys.c.expires_at,
    api_keys.c.grace_until,
    api_keys.c.rotated_to,
    api_keys.c.scopes,
    api_keys.c.ip_allowlist,
)
_VERIFY_QUERY: Select[Any] = select(*_VERIFY_COLUMNS).where(api_keys.c.key_hash == bindparam("key_hash"))

_MALFORMED = Verification(Outcome.INVALID, reason="not a KeyTrail key (wrong shape or checksum)")
_UNKNOWN = Verification(Outcome.INVALID, reason="no such key")
_STORE_UNAVAILABLE = Verification(
    Outcome.ERROR, reason="the key store is unavailable; the request cannot be checked"
)


class VerifyByLookup(KeyRecords):
    """The verification path of the store."""

    _verify_clock: Any

    def verify(
        self, presented_key: str, scope: str | None = None, client_ip: str | None = None
    ) -> Verification:
        """Decide on a presented key: checksum first (no lookup for typos), then the cache, then one
        indexed lookup by keyed hash, compared in constant time. Never raises for a database
        outage: the outcome is then `error` (fail closed), and nothing is cached."""
        if not checksum_holds(presented_key):
            return _MALFORMED
        digest = self._hasher.digest(presented_key)
        key = self._cache.known(digest)
        if key is None:
            if self._cache.is_known_unknown(digest):
                return _UNKNOWN
            try:
                key = self._lookup(digest)
            except (SQLAlchemyError, KeyStoreBusy) as error:
                log.warning("key store unavailable during verify: %s", type(error).__name__)
                return _STORE_UNAVAILABLE
            if key is None:
                self._cache.remember_unknown(digest)
                return _UNKNOWN
            self._cache.remember(digest, key)
        return key.evaluate(self._verify_clock(), scope, client_ip)

    def _lookup(self, digest: bytes) -> VerifiableKey | None:
        presented_hash = digest.hex()
        try:
            row = self._fetch_by_hash(presented_hash)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            row = self._fetch_by_hash(presented_hash)  # the pool was stale (database restarted)
        if row is None or not secrets.compare_digest(row.key_hash, presented_hash):
            return None
        return VerifiableKey.from_columns(
            key_id=row.id,
            project_id=row.project_id,
            key_hash=row.key_hash,
            status=row.status,
            expires_at=row.expires_at,
            grace_until=row.grace_until,
            rotated_to=row.rotated_to,
            scopes=row.scopes,
            ip_allowlist=row.ip_allowlist,
        )

    def _fetch_by_hash(self, presented_hash: str) -> Row[Any] | None:
        with self._reader.connect() as connection:
            return connection.execute(_VERIFY_QUERY, {"key_hash": presented_hash}).first()
