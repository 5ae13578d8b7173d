"""`keytrail replay`: rebuild derived tables and last_used_at from the raw usage log."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console


def replay(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Drop every derived table and last_used_at, and recompute them from the raw usage events.

    Stop the worker (or `keytrail serve` in embedded mode) first.
    """
    from keytrail.keystore.store import KeyStore
    from keytrail.settings import get_settings
    from keytrail.sql.backends import open_clickhouse
    from keytrail.sql.migrate import migrate
    from keytrail.stream_processors.alerting import load_alert_rules
    from keytrail.stream_processors.alerting.decide import lifecycle_thresholds
    from keytrail.stream_processors.detectors import default_detectors
    from keytrail.stream_processors.detectors.key_lifecycle import IdleGapDetector
    from keytrail.stream_processors.replay import DERIVED_TABLES
    from keytrail.stream_processors.replay import replay as run_replay

    console = Console()
    settings = get_settings()
    if not yes:
        typer.confirm(
            f"Replay truncates {', '.join(DERIVED_TABLES)} and resets last_used_at, then rebuilds them. Continue?",
            abort=True,
        )
    thresholds = lifecycle_thresholds(load_alert_rules())
    clickhouse = open_clickhouse(settings.clickhouse_url)
    migrate(clickhouse)
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env)
    try:
        with console.status("replaying the usage log…") as status:
            report = run_replay(
                clickhouse,
                store,
                allowed_lateness_s=settings.allowed_lateness_seconds,
                detectors=[*default_detectors(), IdleGapDetector(thresholds)],
                lifecycle=thresholds,
                progress=lambda r: status.update(f"replayed {r.events:,} events of {r.keys:,} keys"),
            )
    finally:
        store.close()
        clickhouse.close()
    console.print(
        f"replayed {report.events:,} events of {report.keys:,} keys: {report.minutes:,} minute rows, "
        f"{report.signals:,} signals, last used applied to {report.last_used_applied:,} keys"
    )
