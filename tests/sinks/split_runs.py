"""One stream of usage events sent as different Kafka records, folded by the worker's batch body on chDB.

Shared by the equivalence tests: a generator of streams (late and very late events, hot keys,
several networks and routes, denial bursts, a leaked secret now and then), the ways a producer
may split it into records (single events, envelopes of any size, re-sent records), the
worker's per-batch steps without Kafka, and a reader of every table the pipeline writes.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from keytrail.schemas.batch_codec import Rejected, decode_batch
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.envelope import encode_envelope
from keytrail.schemas.partitioning import partition_for
from keytrail.schemas.secrets import scrub_events
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.sql.backends import ClickHouseBackend
from keytrail.stream_processors.core.aggregate import BatchResult, UsageAggregator
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from keytrail.stream_processors.state_stores import DecodedStates, SerializedStateOverlay
from tests.factories import usage_event

PARTITIONS = 3
LATENESS_S = 300
OUTCOMES = list(Outcome)
ROUTES = ["/v1/orders/{order_id}", "/v1/orders", "/v1/users/{user_id}", "/admin/export"]
COMPARED_TABLES = ("usage_events", "key_usage_minute", "key_last_used", "signals", "alerts", "alert_deliveries",
                   "key_lifecycle_events")
"""Every table the stream or the embedded ingest writes. Not compared: `schema_migrations`, and the
hour/day rollups, which a refreshable view fills from `key_usage_minute` on a timer."""
WRITTEN_BY_CLICKHOUSE = {"inserted_at"}
"""Columns ClickHouse fills with its own clock on insert."""


def stream(seed: int, size: int, keys: int, prefix: str = "key") -> list[KeyUsageEvent]:
    """`size` distinct events over `keys` keys, in the order a service emits them."""
    rng = random.Random(seed)
    events: list[KeyUsageEvent] = []
    clock = 0.0
    leak = "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    while len(events) < size:
        clock += rng.expovariate(1 / 15)
        roll = rng.random()
        key = f"{prefix}_{min(rng.randrange(keys), rng.randrange(keys))}"  # some keys hotter than others
        if roll < 0.04:  # a burst of denials from one address
            events += [usage_event(key, seconds=clock + i / 10, event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                                   outcome=Outcome.DENIED, status=403, client_ip="203.0.113.9")
                       for i in range(rng.randrange(5, 30))]
            continue
        moment = clock - (rng.uniform(0, 200) if roll < 0.15 else rng.uniform(400, 2000) if roll < 0.2 else 0)
        events.append(usage_event(
            key, seconds=max(moment, 0), event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            outcome=rng.choice(OUTCOMES), status=rng.choice([200, 200, 200, 404, 500]),
            client_ip=rng.choice(["10.0.0.1", "10.0.0.2", "10.0.1.7", f"192.0.2.{rng.randrange(1, 40)}",
                                  "2001:db8::5"]),
            route=rng.choice(ROUTES), request_bytes=rng.randrange(0, 5000),
            user_agent=f"curl/8 {leak}" if rng.random() < 0.01 else "test-client/1.0",
        ))
    return events[:size]


@dataclass
class Record:
    """One Kafka record of `keytrail.usage.v1` as a producer sent it."""

    partition: int
    value: bytes
    events: int


def partition_of(event: KeyUsageEvent, partitions: int = PARTITIONS) -> int:
    return partition_for(event.key_id, partitions)


def per_partition(events: Sequence[KeyUsageEvent], partitions: int = PARTITIONS) -> dict[int, list[KeyUsageEvent]]:
    """Each partition's events in emit order (what the SDK's partitioner makes of a stream)."""
    out: dict[int, list[KeyUsageEvent]] = {}
    for event in events:
        out.setdefault(partition_of(event, partitions), []).append(event)
    return out


def singles(events: Sequence[KeyUsageEvent], partitions: int = PARTITIONS) -> list[Record]:
    """Every event once, as a single-event record."""
    return [Record(partition_of(e, partitions), encode_usage_event(e), 1) for e in events]


def envelope_record(partition: int, events: Sequence[KeyUsageEvent]) -> Record:
    return Record(partition, encode_envelope([encode_usage_event(e) for e in events]), len(events))


def random_records(events: Sequence[KeyUsageEvent], rng: random.Random, max_envelope: int,
                   resend: float, partitions: int = PARTITIONS) -> list[Record]:
    """The stream split into records as producers may send it: per partition, runs of events as
    envelopes of random sizes (1 to `max_envelope`) mixed with single records; with probability
    `resend` per record, an at-least-once re-send later in the partition (the whole envelope again,
    or one of its events alone, or a single event inside a later envelope). Partitions interleave
    at random; each keeps its order, as Kafka does."""
    lanes: list[list[Record]] = []
    for partition, mine in per_partition(events, partitions).items():
        lane: list[Record] = []
        resent: list[KeyUsageEvent] = []  # events to ride along in a later envelope
        i = 0
        while i < len(mine):
            if rng.random() < 0.3:
                run = [mine[i]]
                lane.append(Record(partition, encode_usage_event(mine[i]), 1))
            else:
                run = mine[i : i + rng.randint(1, max_envelope)]
                ride, resent = resent, []
                lane.append(envelope_record(partition, ride + run) if ride else envelope_record(partition, run))
            i += len(run)
            if rng.random() < resend:
                how = rng.randrange(3)
                if how == 0:
                    lane.append(lane[-1])  # the same record again
                elif how == 1:
                    lane.append(Record(partition, encode_usage_event(rng.choice(run)), 1))
                else:
                    resent.append(rng.choice(run))
        if resent:
            lane.append(envelope_record(partition, resent))
        lanes.append(lane)
    out: list[Record] = []
    while lanes:
        lane = rng.choice(lanes)
        out.append(lane.pop(0))
        if not lane:
            lanes.remove(lane)
    return out


def with_offsets(records: Sequence[Record]) -> list[tuple[bytes, int, int]]:
    """(payload, partition, offset) as the consumer delivers them."""
    next_offset = [0] * PARTITIONS
    out = []
    for record in records:
        out.append((record.value, record.partition, next_offset[record.partition]))
        next_offset[record.partition] += 1
    return out


def cut(items: Sequence[Any], rng: random.Random, max_batch: int) -> list[list[Any]]:
    """Consecutive batches of 1 to `max_batch` items (a record is never split)."""
    out, start = [], 0
    while start < len(items):
        size = rng.randint(1, max_batch)
        out.append(list(items[start : start + size]))
        start += size
    return out


@dataclass
class WorkerBatches:
    """The worker's batch body (`faust_app.aggregate_usage`) without Kafka and Faust: decode the
    records, scrub secrets, fold into key states kept as bytes (the Faust table), drop late events the
    audit trail already holds, write the sink, then the states. Keeps what it would publish."""

    backend: ClickHouseBackend
    table: dict[bytes, bytes] = field(default_factory=dict)
    decoded: DecodedStates = field(default_factory=dict)
    last_used: dict[str, dict] = field(default_factory=dict)
    """`keytrail.last-used.v1` is compacted by key: the newest record per key is what stays."""
    signals: dict[str, dict] = field(default_factory=dict)
    dead: list[Rejected] = field(default_factory=list)
    accepted = 0
    late = 0
    duplicates = 0

    def __post_init__(self) -> None:
        self.core = UsageAggregator(LATENESS_S, default_detectors())
        self.sink = ClickHouseSink(self.backend)

    def run(self, items: Sequence[tuple[bytes, int, int]]) -> BatchResult:
        decoded = decode_batch(items)
        self.dead += decoded.rejected
        scrubbed = scrub_events(decoded.events)
        overlay = SerializedStateOverlay(self.table, self.decoded, 0)
        result = self.core.process(scrubbed.events, overlay, decoded.positions)
        result.signals.extend(scrubbed.signals)
        if result.late:
            self.sink.drop_stored_late(result)
        self.sink.write_batch(result)
        overlay.commit()
        self.count(result)
        return result

    def count(self, result: BatchResult) -> None:
        for record in result.last_used:
            self.last_used[record.key_id] = orjson.loads(record.model_dump_json())
        for signal in result.signals:
            self.signals[signal.signal_id] = orjson.loads(signal.model_dump_json())
        self.accepted += len(result.accepted)
        self.late += len(result.late)
        self.duplicates += result.duplicates


def table_rows(backend: ClickHouseBackend, table: str, key_prefix: str = "",
               columns: Sequence[str] | None = None) -> list[tuple]:
    """Every row of `table` as ClickHouse answers with FINAL, sorted, without clock-filled columns
    (with `key_prefix`, only the rows of keys whose id starts with it; with `columns`, only those)."""
    names = [r["name"] for r in backend.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} ORDER BY position",
        {"t": table}) if r["name"] not in WRITTEN_BY_CLICKHOUSE and (columns is None or r["name"] in columns)]
    listed = ", ".join(f"`{n}`" for n in names)
    where = " WHERE startsWith(key_id, {p:String})" if key_prefix else ""
    rows = backend.query(f"SELECT {listed} FROM `{table}` FINAL{where}",  # noqa: S608 - names from system.columns
                         {"p": key_prefix} if key_prefix else None)
    return sorted(tuple(orjson.dumps(row[n]).decode() for n in names) for row in rows)


def every_table(backend: ClickHouseBackend, tables: Sequence[str] = COMPARED_TABLES,
                key_prefix: str = "", columns: dict[str, Sequence[str]] | None = None) -> dict[str, list[tuple]]:
    """`table_rows` of each table (`columns` narrows some tables to the columns named for them)."""
    return {table: table_rows(backend, table, key_prefix, (columns or {}).get(table)) for table in tables}


def empty_tables(backend: ClickHouseBackend) -> None:
    """Truncate every table (rollups included) between runs on one chDB."""
    for row in backend.query("SELECT name FROM system.tables WHERE database = currentDatabase() "
                             "AND engine LIKE '%MergeTree' AND name != 'schema_migrations'"):
        backend.command(f"TRUNCATE TABLE `{row['name']}`")
