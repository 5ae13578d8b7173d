"""The embedded default: the same core, in-process, with chDB and the SQLite key store."""

from __future__ import annotations

from collections.abc import Iterable

from console.settings import Settings
from keystore.store import KeyStore
from schemas.usage import KeyUsageEvent
from sql.backends import ClickHouseBackend, open_clickhouse
from sql.migrate import migrate
from stream_processors.core.aggregate import BatchResult, UsageAggregator
from stream_processors.detectors import default_detectors
from stream_processors.projector import LastUsedProjector
from stream_processors.sinks.clickhouse import ClickHouseSink
from stream_processors.state_stores import InMemoryStates


class EmbeddedPipeline:
    """Events in -> core -> chDB sink -> projector -> key store, all in this process.

    chDB allows one process per data directory: in embedded mode this object (inside
    `keytrail serve` or `keytrail demo`) is the one owner.
    """

    def __init__(self, settings: Settings, *, clickhouse: ClickHouseBackend | None = None,
                 keystore: KeyStore | None = None) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.clickhouse = clickhouse or open_clickhouse(settings.clickhouse_url)
        migrate(self.clickhouse)
        self.keystore = keystore or KeyStore.open(
            settings.keystore_url, settings.hashing_secret(), env=settings.key_env
        )
        self.states = InMemoryStates()
        self.aggregator = UsageAggregator(settings.allowed_lateness_seconds, default_detectors())
        self.sink = ClickHouseSink(self.clickhouse)
        self.projector = LastUsedProjector(self.keystore)

    def ingest(self, events: Iterable[KeyUsageEvent]) -> BatchResult:
        """Process one batch end to end; returns what the core produced."""
        result = self.aggregator.process(events, self.states)
        self.sink.write_batch(result)
        self.projector.apply(result.last_used)
        return result

    def close(self) -> None:
        self.sink.close()
        self.keystore.close()
