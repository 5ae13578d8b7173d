"""`keytrail usage …`: the security team's canned queries from the command line.

Each command runs one named query from sql/queries/ through `keytrail.sql.queries.run_query` (the same
runner the HTTP API uses), prints a Rich table or, with `--json`, the rows as JSON. Times take
ISO 8601 or a duration back from now (`90m`, `24h`, `7d`, `2w`).

For now the CLI opens ClickHouse itself (KEYTRAIL_CLICKHOUSE_URL). On the embedded default the
running server owns the chDB directory; ask it over HTTP (`GET /v1/usage/<query>`) instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keytrail.settings import get_settings
from keytrail.sql.backends import ClickHouseBackend, ClickHouseError, open_clickhouse
from keytrail.sql.queries import QueryError, query_spec, query_specs, run_query

usage_app = typer.Typer(
    help="Who used which key, from where, when and for what: canned queries over the usage trail.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
TABLE_COLUMNS = {
    "key_timeline": ("occurred_at", "status", "outcome", "method", "route", "client_ip", "user_agent", "late"),
    "key_ips": ("ip", "network", "requests", "errors", "denials", "first_seen", "last_seen"),
    "key_routes": ("service", "method", "route", "requests", "errors", "denials", "p50_latency_ms", "p95_latency_ms"),
    "key_audit": ("occurred_at", "action", "actor", "reason"),
    "top_keys": ("key_id", "project_id", "total_requests", "total_errors", "total_denials", "error_rate", "denial_rate"),
    "project_usage": ("project_id", "active_keys", "total_requests", "total_errors", "total_denials", "error_rate",
                      "denial_rate"),
    "keys_many_networks": ("key_id", "project_id", "networks", "ips", "total_requests", "sample_networks"),
    "denial_storms": ("key_id", "project_id", "bucket_start", "denials", "ips", "outcomes", "sample_ips"),
    "inactive_key_use": ("key_id", "project_id", "state", "inactive_since", "requests", "accepted", "ips", "last_seen"),
    "idle_keys": ("key_id", "project_id", "last_used_at", "idle_days", "last_used_ip", "last_service"),
}
"""What the table shows when a query returns more than fits a terminal (`--json` has every column)."""


def _help(query: str, param: str) -> str:
    """A parameter's help, from the query's header (one place defines it)."""
    spec = query_spec(query).param_by_name[param]
    default = f" (default: {spec.default})" if spec.default not in (None, "") else ""
    return spec.doc + default


KeyArg = Annotated[str, typer.Argument(help="the key's public id (key_…)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the rows as JSON instead of a table")]
ProjectOption = Annotated[
    str | None, typer.Option("--project", "-p", help="only this project's keys [default: every project]")
]
SinceOption = Annotated[str | None, typer.Option(help="start: ISO 8601 or a duration back from now (24h, 7d)")]
UntilOption = Annotated[str | None, typer.Option(help="end: ISO 8601, `now` or a duration back from now")]
LimitOption = Annotated[int | None, typer.Option(help="at most this many rows")]


# ---------------------------------------------------------------------- plumbing


def print_error(code: str, message: str) -> None:
    """One line on stderr: `error[code]: message`."""
    err.print(Text.assemble((f"error[{code}]", "red"), f": {message}"), highlight=False, soft_wrap=True)


def _explain(error: ClickHouseError) -> tuple[str, str]:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    lowered = text.lower()
    if "unknown_table" in lowered or "doesn't exist" in lowered or "does not exist" in lowered:
        return "not_migrated", f"{text[:300]} — run `keytrail migrate` first"
    if "already initialized with path" in lowered or "lock" in lowered:
        return "store_busy", (
            "the chDB data directory is in use by another process (a running `keytrail serve`?); "
            "ask it over HTTP (GET /v1/usage/<query>) or stop it first"
        )
    return "clickhouse", text[:500]


def reports_errors(command: F) -> F:
    """Print query and ClickHouse errors as one line and exit non-zero."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except QueryError as error:
            print_error("invalid_parameter", str(error))
            raise typer.Exit(2) from None
        except ClickHouseError as error:
            code, message = _explain(error)
            print_error(code, message)
            raise typer.Exit(1) from None

    return run  # type: ignore[return-value]


@contextmanager
def opened_clickhouse() -> Iterator[ClickHouseBackend]:
    """ClickHouse as the settings name it (chDB directory or server URL)."""
    try:
        backend = open_clickhouse(get_settings().clickhouse_url)
    except ClickHouseError:
        raise
    except Exception as exc:  # chDB refuses a directory another process holds with a plain RuntimeError
        raise ClickHouseError(str(exc)) from exc
    try:
        yield backend
    finally:
        backend.close()


