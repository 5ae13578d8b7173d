"""Two ClickHouse backends behind one small protocol: chDB in-process and a server over HTTP.

Both speak the same SQL, take parameters with ClickHouse's own `{name:Type}` binding and
return rows decoded from JSONEachRow, so a query gives the same Python values on either.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse

import orjson

JSON_OUTPUT_SETTINGS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_64bit_floats": 0,
    "date_time_output_format": "iso",
    "date_time_input_format": "best_effort",
}
"""Session settings of both backends: plain JSON numbers, ISO times out, ISO 8601 (any offset) accepted in."""


class ClickHouseError(RuntimeError):
    """ClickHouse refused a statement (bad SQL, bad data): retrying will not help."""


class ClickHouseUnavailable(ClickHouseError):
    """ClickHouse could not be reached; callers retry with backoff."""


_ESCAPED_TEXT = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
"""ClickHouse parses a `{name:String}` parameter in its escaped text form: these must be escaped."""


def clickhouse_literal(value: Any) -> str:
    """A parameter value in the text form ClickHouse parses for `{name:Type}` (chDB takes text only)."""
    if isinstance(value, str):
        return value.translate(_ESCAPED_TEXT)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ",".join(_quoted(v) for v in value) + "]"
    if value is None:
        return "\\N"
    return str(value)


def _quoted(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, datetime):
        return "'" + clickhouse_literal(value) + "'"
    return clickhouse_literal(value)


class ClickHouseBackend(Protocol):
    """What KeyTrail needs from ClickHouse."""

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


def _decode_rows(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw.splitlines() if line]


class ChdbBackend:
    """chDB, ClickHouse's engine in-process; one process per data directory, so it is serialised."""

    def __init__(self, path: str | Path) -> None:
        from chdb import session as chdb_session

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.url = f"chdb://{self.path}"
        self._lock = threading.Lock()
        self._session = chdb_session.Session(str(self.path))
        if not hasattr(self._session, "send_insert"):  # chDB older than streaming inserts
            self.insert_arrow = None  # callers then fall back to insert_json_rows
        for name, value in JSON_OUTPUT_SETTINGS.items():
            self._session.query(f"SET {name} = {value!r}" if isinstance(value, str) else f"SET {name} = {value}")

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None) -> bytes:
        with self._lock:
            try:
                bound = {name: clickhouse_literal(value) for name, value in (params or {}).items()}
                result = self._session.query(sql, fmt, params=bound)
            except Exception as exc:  # chDB raises plain RuntimeError for every engine error
                raise ClickHouseError(str(exc)) from exc
        return result.bytes() if result is not None else b""

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, "CSV", params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return _decode_rows(self._run(sql, "JSONEachRow", params))

    def insert_json_rows(self, table: str, payload: bytes) -> None:
        if payload:
            self._run(f"INSERT INTO {table} FORMAT JSONEachRow\n" + payload.decode(), "CSV", None)

    def insert_arrow(self, table: str, data: Any) -> None:
        """Insert a pyarrow Table, its columns named as in `table`, streamed as ArrowStream.

        Several times cheaper than JSONEachRow: no text parsing, no payload in the SQL text.
        ClickHouse converts the Arrow types on insert exactly as from JSON text: string to
        IPv6 (IPv4 mapped), Enum8 and UUID, fixed_size_binary(16) to UUID (RFC byte order),
        timestamp[ms, UTC] to DateTime64(3), integer epoch seconds to DateTime.
        """
        if not data.num_rows:
            return
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        block = sink.getvalue().to_pybytes()
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        with self._lock:
            try:
                with self._session.send_insert(f"INSERT INTO {table} ({columns})", "ArrowStream") as inserter:
                    inserter.append(block)
                    inserter.finish()
            except Exception as exc:  # chDB raises plain RuntimeError for every engine error
                raise ClickHouseError(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ServerBackend:
    """A ClickHouse server through clickhouse-connect (HTTP)."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        self.url = url
        self.database = parsed.path.lstrip("/") or "default"
        self._lock = threading.Lock()
        try:
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=unquote(parsed.username or "default"),
                password=unquote(parsed.password or ""),
                secure=parsed.scheme == "https",
                settings=JSON_OUTPUT_SETTINGS,
                **({"connect_timeout": float(query["connect_timeout"])} if "connect_timeout" in query else {}),
            )
            if self.database != "default":
                self._client.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                self._client.database = self.database
        except Exception as exc:
            raise ClickHouseUnavailable(f"cannot reach ClickHouse at {parsed.hostname}:{parsed.port}: {exc}") from exc

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        try:
            with self._lock:
                self._client.command(sql, parameters=params or None)
        except Exception as exc:
            raise _server_error(exc) from exc

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            with self._lock:
                raw = self._client.raw_query(sql, parameters=params or None, fmt="JSONEachRow")
        except Exception as exc:
            raise _server_error(exc) from exc
        return _decode_rows(raw)

    def insert_json_rows(self, table: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            with self._lock:
                self._client.raw_insert(table, insert_block=payload, fmt="JSONEachRow")
        except Exception as exc:
            raise _server_error(exc) from exc

    def close(self) -> None:
        self._client.close()


def _server_error(exc: Exception) -> ClickHouseError:
    """Connection failures are retryable; errors the server reports about the statement are not."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, OperationalError) or not isinstance(exc, DatabaseError):
        return ClickHouseUnavailable(str(exc))
    return ClickHouseError(str(exc))


def open_clickhouse(url: str) -> ClickHouseBackend:
    """The backend a URL names: `chdb://PATH` (in-process) or `http(s)://…` (server)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "chdb":
        return ChdbBackend(url.split("://", 1)[1])
    if scheme in ("http", "https"):
        return ServerBackend(url)
    raise ValueError(f"unsupported ClickHouse URL {url!r}: use chdb://PATH or http(s)://host:port/db")
