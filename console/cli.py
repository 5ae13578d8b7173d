"""The `keytrail` command line (Typer + Rich)."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from keytrail.settings import get_settings

app = typer.Typer(name="keytrail", help="KeyTrail: usage and audit trail for API keys.", no_args_is_help=True)
schema_app = typer.Typer(help="The wire contracts.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
console = Console()


SUB_APPS = {
    # command name: (module, Typer attribute)
    "keys": ("keytrail.console.cli_keys", "keys_app"),
    "usage": ("keytrail.console.cli_usage", "usage_app"),
    "signals": ("keytrail.console.cli_signals", "signals_app"),
    "alerts": ("keytrail.console.cli_alerts", "alerts_app"),
}
"""Sub-command groups that live in modules of their own."""

TOP_LEVEL_COMMANDS = {
    # module: function names registered as top-level commands
    "keytrail.console.cli_ingest": ("produce", "ingest"),
    "keytrail.console.cli_generate": ("generate",),
    "keytrail.console.cli_replay": ("replay",),
    "keytrail.console.cli_serve": ("serve",),
}


def _mount_sub_apps() -> None:
    """Register the command groups and commands whose modules are present."""
    for name, (module_name, attribute) in SUB_APPS.items():
        if importlib.util.find_spec(module_name) is not None:
            app.add_typer(getattr(importlib.import_module(module_name), attribute), name=name)
    for module_name, functions in TOP_LEVEL_COMMANDS.items():
        if importlib.util.find_spec(module_name) is not None:
            module = importlib.import_module(module_name)
            for function in functions:
                app.command()(getattr(module, function))


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="where to write the *.schema.json files")] = Path("schemas/json"),
) -> None:
    """Write the JSON Schema of every contract, for producers in any language."""
    from keytrail.schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(f"wrote {path}")


@app.command()
def migrate() -> None:
    """Apply ClickHouse migrations (chDB or server, from KEYTRAIL_CLICKHOUSE_URL)."""
    from keytrail.sql.backends import open_clickhouse
    from keytrail.sql.migrate import migrate as apply_migrations

    backend = open_clickhouse(get_settings().clickhouse_url)
    applied = apply_migrations(backend)
    console.print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.version:04d} {m.name}" for m in applied))
    backend.close()


@app.command()
def worker() -> None:
    """Run the stream worker: Kafka -> core -> ClickHouse -> last-used and signals topics."""
    import faust

    from keytrail.stream_processors.faust_app import build_worker_app

    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    faust_app = build_worker_app(settings)
    # The worker allocates many short-lived containers per batch; with the default thresholds
    # the cyclic GC rescans the long-lived key states over and over. Freeze what start-up built
    # and collect the young generation less often (states hold no reference cycles).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    faust.Worker(faust_app, loglevel=settings.log_level.lower(), override_logging=False).execute_from_commandline()


@app.command()
def projector() -> None:
    """Run the last-used projector: keytrail.last-used.v1 -> key store last_used_at."""
    from keytrail.keystore.store import KeyStore
    from keytrail.stream_processors.projector import LastUsedProjector, run_kafka_projector

    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env)
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    try:
        run_kafka_projector(
            settings.kafka_bootstrap, LastUsedProjector(store), group_id=settings.projector_group_id,
            should_stop=lambda: stopping["now"],
        )
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


def _mount_demo() -> None:
    from keytrail.console.demo import demo_command

    app.command("demo")(demo_command)


def main() -> None:
    """Entry point of the `keytrail` console script."""
    _mount_demo()
    _mount_sub_apps()
    app()


if __name__ == "__main__":
    main()
