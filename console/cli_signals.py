"""`keytrail signals list`: the explained findings of the detectors."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Annotated

import orjson
import typer
from rich.console import Console

from keytrail.console.cli_usage import (
    JsonOption,
    ProjectOption,
    opened_clickhouse,
    reports_errors,
    rows_table,
)
from keytrail.sql.queries.spec import format_clickhouse_time, parse_time

signals_app = typer.Typer(help="Anomaly, idle and expiry signals per key.", no_args_is_help=True)



@signals_app.callback()
def signals_group() -> None:
    """Anomaly, idle and expiry signals per key."""


SIGNALS_SQL = (resources.files("keytrail.console.api") / "sql" / "signals.sql").read_text()


@signals_app.command("list")
@reports_errors
def list_signals(
    key: Annotated[str | None, typer.Option("--key", "-k", help="only this key id")] = None,
    since: Annotated[str, typer.Option(help="how far back: ISO 8601 or a duration (24h, 7d)")] = "24h",
    kind: Annotated[str | None, typer.Option(help="only this kind, e.g. new_network")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Signals newest first, each with its severity and the sentence that explains it."""
    try:
        start = parse_time(since, datetime.now(UTC))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    params = {"since": format_clickhouse_time(start), "key_id": key or "", "kind": kind or "",
              "project": project or "", "limit": limit}
    with opened_clickhouse() as clickhouse:
        rows = clickhouse.query(SIGNALS_SQL, params)
    if as_json:
        for row in rows:
            row["evidence"] = orjson.loads(row["evidence"]) if row.get("evidence") else {}
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    Console().print(rows_table(f"signals since {format_clickhouse_time(start)} UTC", rows,
                               ("detected_at", "key_id", "kind", "severity", "score", "message")))
