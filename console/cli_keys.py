"""`keytrail keys …`: create, list, show, update, rotate, renew, revoke, disable, enable, sweep, purge."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url

from keytrail.keystore import UNCHANGED, Caller, KeyFilter, KeySort, KeyStore, KeyStoreError
from keytrail.keystore.expiry import resolve_expiry
from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.timestamps import utc_now
from keytrail.settings import MissingSecret, RunMode, get_settings

keys_app = typer.Typer(
    help="Create, list, rotate, renew and revoke API keys. Secrets are shown once, at creation and rotation.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

EXPIRING_SOON = timedelta(days=7)
F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
ActorOption = Annotated[
    str | None, typer.Option(help="who is acting, for the audit trail [default: cli:$USER]")
]
ReasonOption = Annotated[str, typer.Option(help="why, for the audit trail")]


# ---------------------------------------------------------------------- plumbing


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _caller(actor: str | None) -> Caller:
    return Caller.admin(actor or _default_actor())


@contextmanager
def opened_store() -> Iterator[KeyStore]:
    """The key store named by the settings (KEYTRAIL_KEYSTORE_URL, KEYTRAIL_SECRET, KEYTRAIL_KEY_ENV).

    In production mode lifecycle events go to Kafka; in embedded mode they stay in the store's
    outbox, which the running server drains.
    """
    settings = get_settings()
    secret = settings.hashing_secret()  # a missing secret in production is reported before anything starts
    sink = None
    if settings.mode is RunMode.PRODUCTION:
        from keytrail.keystore import KafkaLifecycleSink

        sink = KafkaLifecycleSink(settings.kafka_bootstrap)
    sqlite_path = _sqlite_path(settings.keystore_url)
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    store = KeyStore.open(settings.keystore_url, secret, env=settings.key_env, lifecycle_sink=sink)
    try:
        yield store
    finally:
        store.close()
        if sink is not None:
            sink.close()


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def print_error(code: str, message: str) -> None:
    """One line on stderr: `error[code]: message` (no markup is read from the message)."""
    err.print(Text.assemble((f"error[{code}]", "red"), f": {message}"), highlight=False, soft_wrap=True)


def reports_errors(command: F) -> F:
    """Print key-store errors as one line (`error[code]: message`) and exit with status 1."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyStoreError as error:
            print_error(error.code, error.message)
            raise typer.Exit(1) from None
        except MissingSecret as error:
            print_error("missing_secret", str(error))
            raise typer.Exit(1) from None

    return run  # type: ignore[return-value]


def _confirm(question: str, yes: bool) -> None:
    if not yes:
        typer.confirm(question, abort=True)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def record_json(record: KeyRecord) -> dict[str, Any]:
    """A record as JSON, with the masked key added."""
    return {**record.model_dump(mode="json"), "masked": record.masked}


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _duration(span: timedelta) -> str:
    if span.days:
        return f"{span.days}d"
    if span.seconds >= 3600:
        return f"{span.seconds // 3600}h"
    return f"{max(span.seconds // 60, 1)}m"


def expiry_text(expires_at: datetime | None, now: datetime) -> Text:
    """The expiry, coloured: ∞ never, red expired, yellow within 7 days, green otherwise."""
    if expires_at is None:
        return Text("∞", style="green")
    if expires_at <= now:
        return Text(f"{_when(expires_at)} (expired)", style="red")
    remaining = expires_at - now
    if remaining <= EXPIRING_SOON:
        return Text(f"{_when(expires_at)} (in {_duration(remaining)})", style="yellow")
    return Text(_when(expires_at), style="green")


_STATUS_STYLES = {
    KeyStatus.ACTIVE: "green",
    KeyStatus.DISABLED: "yellow",
    KeyStatus.EXPIRED: "red",
    KeyStatus.REVOKED: "red",
}


def _status_text(record: KeyRecord, now: datetime) -> Text:
    text = Text(record.status.value, style=_STATUS_STYLES[record.status])
    if record.grace_until is not None and record.status is KeyStatus.ACTIVE:
        text.append(f" (rotated, grace until {_when(record.grace_until)})", style="yellow")
    return text