def _cell(value: Any) -> str | Text:
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = str(value)
    if len(text) >= 20 and text[4:5] == "-" and text[10:11] == "T":
        return text.replace("T", " ").removesuffix("Z")
    return text


def rows_table(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> Table:
    """Rows as a table; numbers right-aligned, times shown in UTC without the T and Z."""
    heading = title[:1].upper() + title[1:].rstrip(".")
    table = Table(title=f"{heading} — {len(rows)} row(s)", title_justify="left")
    if not rows:
        table.add_column("no rows in this window")
        return table
    shown = [c for c in (columns or tuple(rows[0])) if c in rows[0]]
    for column in shown:
        value = rows[0][column]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        copied_by_hand = column.endswith("_id") or column in ("ip", "client_ip", "network", "last_used_ip")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold", no_wrap=copied_by_hand)
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in shown))
    return table


def _emit(name: str, rows: list[dict[str, Any]], as_json: bool, render: Callable[[list[dict[str, Any]]], Any] | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    out.print(render(rows) if render else rows_table(query_spec(name).title, rows, TABLE_COLUMNS.get(name)))


def _params(**values: Any) -> dict[str, Any]:
    """Only what the user gave; the query's header supplies the rest."""
    return {name: value for name, value in values.items() if value is not None}


def run_and_print(name: str, as_json: bool, render: Callable[[list[dict[str, Any]]], Any] | None = None, **params: Any) -> list[dict[str, Any]]:
    """Run canned query `name` with the given parameters and print its rows."""
    with opened_clickhouse() as backend:
        rows = run_query(backend, name, **_params(**params))
    _emit(name, rows, as_json, render)
    return rows


# ---------------------------------------------------------------------- one key


@usage_app.command("timeline")
@reports_errors
def timeline(
    key_id: KeyArg,
    since: SinceOption = None,
    until: UntilOption = None,
    outcome: Annotated[str | None, typer.Option(help=_help("key_timeline", "outcome"))] = None,
    route: Annotated[str | None, typer.Option(help=_help("key_timeline", "route"))] = None,
    limit: Annotated[int | None, typer.Option(help=_help("key_timeline", "limit"))] = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every request made with one key, newest first: when, from where, what, with what outcome."""
    run_and_print("key_timeline", as_json, key_id=key_id, since=since, until=until, outcome=outcome, route=route,
                  limit=limit, project=project)


@usage_app.command("ips")
@reports_errors
def ips(key_id: KeyArg, since: SinceOption = None, until: UntilOption = None, limit: LimitOption = None,
        project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """The addresses one key was used from, with first and last seen (default window: 7d)."""
    run_and_print("key_ips", as_json, key_id=key_id, since=since, until=until, limit=limit, project=project)


@usage_app.command("networks")
@reports_errors
def networks(key_id: KeyArg, since: SinceOption = None, until: UntilOption = None, limit: LimitOption = None,
             project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """The networks (IPv4 /24, IPv6 /48) one key was used from, with first and last seen (default: 30d)."""
    run_and_print("key_networks", as_json, key_id=key_id, since=since, until=until, limit=limit, project=project)


@usage_app.command("routes")
@reports_errors
def routes(key_id: KeyArg, since: SinceOption = None, until: UntilOption = None, limit: LimitOption = None,
           project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """What one key was used for: requests, errors, denials and latency per service and route (default: 7d)."""
    run_and_print("key_routes", as_json, key_id=key_id, since=since, until=until, limit=limit, project=project)


@usage_app.command("agents")
@reports_errors
def agents(key_id: KeyArg, since: SinceOption = None, until: UntilOption = None, limit: LimitOption = None,
           project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """The client software (user agents) that used one key (default: 7d)."""
    run_and_print("key_user_agents", as_json, key_id=key_id, since=since, until=until, limit=limit, project=project)


def hours_grid(rows: list[dict[str, Any]]) -> Table:
    """A weekday x hour heat map of requests (darker = busier); `--json` has the counts."""
    counts = {(r["weekday"], r["hour"]): r["total_requests"] for r in rows}
    busiest = max(counts.values(), default=0)
    table = Table(
        title="Requests by weekday and hour", title_justify="left", box=None, padding=(0, 0),
        caption=f"busiest hour: {busiest:,} requests; · none  ░ ▒ ▓ █ up to the busiest", caption_justify="left",
    )
    table.add_column("", width=4)
    for hour in range(24):
        table.add_column(f"{hour:02d}", justify="right", width=3)
    glyphs = ("░░", "▒▒", "▓▓", "██")
    for day, name in enumerate(WEEKDAYS, start=1):
        cells: list[str | Text] = [name]
        for hour in range(24):
            n = counts.get((day, hour), 0)
            if n == 0:
                cells.append(Text(" ·", style="grey50"))
            else:
                cells.append(Text(glyphs[min(3, int(4 * n / busiest - 1e-9))], style="green"))
        table.add_row(*cells)
    return table


@usage_app.command("hours")
@reports_errors
def hours(
    key_id: KeyArg,
    since: SinceOption = None,
    until: UntilOption = None,
    timezone: Annotated[str | None, typer.Option(help=_help("key_hours_of_week", "timezone"))] = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """When in the week one key is used: a weekday x hour grid of requests (default: last 28 days)."""
    run_and_print("key_hours_of_week", as_json, hours_grid, key_id=key_id, since=since, until=until,
                  timezone=timezone, project=project)


@usage_app.command("baseline")
@reports_errors
def baseline(
    key_id: KeyArg,
    at: Annotated[str | None, typer.Option(help=_help("key_baseline", "at"))] = None,
    baseline_days: Annotated[int | None, typer.Option(help=_help("key_baseline", "baseline_days"))] = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """One key's last 24 hours against its own daily baseline, with networks, routes and clients never seen before."""
    run_and_print("key_baseline", as_json, key_id=key_id, at=at, baseline_days=baseline_days, project=project)


@usage_app.command("audit")
@reports_errors
def audit(key_id: KeyArg, since: SinceOption = None, until: UntilOption = None, limit: LimitOption = None,
          project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """Every change made to one key (created, rotated, revoked, …): who, when, why, before and after."""
    run_and_print("key_audit", as_json, key_id=key_id, since=since, until=until, limit=limit, project=project)


# ---------------------------------------------------------------------- across keys


@usage_app.command("top")
@reports_errors
def top(
    by: Annotated[str | None, typer.Option(help=_help("top_keys", "by"))] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int | None, typer.Option(help=_help("top_keys", "limit"))] = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """The busiest keys by requests, errors or denials (default window: 24h)."""
    run_and_print("top_keys", as_json, by=by, since=since, until=until, limit=limit, project=project)


@usage_app.command("projects")
@reports_errors
def projects(since: SinceOption = None, until: UntilOption = None, project: ProjectOption = None,
             as_json: JsonOption = False) -> None:
    """Requests, errors, denials and active keys per project (default window: 24h)."""
    run_and_print("project_usage", as_json, since=since, until=until, project=project)


@usage_app.command("spread")
@reports_errors
def spread(
    min_networks: Annotated[int | None, typer.Option(help=_help("keys_many_networks", "min_networks"))] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: LimitOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keys used from many networks at once: shared or leaked keys (default: >= 5 networks in 24h)."""
    run_and_print("keys_many_networks", as_json, min_networks=min_networks, since=since, until=until, limit=limit,
                  project=project)


@usage_app.command("storms")
@reports_errors
def storms(
    min_denials: Annotated[int | None, typer.Option(help=_help("denial_storms", "min_denials"))] = None,
    bucket_minutes: Annotated[int | None, typer.Option(help=_help("denial_storms", "bucket_minutes"))] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: LimitOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bursts of refused requests: keys with many denials within a few minutes (default window: 24h)."""
    run_and_print("denial_storms", as_json, min_denials=min_denials, bucket_minutes=bucket_minutes, since=since,
                  until=until, limit=limit, project=project)


@usage_app.command("inactive")
@reports_errors
def inactive(since: SinceOption = None, until: UntilOption = None, limit: LimitOption = None,
             project: ProjectOption = None, as_json: JsonOption = False) -> None:
    """Use of revoked, expired or disabled keys — and whether a service still accepted them (default: 7d)."""
    run_and_print("inactive_key_use", as_json, since=since, until=until, limit=limit, project=project)


def _key_list(project: str | None) -> tuple[list[str], list[datetime]]:
    """Active keys from the key store (ClickHouse cannot see it), confined to `project`."""
    from keytrail.keystore import KeyFilter, KeyStore
    from keytrail.schemas.keys import KeyStatus

    settings = get_settings()
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env)
    try:
        records = store.list_keys(KeyFilter(project_id=project, statuses=(KeyStatus.ACTIVE,)))
    finally:
        store.close()
    return [r.id for r in records], [r.created_at for r in records]


@usage_app.command("idle")
@reports_errors
def idle(
    days: Annotated[int | None, typer.Option(help=_help("idle_keys", "idle_days"))] = None,
    at: Annotated[str | None, typer.Option(help=_help("idle_keys", "at"))] = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Active keys that were used, but not for N days: candidates for revocation (default: 30 days)."""
    key_ids, created_ats = _key_list(project)
    run_and_print("idle_keys", as_json, key_ids=key_ids, created_ats=created_ats, idle_days=days, at=at,
                  project=project)


@usage_app.command("never-used")
@reports_errors
def never_used(
    days: Annotated[int | None, typer.Option(help=_help("never_used_keys", "idle_days"))] = None,
    at: Annotated[str | None, typer.Option(help=_help("never_used_keys", "at"))] = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Active keys created at least N days ago and never used (default: 30 days)."""
    key_ids, created_ats = _key_list(project)
    run_and_print("never_used_keys", as_json, key_ids=key_ids, created_ats=created_ats, idle_days=days, at=at,
                  project=project)


# ---------------------------------------------------------------------- any query, retention


@usage_app.command("queries")
def queries(as_json: JsonOption = False) -> None:
    """The canned queries, what they answer and their parameters."""
    described = [spec.describe() for spec in query_specs().values()]
    if as_json:
        sys.stdout.write(json.dumps(described, indent=2, ensure_ascii=False) + "\n")
        return
    table = Table(title="Canned queries (keytrail usage run NAME -P name=value)", title_justify="left")
    for column in ("name", "answers", "parameters"):
        table.add_column(column, overflow="fold")
    for item in described:
        params = ", ".join(
            p["name"] + ("" if p["required"] else f"={p['default']!s}" if p["default"] != "" else "=''")
            for p in item["parameters"]
        )
        table.add_row(item["name"], item["title"], params)
    out.print(table)


@usage_app.command("run")
@reports_errors
def run(
    name: Annotated[str, typer.Argument(help="a canned query (see `keytrail usage queries`)")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-P", help="name=value; repeat for arrays (key_ids=a -P key_ids=b)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run any canned query by name with name=value parameters."""
    spec = query_spec(name)
    values: dict[str, Any] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise QueryError(f"--param {item!r}: write it as name=value")
        if key in spec.param_by_name and spec.param_by_name[key].base_type.startswith("Array"):
            values.setdefault(key, []).append(value)
        else:
            values[key] = value
    run_and_print(name, as_json, **values)


@usage_app.command("retention")
@reports_errors
def retention(
    days: Annotated[int | None, typer.Option(help="keep raw events, per-minute and hourly data this many days")] = None,
    rollup_days: Annotated[int | None, typer.Option(help="keep the daily rollup this many days")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="confirm a shorter retention (older data is deleted)")] = False,
) -> None:
    """Show, or change with --days / --rollup-days, how long usage data is kept (ClickHouse TTL)."""
    from keytrail.sql.queries.retention import (
        RetentionError,
        apply_retention,
        current_retention,
        plan_retention,
    )

    with opened_clickhouse() as backend:
        try:
            if days is not None or rollup_days is not None:
                planned = plan_retention(backend, days, rollup_days)
                shrinking = [c for c in planned if c.shrinks]
                if shrinking and not yes:
                    for change in shrinking:
                        out.print(f"{change.table}: {change.before_days or 'forever'} -> {change.after_days} days")
                    typer.confirm("This deletes data older than the new retention for good. Go ahead?", abort=True)
                for change in apply_retention(backend, days, rollup_days, allow_shrink=True):
                    out.print(f"{change.table}: {change.before_days or 'forever'} -> {change.after_days} days")
            current = current_retention(backend)
        except RetentionError as error:
            print_error("retention", str(error))
            raise typer.Exit(2) from None
    table = Table(title="Retention (days)", title_justify="left")
    table.add_column("table")
    table.add_column("days", justify="right")
    for table_name, kept in current.items():
        table.add_row(table_name, "forever" if kept is None else str(kept))
    out.print(table)


@usage_app.command("refresh")
@reports_errors
def refresh() -> None:
    """Bring the hourly and daily rollups up to date now (ClickHouse also refreshes them every few minutes)."""
    from keytrail.sql.queries.rollups import refresh_rollups

    started = datetime.now(UTC)
    with opened_clickhouse() as backend:
        refresh_rollups(backend)
    out.print(f"rollups refreshed in {(datetime.now(UTC) - started).total_seconds():.1f} s")
