"""`keytrail signals list | mark-expected`: the explained findings of the detectors, and feedback on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from importlib import resources
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console

from keytrail.console.cli_usage import (
    JsonOption,
    ProjectOption,
    opened_clickhouse,
    print_error,
    reports_errors,
    rows_table,
)
from keytrail.sql.queries.spec import format_clickhouse_time, parse_time

signals_app = typer.Typer(help="Anomaly, idle and expiry signals per key.", no_args_is_help=True)
F = TypeVar("F", bound=Callable[..., Any])


def feedback_errors(command: F) -> F:
    """A mark that cannot be made (not found, read-only, nothing to teach): one line, exit 1."""
    from keytrail.console.feedback import FeedbackError
    from keytrail.keystore.errors import KeyStoreError

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FeedbackError as error:
            print_error(error.code, str(error))
            raise typer.Exit(1) from None
        except KeyStoreError as error:
            print_error(error.code, error.message)
            raise typer.Exit(1) from None

    return run  # type: ignore[return-value]


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


ReasonOption = Annotated[str, typer.Option(help="why it was expected, kept in the audit trail (secrets are redacted)")]
ActorOption = Annotated[str | None, typer.Option(help="who is marking, for the audit trail [default: cli:$USER]")]


@contextmanager
def opened_feedback_stores() -> Iterator[tuple[Any, Any]]:
    """ClickHouse and the key store, as a mark needs them; in embedded mode the audit row is published at once."""
    from keytrail.console.cli_keys import opened_store
    from keytrail.settings import RunMode, get_settings
    from keytrail.sql.migrate import migrate
    from keytrail.stream_processors.sinks.lifecycle_audit import ClickHouseLifecycleSink

    with opened_clickhouse() as clickhouse, opened_store() as keystore:
        migrate(clickhouse)
        yield clickhouse, keystore
        if get_settings().mode is not RunMode.PRODUCTION:
            keystore.publish_pending_events(ClickHouseLifecycleSink(clickhouse))


def mark_over_console(path: str, reason: str) -> dict[str, Any] | None:
    """POST the mark to a running `keytrail serve` (it owns the embedded chDB directory); None when no
    console answers at KEYTRAIL_API_URL. Authenticates with KEYTRAIL_API_KEY or DATA_DIR/admin.key."""
    import httpx

    from keytrail.console.cli_ingest import _console_answers, _ingest_key
    from keytrail.settings import RunMode, get_settings

    settings = get_settings()
    if settings.mode is RunMode.PRODUCTION or not _console_answers(settings.api_url):
        return None
    explicit = settings.api_key.get_secret_value() if settings.api_key is not None else None
    key = _ingest_key(explicit, settings.data_dir)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(settings.api_url.rstrip("/") + path, json={"reason": reason}, headers=headers, timeout=30)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        print_error(error.get("code", f"http_{response.status_code}"),
                    f"{error.get('message', response.reason_phrase)} (console {settings.api_url})")
        raise typer.Exit(1)
    return body


def print_marks(body: dict[str, Any], as_json: bool) -> None:
    """The marks made (or found made before), as JSON or one line each."""
    if as_json:
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    for mark in body["marks"]:
        learnt = f"; {mark['learnt_by']} learns it for {mark['key_id']}" if mark["learnt_by"] else \
            "; no detector learns from this kind (recorded in the audit trail only)"
        verb = "already marked expected" if mark["already_marked"] else "marked expected"
        console.print(f"{verb}: signal {mark['signal_id']} ({mark['kind']} on {mark['key_id']}){learnt}",
                      highlight=False, soft_wrap=True)
    if body.get("alert"):
        alert = body["alert"]
        console.print(f"alert {alert['alert_id']} is {alert['status']}", highlight=False)


@signals_app.command("mark-expected")
@reports_errors
@feedback_errors
def mark_expected(
    signal_id: Annotated[str, typer.Argument(help="the signal's id (from `keytrail signals list`)")],
    reason: ReasonOption = "",
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark a signal as expected: the detector that raised it learns it for that key (a network, a route,
    an hour band or a rate level becomes known) and the key's audit trail records who and why.

    With the embedded default, a running `keytrail serve` (KEYTRAIL_API_URL) takes the mark; else this
    process opens the store itself."""
    from urllib.parse import quote

    from keytrail.console.cli_alerts import _default_actor
    from keytrail.console.feedback import MarkOutcome, mark_signal_expected
    from keytrail.keystore.caller import Caller

    served = mark_over_console(f"/v1/signals/{quote(signal_id, safe='')}/expected", reason)
    if served is not None:  # `keytrail serve` owns the store: the mark goes through it (actor: its key)
        print_marks(served, as_json)
        return
    with opened_feedback_stores() as (clickhouse, keystore):
        stored, created = mark_signal_expected(
            clickhouse, keystore, Caller.admin(actor or _default_actor()), signal_id, reason=reason
        )
    print_marks(MarkOutcome([stored], [created]).public(), as_json)