def keys_table(records: list[KeyRecord], now: datetime) -> Table:
    """The records page: name, id, masked key, project, status, created, last used, expires."""
    table = Table(title=f"{len(records)} key(s)", title_justify="left")
    for column in ("Name", "ID", "Key", "Project", "Status", "Created", "Last used", "Expires"):
        # ids and masks are copied by hand: never wrap them
        table.add_column(column, no_wrap=column in ("ID", "Key"), overflow="fold")
    for record in records:
        table.add_row(
            record.name,
            record.id,
            record.masked,
            record.project_id,
            _status_text(record, now),
            _when(record.created_at),
            _when(record.last_used_at),
            expiry_text(record.expires_at, now),
        )
    return table


def key_details(record: KeyRecord, now: datetime) -> Table:
    """One key, field by field."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("Name", record.name),
        ("ID", record.id),
        ("Key", record.masked),
        ("Project", record.project_id),
        ("Owner", record.owner or "-"),
        ("Status", _status_text(record, now)),
        ("Scopes", ", ".join(record.scopes) or "none (only endpoints that ask for no scope)"),
        ("Quota", "unlimited" if record.quota is None else f"{record.quota} requests/day"),
        ("IP allowlist", ", ".join(record.ip_allowlist) or "any address"),
        ("Created", _when(record.created_at)),
        ("Last used", _when(record.last_used_at)),
        ("Last used from", record.last_used_ip or "-"),
        ("Expires", expiry_text(record.expires_at, now)),
    ]
    if record.rotated_from:
        rows.append(("Rotated from", record.rotated_from))
    if record.grace_until:
        rows.append(("Grace until", _when(record.grace_until)))
    for label, value in rows:
        table.add_row(label, value)
    return table


def _show_secret_once(record: KeyRecord, secret: str, as_json: bool, headline: str) -> None:
    if as_json:
        _print_json({**record_json(record), "secret": secret})
        return
    out.print(f"[green]{headline}[/green] {record.name} ({record.id}) in project {record.project_id}")
    out.print("\nSecret (shown once, store it now; KeyTrail keeps only a keyed hash):\n")
    out.print(f"  {secret}\n", style="bold", highlight=False, soft_wrap=True)


def _print_record(record: KeyRecord, as_json: bool, headline: str) -> None:
    if as_json:
        _print_json(record_json(record))
    else:
        out.print(
            f"[green]{headline}[/green] {record.name} ({record.id}, {record.masked}): {record.status.value}"
        )


# ---------------------------------------------------------------------- commands


@keys_app.command()
@reports_errors
def create(
    name: Annotated[str, typer.Argument(help="what the key is for, e.g. 'billing worker'")],
    project: Annotated[str, typer.Option("--project", "-p", help="project the key belongs to")],
    owner: Annotated[str, typer.Option(help="person or team responsible")] = "",
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="granted scope (repeat); * = all")
    ] = None,
    quota: Annotated[int | None, typer.Option(min=0, help="requests per day [default: unlimited]")] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="allowed IP or CIDR (repeat) [default: any]")
    ] = None,
    expires: Annotated[
        str, typer.Option(help="1h, 1d, 7d, 30d, 90d, 180d, 365d, never, or a date (YYYY-MM-DD)")
    ] = "never",
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; its secret is printed once."""
    with opened_store() as store:
        record, secret = store.create_key(
            name,
            project,
            caller=_caller(actor),
            owner=owner,
            scopes=scope or [],
            quota=quota,
            ip_allowlist=allow or [],
            expires_in=expires,
        )
    _show_secret_once(record, secret, as_json, "Created")


