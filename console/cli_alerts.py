"""`keytrail alerts …`: list, acknowledge and resolve alerts (state in ClickHouse's `alerts` table)."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from keytrail.schemas.timestamps import format_utc_millis
from keytrail.settings import get_settings
from keytrail.sql.backends import ClickHouseError, open_clickhouse
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.alerting.decide import AlertNotFound, AlertStateConflict
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.model import Alert, AlertStatus
from keytrail.stream_processors.alerting.store import ClickHouseAlertStore

alerts_app = typer.Typer(
    help="Alerts on idle, never-used, anomalous, expiring and revoked-but-used keys.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ActorOption = Annotated[
    str | None, typer.Option(help="who is acting, for the alert record [default: cli:$USER]")
]

_SEVERITY_STYLE = {
    "info": "dim",
    "low": "cyan",
    "medium": "yellow",
    "high": "bold orange1",
    "critical": "bold red",
}


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


@contextmanager
def opened_engine() -> Iterator[AlertEngine]:
    """The alert store on KEYTRAIL_CLICKHOUSE_URL (a server, or chDB when no `keytrail serve` holds it)."""
    settings = get_settings()
    try:
        backend = open_clickhouse(settings.clickhouse_url)
    except (ClickHouseError, ValueError) as exc:
        err.print(f"[red]error:[/] cannot open ClickHouse at {settings.clickhouse_url}: {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:  # chDB refuses a data directory another process owns
        err.print(
            f"[red]error:[/] cannot open {settings.clickhouse_url} ({exc}); "
            "if `keytrail serve` is running it owns the embedded data directory"
        )
        raise typer.Exit(1) from None
    try:
        migrate(backend)
        yield AlertEngine(ClickHouseAlertStore(backend))
    finally:
        backend.close()


def one_line_errors(function: F) -> F:
    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (AlertNotFound, AlertStateConflict, ClickHouseError) as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _when(value: Any) -> str:
    return "" if value is None else format_utc_millis(value)[:16].replace("T", " ")


def _table(alerts: list[Alert]) -> Table:
    table = Table(title=f"{len(alerts)} alert(s)")
    for column in (
        "alert",
        "status",
        "severity",
        "rule",
        "key",
        "project",
        "opened",
        "last seen",
        "seen",
        "message",
    ):
        table.add_column(column, overflow="fold" if column == "message" else "ellipsis")
    for alert in alerts:
        severity = alert.severity.value
        table.add_row(
            alert.alert_id,
            alert.status.value,
            f"[{_SEVERITY_STYLE.get(severity, '')}]{severity}[/]",
            alert.rule,
            alert.key_id,
            alert.project_id,
            _when(alert.opened_at),
            _when(alert.last_seen_at),
            str(alert.occurrences),
            alert.message[:160],
        )
    return table


@alerts_app.command("list")
@one_line_errors
def list_alerts(
    status: Annotated[
        AlertStatus | None, typer.Option(help="open, acknowledged or resolved [default: all]")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="only this key id")] = None,
    project: Annotated[str | None, typer.Option("--project", help="only this project")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    as_json: JsonOption = False,
) -> None:
    """Alerts, newest change first."""
    with opened_engine() as engine:
        alerts = engine.store.list(status=status, key_id=key, project_id=project, limit=limit)
    if as_json:
        print(json.dumps([a.model_dump(mode="json") for a in alerts], indent=2))
    else:
        out.print(_table(alerts))


@alerts_app.command("ack")
@one_line_errors
def ack(
    alert_id: Annotated[str, typer.Argument(help="the alert id (alt_…)")],
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Acknowledge an open alert: someone is on it, no more reminders (an escalation reopens it)."""
    with opened_engine() as engine:
        alert = engine.acknowledge(alert_id, actor or _default_actor())
    _done(alert, as_json, "acknowledged")


@alerts_app.command("resolve")
@one_line_errors
def resolve(
    alert_id: Annotated[str, typer.Argument(help="the alert id (alt_…)")],
    reason: Annotated[str, typer.Option(help="what was done, kept with the alert")] = "",
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve an alert (open or acknowledged). If the condition still holds, a new alert opens later."""
    with opened_engine() as engine:
        alert = engine.resolve(alert_id, actor or _default_actor(), reason)
    _done(alert, as_json, "resolved")


def _done(alert: Alert, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(alert.model_dump(mode="json"), indent=2))
    else:
        out.print(f"{verb} {alert.alert_id} ({alert.rule} on {alert.key_id})")


@alerts_app.command("mark-expected")
def mark_expected(
    alert_id: Annotated[str, typer.Argument(help="the alert id (alt_…)")],
    reason: Annotated[str, typer.Option(help="why it was expected, kept in the audit trail")] = "",
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark an alert as expected: every signal it was built on teaches its detector (for that key),
    the key's audit trail records it, and the alert is resolved."""
    from urllib.parse import quote

    from keytrail.console.cli_signals import (
        feedback_errors,
        mark_over_console,
        opened_feedback_stores,
        print_marks,
    )
    from keytrail.console.feedback import mark_alert_expected
    from keytrail.keystore.caller import Caller

    served = mark_over_console(f"/v1/alerts/{quote(alert_id, safe='')}/expected", reason)
    if served is not None:  # `keytrail serve` owns the store
        print_marks(served, as_json)
        return

    @feedback_errors
    @one_line_errors
    def run() -> None:
        with opened_feedback_stores() as (clickhouse, keystore):
            engine = AlertEngine(ClickHouseAlertStore(clickhouse))
            outcome = mark_alert_expected(
                clickhouse, keystore, engine, Caller.admin(actor or _default_actor()), alert_id, reason=reason
            )
        print_marks(outcome.public(), as_json)

    run()
