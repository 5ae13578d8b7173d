"""Building the SQLAlchemy engine for a key store URL (`sqlite:///…` or `postgresql://…`)."""

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from keytrail.keystore.errors import KeyStoreBusy, UnsupportedStoreUrl
from keytrail.keystore.file_modes import ensure_private_file

WRITE_OPTION = "keystore_write"
"""Execution option marking a connection whose transaction will write (SQLite: BEGIN IMMEDIATE)."""

SQLITE_BUSY_TIMEOUT_SECONDS = 1.5
"""How long a SQLite connection waits for another process's lock before `KeyStoreBusy` (default of
KEYTRAIL_KEYSTORE_BUSY_TIMEOUT_SECONDS): requests answer a 503 within it instead of hanging."""

_BUSY_MESSAGES = ("database is locked", "database is busy", "database table is locked")


def busy_timeout_seconds() -> float:
    """The configured bounded wait for a locked SQLite key store."""
    try:
        from keytrail.settings import get_settings

        return float(get_settings().keystore_busy_timeout_seconds)
    except Exception:  # noqa: BLE001 - settings that do not parse are reported by their own users
        return SQLITE_BUSY_TIMEOUT_SECONDS


def _busy_is_typed(context: Any) -> None:
    """A lock wait past the bounded timeout ("database is locked" on SQLite, lock_not_available on
    PostgreSQL) becomes KeyStoreBusy: a 503 with Retry-After at the API, a retry in the projector,
    a fail-closed verdict in verify."""
    original = context.original_exception
    if getattr(original, "sqlstate", None) == "55P03":
        raise KeyStoreBusy() from original
    message = str(original).lower()
    if any(text in message for text in _BUSY_MESSAGES):
        raise KeyStoreBusy() from original


def normalise_store_url(url: str) -> str:
    """Plain `postgresql://` and `postgres://` use psycopg 3; SQLite URLs pass through."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def create_store_engine(url: str, **engine_options: Any) -> Engine:
    """An engine for the key store; SQLite gets WAL, a busy timeout and immediate write transactions."""
    sa_url = make_url(normalise_store_url(url))
    backend = sa_url.get_backend_name()
    if backend == "postgresql":
        if sa_url.get_driver_name() != "psycopg":
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        # No pool_pre_ping: it costs a round trip per checkout, i.e. per uncached verify. A
        # connection found dead is invalidated with its pool, and verify retries once.
        # lock_timeout bounds a wait on a row another session holds (SELECT … FOR UPDATE): then
        # KeyStoreBusy, as on SQLite, instead of a request hanging.
        connect_args = engine_options.pop("connect_args", {})
        connect_args.setdefault("options", f"-c lock_timeout={int(busy_timeout_seconds() * 1000)}")
        engine = create_engine(sa_url, connect_args=connect_args, **engine_options)
        event.listen(engine, "handle_error", _busy_is_typed)
        return engine
    if backend == "sqlite":
        return _create_sqlite_engine(sa_url, engine_options)
    raise UnsupportedStoreUrl(
        f"key store backend {backend!r} is not supported; set KEYTRAIL_KEYSTORE_URL to "
        "sqlite:///PATH or postgresql://user@host:5432/db"
    )


def _create_sqlite_engine(sa_url: Any, engine_options: dict[str, Any]) -> Engine:
    in_memory = sa_url.database in (None, "", ":memory:") or str(sa_url.database).startswith("file:")
    if not in_memory:
        # 0600 before SQLite creates it (its -wal and -shm files take the database file's mode)
        ensure_private_file(Path(sa_url.database))
    connect_args = engine_options.pop("connect_args", {})
    connect_args.setdefault("timeout", busy_timeout_seconds())
    connect_args.setdefault("check_same_thread", False)
    if in_memory:
        engine_options.setdefault("poolclass", StaticPool)
    engine = create_engine(sa_url, connect_args=connect_args, **engine_options)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so that BEGIN is explicit (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "handle_error", _busy_is_typed)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Writers take the write lock up front, so a read-then-write transaction never fails
        # half-way with "database is locked". Reads are single statements and run in autocommit
        # (each is its own snapshot), which saves a round trip on every uncached verify.
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