@keys_app.command("list")
@reports_errors
def list_keys(
    project: Annotated[str | None, typer.Option("--project", "-p", help="only this project")] = None,
    status: Annotated[list[KeyStatus] | None, typer.Option(help="only these statuses (repeat)")] = None,
    owner: Annotated[str | None, typer.Option(help="only this owner")] = None,
    idle_days: Annotated[int | None, typer.Option(min=0, help="used, but not in the last N days")] = None,
    never_used: Annotated[bool, typer.Option("--never-used", help="never used at all")] = False,
    expiring_within: Annotated[
        int | None, typer.Option(min=0, help="active keys expiring within N days")
    ] = None,
    sort: Annotated[KeySort, typer.Option(help="order by")] = KeySort.CREATED,
    ascending: Annotated[bool, typer.Option("--asc", help="ascending order [default: descending]")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="at most N keys")] = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (masked), with filters and sort."""
    filters = KeyFilter(
        project_id=project,
        statuses=tuple(status or ()),
        owner=owner,
        idle_days=idle_days,
        never_used=never_used,
        expiring_within_days=expiring_within,
        sort=sort,
        descending=not ascending,
        limit=limit,
    )
    with opened_store() as store:
        records = store.list_keys(filters, caller=_caller(None))
    if as_json:
        _print_json([record_json(record) for record in records])
    else:
        out.print(keys_table(records, utc_now()))


@keys_app.command()
@reports_errors
def show(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_…), never its secret")],
    history: Annotated[bool, typer.Option("--history", help="also show the key's audit trail")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show one key (masked) and, with --history, every change made to it."""
    with opened_store() as store:
        record = store.get(key_id, caller=_caller(None))
        events = store.lifecycle_events(key_id, caller=_caller(None)) if history else []
    if as_json:
        body = record_json(record)
        if history:
            body["history"] = [event.model_dump(mode="json") for event in events]
        _print_json(body)
        return
    out.print(key_details(record, utc_now()))
    if history:
        trail = Table(title="History", title_justify="left")
        for column in ("When", "Action", "Actor", "Reason"):
            trail.add_column(column)
        for event in events:
            trail.add_row(_when(event.occurred_at), event.action.value, event.actor, event.reason or "-")
        out.print(trail)


@keys_app.command()
@reports_errors
def update(
    key_id: Annotated[str, typer.Argument(help="the key's id")],
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    owner: Annotated[str | None, typer.Option(help="new owner")] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="replace the scopes (repeat)")
    ] = None,
    clear_scopes: Annotated[bool, typer.Option("--clear-scopes", help="remove every scope")] = False,
    quota: Annotated[int | None, typer.Option(min=0, help="requests per day")] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="remove the quota")] = False,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="replace the IP allowlist (repeat)")
    ] = None,
    clear_allowlist: Annotated[bool, typer.Option("--clear-allowlist", help="allow any address")] = False,
    expires: Annotated[
        str | None, typer.Option(help="new expiry: preset, never, or a date (YYYY-MM-DD)")
    ] = None,
    actor: ActorOption = None,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """Change name, owner, scopes, quota, IP allowlist or expiry; other fields stay."""
    changes: dict[str, Any] = {
        "name": name if name is not None else UNCHANGED,
        "owner": owner if owner is not None else UNCHANGED,
        "scopes": [] if clear_scopes else (scope if scope else UNCHANGED),
        "quota": None if unlimited else (quota if quota is not None else UNCHANGED),
        "ip_allowlist": [] if clear_allowlist else (allow if allow else UNCHANGED),
        "expires_at": resolve_expiry(utc_now(), expires, None) if expires is not None else UNCHANGED,
    }
    with opened_store() as store:
        record = store.update_key(key_id, caller=_caller(actor), reason=reason, **changes)
    _print_record(record, as_json, "Updated")


