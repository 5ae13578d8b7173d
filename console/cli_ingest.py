"""`keytrail produce FILE.jsonl` (to Kafka) and `keytrail ingest FILE.jsonl` (into the embedded default).

Both read JSON Lines of KeyUsageEvent v1 (blank lines are skipped), validate every line with the
same decoder the pipeline uses, send the valid ones, and write each rejected line with its line
number, error code and reason to a rejects file (JSON Lines; anything shaped like a secret is
redacted). They exit with status 1 when any line was rejected or not delivered, 2 when the
destination cannot be reached at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from keytrail.producers.encoding import UsageEncoder
from keytrail.schemas.batch_codec import DecodedBatch, decode_lines
from keytrail.schemas.codec import InvalidEvent, decode_usage_event
from keytrail.schemas.secrets import redact_text, scrub_event
from keytrail.schemas.topics import Topics
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.settings import get_settings

console = Console(stderr=True)
BATCH = 5000
MAX_REJECT_SAMPLE = 16_384
INGEST_KEY_ENV = "KEYTRAIL_INGEST_KEY"


@dataclass
class Tally:
    """What happened to the lines of one file."""

    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    rejected: int = 0
    undelivered: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, code: str, reason: str, raw: bytes) -> None:
        """An invalid line."""
        self.rejected += 1
        self.note(line, code, reason, raw)

    def note(self, line: int, code: str, reason: str, raw: bytes) -> None:
        """A line for the rejects file (invalid, or valid but not delivered)."""
        self.rejects.append(
            {
                "line": line,
                "code": code,
                "reason": reason,
                "raw": redact_text(raw[:MAX_REJECT_SAMPLE].decode("utf-8", "replace")),
            }
        )


def _read_events(path: Path, tally: Tally) -> Iterator[list[tuple[int, bytes, KeyUsageEvent]]]:
    """Batches of (line number, raw line, event) of valid lines; invalid ones go to `tally`."""
    batch: list[tuple[int, bytes, KeyUsageEvent]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            tally.lines += 1
            try:
                batch.append((number, line, decode_usage_event(line)))
            except InvalidEvent as error:
                tally.reject(number, error.code, error.reason, line)
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


DIRECT_BATCH = 50_000
"""Lines per batch of the direct (in-process) ingest: one columnar batch through the core."""


def _read_decoded(path: Path, tally: Tally) -> Iterator[DecodedBatch]:
    """Batches of valid events decoded in bulk (positions hold line numbers); invalid lines go to `tally`."""
    lines: list[bytes] = []
    numbers: list[int] = []

    def decoded() -> DecodedBatch:
        batch = decode_lines(lines, numbers)
        for refused in batch.rejected:
            tally.reject(refused.offset, refused.code, refused.reason, refused.payload)
        return batch

    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            tally.lines += 1
            lines.append(line)
            numbers.append(number)
            if len(lines) >= DIRECT_BATCH:
                yield decoded()
                lines, numbers = [], []
    if lines:
        yield decoded()


def _read_decoded_paused(path: Path, tally: Tally) -> Iterator[DecodedBatch]:
    """`_read_decoded` with the cyclic collector paused while each batch is read and decoded."""
    from keytrail.stream_processors.core.gc_pause import collector_paused

    batches = _read_decoded(path, tally)
    while True:
        with collector_paused():
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def _write_rejects(tally: Tally, path: Path) -> None:
    if not tally.rejects:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for reject in sorted(tally.rejects, key=lambda r: r["line"]):
            handle.write(orjson.dumps(reject) + b"\n")


def _report(tally: Tally, rejects_path: Path, destination: str, seconds: float) -> None:
    table = Table(title=f"{tally.lines} line(s) -> {destination} in {seconds:.1f} s", title_justify="left")
    for name in ("accepted", "duplicates", "late", "rejected", "undelivered"):
        table.add_column(name, justify="right")
    table.add_row(
        *(str(getattr(tally, name)) for name in ("accepted", "duplicates", "late", "rejected", "undelivered"))
    )
    console.print(table)
    if tally.rejects:
        console.print(f"rejected lines with reasons: {rejects_path}")
        first = min(tally.rejects, key=lambda r: r["line"])
        console.print(f"  first: line {first['line']}: {first['code']}: {first['reason']}")


def _finish(tally: Tally, rejects_path: Path, destination: str, started: float) -> None:
    _write_rejects(tally, rejects_path)
    _report(tally, rejects_path, destination, time.perf_counter() - started)
    if tally.rejected or tally.undelivered:
        raise typer.Exit(1)


def _rejects_path(file: Path, rejects: Path | None) -> Path:
    return rejects or file.with_suffix(".rejects.jsonl")


FileArgument = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="JSON Lines of KeyUsageEvent v1")
]
RejectsOption = Annotated[
    Path | None, typer.Option("--rejects", help="where rejected lines go (default: FILE.rejects.jsonl)")
]


def produce(
    file: FileArgument,
    rejects: RejectsOption = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: KEYTRAIL_KAFKA_BOOTSTRAP)")
    ] = None,
    topic: Annotated[str, typer.Option(help="the usage topic")] = Topics.USAGE.value,
    timeout: Annotated[
        float, typer.Option(min=1, help="seconds to wait for the broker to acknowledge")
    ] = 60.0,
) -> None:
    """Send a file of usage events to Kafka (backfills, replays of gateway logs), keyed by key_id."""
    from confluent_kafka import KafkaException, Producer

    from keytrail.producers.kafka_emitter import producer_config

    servers = bootstrap or get_settings().kafka_bootstrap
    producer = Producer(
        producer_config(
            servers, linger_ms=20, message_timeout_ms=int(timeout * 1000), overrides={"log_level": 0}
        )
    )
    try:
        producer.list_topics(timeout=10)
    except KafkaException as error:
        console.print(f"[red]error:[/red] cannot reach Kafka at {servers}: {error.args[0].str()}")
        raise typer.Exit(2) from None
    tally = Tally()
    waiting: dict[int, bytes] = {}

    def delivered(line: int, error: Any, _message: Any) -> None:
        raw = waiting.pop(line, b"")
        if error is None:
            tally.accepted += 1
        else:
            tally.undelivered += 1
            tally.note(line, "delivery_failed", error.str(), raw)

    encoder = UsageEncoder()
    started = time.perf_counter()
    for batch in _read_events(file, tally):
        for number, raw, event in batch:
            key, value = encoder.encode_event(event)
            waiting[number] = raw
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=lambda e, m, n=number: delivered(n, e, m))
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
    producer.flush(timeout)
    for number, raw in sorted(waiting.items()):
        tally.undelivered += 1
        tally.note(number, "not_delivered", f"no acknowledgement from the broker within {timeout:.0f} s", raw)
    _finish(tally, _rejects_path(file, rejects), f"Kafka {servers} topic {topic}", started)


def _console_answers(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(api_url.rstrip("/") + "/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _ingest_key(explicit: str | None, data_dir: Path) -> str | None:
    if explicit:
        return explicit
    admin_key = data_dir / "admin.key"
    try:
        return admin_key.read_text().strip() or None
    except OSError:
        return None


def ingest(
    file: FileArgument,
    rejects: RejectsOption = None,
    api_url: Annotated[
        str | None, typer.Option(help="the running console (default: KEYTRAIL_API_URL)")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=INGEST_KEY_ENV,
            help="key with the ingest scope (default: DATA_DIR/admin.key)",
            show_default=False,
        ),
    ] = None,
    direct: Annotated[
        bool, typer.Option("--direct", help="skip the console; run the embedded pipeline here")
    ] = False,
) -> None:
    """Load a file of usage events into the embedded default: through the running console's
    POST /v1/events, or directly (in this process) when no console answers."""
    settings = get_settings()
    url = api_url or settings.api_url
    started = time.perf_counter()
    tally = Tally()
    if not direct and _console_answers(url):
        _ingest_over_http(file, tally, url, _ingest_key(api_key, settings.data_dir))
        _finish(tally, _rejects_path(file, rejects), f"console {url}", started)
        return
    from keytrail.console.embedded import EmbeddedPipeline, StoreInUse

    try:
        pipeline = EmbeddedPipeline(settings)
    except StoreInUse as in_use:
        console.print(f"[red]error:[/red] {in_use}", soft_wrap=True)
        raise typer.Exit(2) from None
    except Exception as error:  # noqa: BLE001 - one clear line instead of a traceback
        console.print(
            f"[red]error:[/red] no console answers at {url} and the embedded store at {settings.data_dir} "
            f"cannot be opened here ({type(error).__name__}: {error})"
        )
        raise typer.Exit(2) from None
    try:
        for batch in _read_decoded_paused(file, tally):
            result = pipeline.ingest(batch.events)
            tally.accepted += len(result.accepted)
            tally.late += len(result.late)
            tally.duplicates += result.duplicates
    finally:
        pipeline.close()
    _finish(tally, _rejects_path(file, rejects), f"embedded store {settings.data_dir}", started)


def _ingest_over_http(file: Path, tally: Tally, url: str, key: str | None) -> None:
    import httpx

    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    encoder = UsageEncoder()
    with httpx.Client(headers=headers, timeout=60.0) as client:
        for batch in _read_events(file, tally):
            body = b'{"events":[' + b",".join(encoder.encode_event(scrub_event(event)[0])[1] for _, _, event in batch) + b"]}"
            response = _post_with_retries(client, url.rstrip("/") + "/v1/events", body)
            listed = response is not None and response.status_code in (207, 422) and b'"rejected"' in response.content
            if response is None or (response.status_code != 200 and not listed):
                reason = "the console did not answer" if response is None else _error_of(response)
                for number, raw, _ in batch:
                    tally.note(number, "not_ingested", reason, raw)
                tally.undelivered += len(batch)
                if response is not None and response.status_code in (401, 403):
                    console.print(f"[red]error:[/red] the console refused the ingest key: {reason}")
                    return
                continue
            result = orjson.loads(response.content)
            tally.accepted += int(result.get("accepted", 0))
            tally.duplicates += int(result.get("duplicates", 0))
            tally.late += int(result.get("late", 0))
            for rejection in result.get("rejected", []):
                number, raw, _ = batch[rejection["index"]]
                tally.reject(number, rejection.get("code", "rejected"), rejection.get("reason", ""), raw)


def _post_with_retries(client: Any, url: str, body: bytes, attempts: int = 4) -> Any:
    import httpx

    delay = 0.5
    response = None
    for attempt in range(attempts):
        try:
            response = client.post(url, content=body)
            if response.status_code < 500:
                return response
        except httpx.HTTPError:
            response = None
        if attempt < attempts - 1:
            time.sleep(delay)
            delay *= 2
    return response


def _error_of(response: Any) -> str:
    try:
        error = orjson.loads(response.content)["error"]
        return f"HTTP {response.status_code} {error.get('code')}: {error.get('message')}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
