"""KeyStore: the system of record for API keys (SQLAlchemy 2 Core on SQLite or PostgreSQL).

Every change runs in one write transaction that locks the key's row (`SELECT … FOR UPDATE` on
Postgres, `BEGIN IMMEDIATE` on SQLite), writes the change and its `KeyLifecycleEvent` to the
outbox table, commits, then hands the event to the lifecycle sink.

The class is put together from the pieces a reader looks for:
`records.py` (records, queries, the write transaction and the outbox), `lifecycle.py` (every
change to a key), `lookup.py` (verify) and `last_used.py` (the projector's updates); the
verification cache is `verification.py`.
"""

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError

from keytrail.keystore import migrations
from keytrail.keystore.engine import create_store_engine
from keytrail.keystore.errors import KeyStoreCorrupt
from keytrail.keystore.hashing import KeyHasher
from keytrail.keystore.key_format import ENV_PATTERN
from keytrail.keystore.last_used import LastUsedUpdates, newest_per_key
from keytrail.keystore.lifecycle import DEFAULT_GRACE, SWEEP_ACTOR, UNCHANGED, KeyLifecycleOperations
from keytrail.keystore.lifecycle_sinks import LifecycleSink
from keytrail.keystore.lookup import VerifyByLookup
from keytrail.keystore.records import Rotation, SweepReport, current_utc_time, new_key_id, record_from_row
from keytrail.keystore.verification import VerificationCache
from keytrail.schemas.timestamps import utc_now

__all__ = [
    "DEFAULT_GRACE",
    "SWEEP_ACTOR",
    "UNCHANGED",
    "KeyStore",
    "Rotation",
    "SweepReport",
    "new_key_id",
    "newest_per_key",
    "record_from_row",
]


class KeyStore(KeyLifecycleOperations, VerifyByLookup, LastUsedUpdates):
    """Create, verify, list and manage API keys; apply `last_used_at` from the stream.

    Every method taking `caller` refuses keys outside the caller's project; `caller=None` means
    the trusted in-process system acting as `actor` (the projector, the sweeper, the local CLI).
    """

    def __init__(
        self,
        engine: Engine,
        hasher: KeyHasher,
        *,
        env: str = "live",
        lifecycle_sink: LifecycleSink | None = None,
        clock: Callable[[], datetime] = utc_now,
        cache: VerificationCache | None = None,
        owns_engine: bool = False,
    ) -> None:
        if not ENV_PATTERN.match(env):
            raise ValueError(
                f"key env {env[:20]!r} is invalid; set KEYTRAIL_KEY_ENV to 1-10 lowercase letters/digits"
            )
        self._engine = engine
        # Single-statement reads skip BEGIN/ROLLBACK: on Postgres that saves round trips per
        # uncached verify (SQLite reads are already in autocommit, see keystore.engine).
        self._reader: Engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self._hasher = hasher
        self._env = env
        self._sink = lifecycle_sink
        self._clock = clock
        # verify() compares with stored instants only, so it can skip the millisecond rounding
        self._verify_clock = current_utc_time if clock is utc_now else clock
        self._cache = cache if cache is not None else VerificationCache()
        self._owns_engine = owns_engine

    @classmethod
    def open(
        cls,
        url: str,
        secret: bytes,
        *,
        env: str = "live",
        lifecycle_sink: LifecycleSink | None = None,
        migrate: bool = True,
        clock: Callable[[], datetime] = utc_now,
        cache_ttl_seconds: float = 5.0,
        negative_cache_ttl_seconds: float = 5.0,
        engine_options: dict[str, Any] | None = None,
    ) -> "KeyStore":
        """Open the store at `url` (`sqlite:///PATH`, `postgresql://…`), migrating it to the latest schema.

        `cache_ttl_seconds` bounds how long another process may still accept a revoked key.
        """
        engine = create_store_engine(url, **(engine_options or {}))
        try:
            if migrate:
                try:
                    migrations.upgrade(engine)
                except DatabaseError as error:
                    if engine.dialect.name != "sqlite" or isinstance(error.orig, sqlite3.OperationalError):
                        raise
                    reason = str(error.orig).splitlines()[0][:200]
                    raise KeyStoreCorrupt(
                        f"the key store {engine.url.database} is not a readable SQLite key store ({reason}); "
                        "restore it from a backup, or move it away to start with an empty one"
                    ) from None
            return cls(
                engine,
                KeyHasher(secret),
                env=env,
                lifecycle_sink=lifecycle_sink,
                clock=clock,
                cache=VerificationCache(cache_ttl_seconds, negative_cache_ttl_seconds),
                owns_engine=True,
            )
        except BaseException:
            engine.dispose()
            raise

    @property
    def engine(self) -> Engine:
        """The underlying SQLAlchemy engine."""
        return self._engine

    @property
    def env(self) -> str:
        """The `<env>` of keys this store creates (`kt_<env>_…`)."""
        return self._env

    def close(self) -> None:
        """Release the connection pool (when the store created it) and the caches."""
        self._cache.clear()
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> "KeyStore":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