@keys_app.command()
@reports_errors
def rotate(
    key_id: Annotated[str, typer.Argument(help="the key's id")],
    grace: Annotated[str, typer.Option(help="how long the old key keeps working: 0, 15m, 24h, 7d")] = "24h",
    expires: Annotated[
        str | None, typer.Option(help="expiry of the new key [default: same as the old one]")
    ] = None,
    actor: ActorOption = None,
    reason: ReasonOption = "",
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Issue a successor key; the old one keeps working for the grace period, then is revoked."""
    _confirm(f"Rotate {key_id}? The old key stops working after {grace}.", yes)
    with opened_store() as store:
        rotation = store.rotate(key_id, caller=_caller(actor), grace=grace, expires_in=expires, reason=reason)
    if as_json:
        _print_json(
            {
                "previous": record_json(rotation.previous),
                "successor": record_json(rotation.successor),
                "secret": rotation.secret,
            }
        )
        return
    _show_secret_once(rotation.successor, rotation.secret, False, "Rotated: new key")
    out.print(
        f"The old key {rotation.previous.masked} works until {_when(rotation.previous.grace_until)} UTC."
    )


@keys_app.command()
@reports_errors
def renew(
    key_id: Annotated[str | None, typer.Argument(help="the key's id (or use --expiring-within)")] = None,
    expiring_within: Annotated[
        int | None, typer.Option(min=0, help="renew every active key expiring within N days")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="with --expiring-within: one project")
    ] = None,
    by: Annotated[str, typer.Option(help="extend by 30d or 90d")] = "30d",
    actor: ActorOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Extend one key's expiry, or every key expiring soon; brings expired keys back."""
    if (key_id is None) == (expiring_within is None):
        print_error("invalid_request", "give a key id or --expiring-within N (not both)")
        raise typer.Exit(2)
    with opened_store() as store:
        if key_id is not None:
            records = [store.renew(key_id, caller=_caller(actor), by=by)]
        else:
            assert expiring_within is not None
            _confirm(f"Renew every active key expiring within {expiring_within} days by {by}?", yes)
            records = store.renew_expiring(expiring_within, caller=_caller(actor), by=by, project_id=project)
    if as_json:
        _print_json([record_json(record) for record in records])
        return
    if not records:
        out.print("No key to renew.")
    for record in records:
        out.print(f"[green]Renewed[/green] {record.name} ({record.id}) until {_when(record.expires_at)} UTC")


@keys_app.command()
@reports_errors
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id")],
    reason: ReasonOption = "",
    actor: ActorOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Revoke a key for good (immediately here; within 5 s in every other KeyTrail process)."""
    _confirm(f"Revoke {key_id}? This cannot be undone.", yes)
    with opened_store() as store:
        record = store.revoke(key_id, caller=_caller(actor), reason=reason)
    _print_record(record, as_json, "Revoked")


@keys_app.command()
@reports_errors
def disable(
    key_id: Annotated[str, typer.Argument(help="the key's id")],
    reason: ReasonOption = "",
    actor: ActorOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Stop a key from working until it is enabled again."""
    _confirm(f"Disable {key_id}? Requests with it will be refused.", yes)
    with opened_store() as store:
        record = store.disable(key_id, caller=_caller(actor), reason=reason)
    _print_record(record, as_json, "Disabled")


@keys_app.command()
@reports_errors
def enable(
    key_id: Annotated[str, typer.Argument(help="the key's id")],
    reason: ReasonOption = "",
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let a disabled key work again."""
    with opened_store() as store:
        record = store.enable(key_id, caller=_caller(actor), reason=reason)
    _print_record(record, as_json, "Enabled")


@keys_app.command()
@reports_errors
def sweep(as_json: JsonOption = False) -> None:
    """Expire keys past their expiry and revoke rotated keys past their grace period, now."""
    with opened_store() as store:
        report = store.sweep()
    if as_json:
        _print_json({"expired": report.expired, "grace_ended": report.grace_ended})
        return
    out.print(f"{len(report.expired)} key(s) expired, {len(report.grace_ended)} rotated key(s) revoked.")
    for key_id in report.expired:
        out.print(f"  expired  {key_id}")
    for key_id in report.grace_ended:
        out.print(f"  revoked  {key_id} (grace period ended)")


@keys_app.command()
@reports_errors
def purge(
    key_id: Annotated[str, typer.Argument(help="the id of a revoked or expired key")],
    actor: ActorOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a revoked or expired key's record for good (its audit trail is kept)."""
    _confirm(f"Purge {key_id}? Its record is deleted; only its audit trail remains.", yes)
    with opened_store() as store:
        record = store.purge(key_id, caller=_caller(actor))
    _print_record(record, as_json, "Purged")
