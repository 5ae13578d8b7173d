"""The pure core: (per-key state, batch of events) -> (new state, outputs).

Nothing here imports Kafka, Faust, ClickHouse or a SQL driver. Faust tables (production)
and plain dicts (embedded default, tests) both serve as its state.
"""

from keytrail.stream_processors.core.aggregate import BatchResult, UsageAggregator
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate

__all__ = ["BatchResult", "KeyState", "MinuteAggregate", "UsageAggregator"]
