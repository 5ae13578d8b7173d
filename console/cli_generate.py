"""`keytrail generate`: realistic synthetic usage events as JSON lines, for benchmarks and demos."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from keytrail.producers.generator import UsageGenerator, generation_summary, wire_json_lines

err = Console(stderr=True)
CHUNK = 20_000


def generate(
    keys: Annotated[int, typer.Option(min=1, max=1_000_000, help="how many keys send traffic")] = 100,
    events: Annotated[int, typer.Option(min=1, help="how many events to write")] = 100_000,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write JSON lines here [default: stdout]")] = None,
    seed: Annotated[int, typer.Option(help="same seed and --end, same events")] = 7,
    days: Annotated[float, typer.Option(min=0.05, max=3650, help="spread the events over this many days")] = 7.0,
    end: Annotated[
        datetime | None, typer.Option(help="UTC end of the span, rounded down to the hour [default: now]")
    ] = None,
    incidents: Annotated[
        bool, typer.Option("--incidents/--no-incidents", help="lay a leak, a denial storm and a revoked key on top")
    ] = True,
    summary: Annotated[Path | None, typer.Option(help="also write what was generated (keys, incidents) as JSON")] = None,
) -> None:
    """Write realistic KeyUsageEvent v1 JSON lines: daily and weekly rhythms, stable address pools, route mixes, error rates."""
    generator = UsageGenerator(
        key_count=keys, days=days, seed=seed, end=end.replace(tzinfo=UTC) if end and end.tzinfo is None else end,
        incidents=incidents,
    )
    started = time.perf_counter()
    sink = out.open("wb") if out else sys.stdout.buffer
    written = 0
    try:
        chunk: list[bytes] = []
        for line in wire_json_lines(generator.events(events)):
            chunk.append(line)
            if len(chunk) == CHUNK:
                sink.write(b"".join(chunk))
                written += len(chunk)
                chunk = []
        sink.write(b"".join(chunk))
        written += len(chunk)
    finally:
        if out:
            sink.close()
        else:
            sink.flush()
    elapsed = time.perf_counter() - started
    described = generation_summary(generator, written)
    if summary:
        summary.write_text(json.dumps(described, indent=2) + "\n")
    err.print(
        f"generated {written:,} events for {described['keys']} keys in {described['projects']} projects, "
        f"{described['from']} .. {described['to']}, in {elapsed:.1f} s ({written / max(elapsed, 1e-9):,.0f} events/s)"
        + (f" -> {out}" if out else "")
    )
    for incident in described["incidents"]:
        err.print(f"  incident: {incident['description']} ({incident['from']} .. {incident['to']})")
