"""The ClickHouse store: one clickhouse-connect client, chosen by URL, for chDB and servers alike.

`open_clickhouse("chdb:///path")` gives clickhouse-connect's in-process chDB client,
`open_clickhouse("http(s)://user:pass@host:8123/db")` its HTTP client for a server; both sit
behind the same `ClickHouseStore`, so migrations, sinks, canned queries and the API run the
same code whichever they get. Parameters are always bound server-side (`{name:Type}` in the
SQL, values sent apart from it by the client); nothing here escapes or formats a value into SQL.

- `command(sql, params)`: DDL, ALTER, INSERT … SELECT; returns nothing.
- `query(sql, params) -> list[dict]`: rows as JSON values (ISO 8601 UTC times, addresses and
  UUIDs as text, exact Float32 text), the shape the HTTP API, the CLI and the alert store hand
  on. ClickHouse itself renders them (JSONEachRow through the client), so chDB and a server
  give byte-identical answers.
- `insert_arrow(table, pyarrow.Table)`: the sink's bulk path (the client's Arrow insert; chDB
  ingests it from a temporary file in one statement).
- `insert_json_rows(table, payload)`: newline-delimited JSON rows, for the small tables (signals,
  alerts, lifecycle audit) whose rows are simplest as JSON.

Errors: `ClickHouseUnavailable` (the server cannot be reached, the connection broke: retry
with backoff) and `ClickHouseError` (the statement or data was refused: retrying will not
help), mapped from clickhouse-connect's exception classes.

Threads: one store may be shared by threads. The chDB client serialises calls on its engine
handle (clickhouse-connect holds a lock per client); the HTTP client runs session-less here
(`autogenerate_session_id=False`), so concurrent statements from threads do not collide on a
server session. chDB hosts one engine per process and one data directory per engine: every
store in a process must use the same `chdb://` path (clients on that path share the data),
and a second process cannot open a directory another process holds — in embedded mode the
server owns it and the CLI talks to the server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse, urlunparse

import orjson

SESSION_SETTINGS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_64bit_floats": 0,
    "date_time_output_format": "iso",
    "date_time_input_format": "best_effort",
}
"""Settings of every store: plain JSON numbers, ISO times out, ISO 8601 (any offset) accepted in."""

JSON_OUTPUT_SETTINGS = SESSION_SETTINGS  # the former name, kept for importers


class ClickHouseError(RuntimeError):
    """ClickHouse refused a statement (bad SQL, bad data): retrying will not help."""


class ClickHouseUnavailable(ClickHouseError):
    """ClickHouse could not be reached; callers retry with backoff."""


class ClickHouseBackend(Protocol):
    """What KeyTrail needs from ClickHouse (implemented by `ClickHouseStore`; tests wrap it)."""

    url: str

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT … SELECT)."""

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts of JSON values."""

    def insert_json_rows(self, table: str, payload: bytes) -> None:
        """Insert newline-delimited JSON rows (JSONEachRow) into `table`."""

    # Optional: `insert_arrow(table, data: pyarrow.Table)`, the columns named as in `table`.
    # Callers check for it with getattr and fall back to `insert_json_rows` (see ClickHouseSink).

    def close(self) -> None:
        """Release the connection or the in-process engine."""


class ClickHouseStore:
    """KeyTrail's ClickHouse, through one clickhouse-connect client (chDB in-process or a server)."""

    def __init__(self, client: Any, url: str, *, database: str | None = None, kind: str = "server") -> None:
        self._client = client
        self.url = url
        self.database = database or "default"
        self.kind = kind
        """`chdb` or `server`."""

    @property
    def client(self) -> Any:
        """The clickhouse-connect client, for what the store does not wrap (typed Native reads, …)."""
        return self._client

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=params or None)
        except Exception as exc:
            raise _mapped(exc, self.url) from exc

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            raw = self._client.raw_query(sql, parameters=params or None, fmt="JSONEachRow")
        except Exception as exc:
            raise _mapped(exc, self.url) from exc
        return [orjson.loads(line) for line in raw.splitlines() if line]

    def insert_arrow(self, table: str, data: Any) -> None:
        """Insert a pyarrow Table whose columns are named as in `table`.

        ClickHouse converts the Arrow types on insert as it does JSON text: string to IPv6 (IPv4
        mapped), Enum8 and UUID, fixed_size_binary(16) to UUID (RFC byte order), timestamp[ms,
        UTC] to DateTime64(3), integer epoch seconds to DateTime.
        """
        if not data.num_rows:
            return
        try:
            self._client.insert_arrow(table, data)
        except Exception as exc:
            raise _mapped(exc, self.url) from exc

    def insert_json_rows(self, table: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            self._client.raw_insert(table, insert_block=payload, fmt="JSONEachRow")
        except Exception as exc:
            raise _mapped(exc, self.url) from exc

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing twice, or a connection already gone: nothing left to release
            pass

    def __repr__(self) -> str:
        return f"ClickHouseStore({self.kind}, database={self.database!r})"


def _mapped(exc: Exception, url: str) -> ClickHouseError:
    """clickhouse-connect's exceptions as KeyTrail's: unreachable is retryable, refused is not."""
    if isinstance(exc, ClickHouseError):
        return exc
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError, ProgrammingError

    if isinstance(exc, OperationalError):
        return ClickHouseUnavailable(f"ClickHouse at {_shown(url)} is unavailable: {exc}")
    if isinstance(exc, DatabaseError | ProgrammingError):
        return ClickHouseError(str(exc))
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return ClickHouseUnavailable(f"ClickHouse at {_shown(url)} is unavailable: {exc}")
    return ClickHouseError(str(exc))


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rsplit("@", 1)[1]
    return urlunparse(parsed._replace(netloc=f"{parsed.username}:***@{netloc}"))


def chdb_path(url: str) -> Path:
    """The data directory of a `chdb://PATH` URL (`chdb:///abs/path` or `chdb://relative/path`)."""
    return Path(unquote(url.split("://", 1)[1])).expanduser()


def open_chdb(path: str | Path) -> ClickHouseStore:
    """clickhouse-connect's in-process chDB client on data directory `path` (created if missing)."""
    import clickhouse_connect

    directory = Path(path).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    url = f"chdb://{directory}"  # chdb:///abs/path: the whole path is the data directory
    try:
        client = clickhouse_connect.get_client(dsn=url, settings=dict(SESSION_SETTINGS))
    except Exception as exc:
        raise _mapped(exc, url) from exc
    return ClickHouseStore(client, url, kind="chdb")


def open_server(url: str) -> ClickHouseStore:
    """clickhouse-connect's HTTP client for the server at `url`; its database is created if missing.

    `http(s)://user:password@host:port/database?connect_timeout=5&send_receive_timeout=30`.
    """
    import clickhouse_connect

    parsed = urlparse(url)
    options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    database = unquote(parsed.path.lstrip("/")) or "default"
    server_dsn = urlunparse(parsed._replace(path="", query=""))
    try:
        client = clickhouse_connect.get_client(
            dsn=server_dsn,
            settings=dict(SESSION_SETTINGS),
            autogenerate_session_id=False,  # session-less: threads may share the client
            **{name: float(options[name]) for name in ("connect_timeout", "send_receive_timeout") if name in options},
        )
        if database != "default":
            client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            client.database = database
    except Exception as exc:
        raise _mapped(exc, url) from exc
    return ClickHouseStore(client, url, database=database, kind="server")


def open_clickhouse(url: str) -> ClickHouseStore:
    """The store a URL names: `chdb://PATH` (in-process) or `http(s)://…` (server)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "chdb":
        return open_chdb(chdb_path(url))
    if scheme in ("http", "https"):
        return open_server(url)
    raise ValueError(f"unsupported ClickHouse URL {_shown(url)!r}: use chdb://PATH or http(s)://host:port/db")


def ChdbBackend(path: str | Path) -> ClickHouseStore:  # noqa: N802 - the constructor name call sites use
    """The chDB store on data directory `path` (same as `open_clickhouse(f"chdb://{path}")`)."""
    return open_chdb(os.fspath(path))


def ServerBackend(url: str) -> ClickHouseStore:  # noqa: N802 - the constructor name call sites use
    """The server store at `url` (same as `open_clickhouse(url)` for http(s) URLs)."""
    return open_server(url)
