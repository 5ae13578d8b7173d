"""`keytrail demo`: a burst of synthetic traffic through the embedded pipeline, then a per-key table."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

from rich.console import Console
from rich.table import Table

from console.embedded import EmbeddedPipeline
from console.settings import Settings
from producers.synthetic import SyntheticKey, synthetic_events
from schemas.timestamps import utc_now

DEMO_PROJECTS = ("payments", "search")


def run_burst_demo(settings: Settings, *, keys: int = 5, events: int = 20_000, console: Console | None = None) -> list[dict]:
    """Create `keys` keys, ingest `events` synthetic events, print requests and last used per key."""
    console = console or Console()
    started = time.perf_counter()
    pipeline = EmbeddedPipeline(settings)
    try:
        demo_keys = []
        for index in range(keys):
            project = DEMO_PROJECTS[index % len(DEMO_PROJECTS)]
            record, _secret = pipeline.keystore.create_key(
                f"demo-service-{index + 1}", project, actor="keytrail-demo", owner="demo@example.com"
            )
            demo_keys.append(SyntheticKey(record.id, project, f"{project}-api", network=f"10.{index}.7"))
        now = utc_now()
        stream = synthetic_events(demo_keys, events, start=now - timedelta(hours=1), span=timedelta(hours=1))
        ingested = 0
        while batch := list(itertools.islice(stream, 5000)):
            ingested += len(pipeline.ingest(batch).accepted)
        elapsed = time.perf_counter() - started
        rows = pipeline.clickhouse.query(
            """
            SELECT key_id, sum(requests) AS requests
            FROM key_usage_minute FINAL
            WHERE key_id IN {keys:Array(String)}
            GROUP BY key_id
            """,
            {"keys": [k.key_id for k in demo_keys]},
        )
        requests = {row["key_id"]: int(row["requests"]) for row in rows}
        table = Table(title=f"KeyTrail demo: {ingested:,} events through the embedded pipeline in {elapsed:.1f} s")
        for column in ("key id", "project", "requests", "last used (key store)"):
            table.add_column(column, justify="right" if column == "requests" else "left")
        report = []
        for key in demo_keys:
            record = pipeline.keystore.get(key.key_id)
            last_used = record.last_used_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if record.last_used_at else "-"
            table.add_row(key.key_id, key.project_id, f"{requests.get(key.key_id, 0):,}", last_used)
            report.append({"key_id": key.key_id, "requests": requests.get(key.key_id, 0), "last_used_at": last_used})
        console.print(table)
        console.print(f"data: {settings.data_dir.resolve()}  (chDB + SQLite; no Kafka, no ClickHouse server)")
        return report
    finally:
        pipeline.close()
